"""Pieces shared by the tests that run the real ``kubernetes`` client against a local server
speaking the Kubernetes API's JSON (no real API server can run here)."""

from __future__ import annotations

import pytest
from kubernetes.config import incluster_config


def status(code: int, reason: str, message: str, **extra) -> dict:
    """A ``Status`` object, as the API answers an error."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": extra.pop("metadata", {}), "status": "Failure",
            "message": message, "reason": reason, "details": extra, "code": code}


@pytest.fixture(autouse=True)
def no_ambient_cluster(tmp_path, monkeypatch):
    """No kubeconfig, service account or proxy of the machine running the tests leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "no-such-token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "no-such-ca.crt"))

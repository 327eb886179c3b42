"""Who may use the learning service: bearer tokens, with the role ``write`` (sniffers posting
segments) or ``read`` (everything else but the health checks).

- ``TokenFile`` (``--tokens-file``, outside a cluster and in tests): one ``TOKEN ROLE`` per line.
- ``KubernetesAuth`` (inside a cluster): the token is checked with a TokenReview; writing is for
  the identities named ``--writer`` (by default the sniffer's ServiceAccount), reading for those
  that RBAC allows ``get`` on ``services/proxy`` of the service (a SubjectAccessReview): the same
  permission that reaching it through the API server's service proxy takes. Answers are kept for
  ``CACHE_SECONDS``, so that a thousand sniffers posting every 30 s cost a TokenReview each a minute.

A write token cannot read and a read token cannot write: the sniffers' token does not give
the cluster's traffic away. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from netpol_learn._errors import ServeError

ROLES = ("write", "read")
#: Seconds a TokenReview or SubjectAccessReview answer is reused for the same token.
CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class Decision:
    """``status`` 200 (allowed), 401 (no or unknown token), 403 (not this role) or 503 (cannot
    check now); ``who`` names the identity, ``error`` says why not."""

    status: int
    who: str = ""
    error: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


NO_TOKEN = Decision(401, error="a bearer token is required (Authorization: Bearer TOKEN)")
UNKNOWN = Decision(401, error="the bearer token is not valid")


def _forbidden(who: str, role: str) -> Decision:
    doing = "write segments" if role == "write" else "read from this service"
    return Decision(403, who, f"{who} may not {doing}")


class Authenticator:
    """Decides whether a token may act in a role."""

    description = ""

    def decide(self, token: str | None, role: str) -> Decision:
        raise NotImplementedError


class TokenFile(Authenticator):
    """Tokens and their roles from a file: ``TOKEN ROLE`` per line (``write`` or ``read``);
    blank lines and lines starting with ``#`` are skipped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ServeError(f"tokens file {path}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError:
            raise ServeError(f"tokens file {path}: not a text file") from None
        self.tokens: list[tuple[bytes, str]] = []
        for n, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) != 2 or words[1] not in ROLES:
                raise ServeError(f"tokens file {path}:{n}: expected 'TOKEN ROLE' with ROLE write or read")
            if len(words[0]) < 16:
                raise ServeError(f"tokens file {path}:{n}: a token must have at least 16 characters")
            self.tokens.append((words[0].encode(), words[1]))
        if not self.tokens:
            raise ServeError(f"tokens file {path}: no tokens in it")
        self.description = f"tokens from {path} ({len(self.tokens)})"

    def decide(self, token, role):
        if not token:
            return NO_TOKEN
        given = token.encode()
        found = None
        for n, (known, known_role) in enumerate(self.tokens):
            if hmac.compare_digest(known, given):  # every token compared: the time says nothing
                found = (n, known_role)
        if found is None:
            return UNKNOWN
        who = f"token {found[0] + 1} of {self.path.name} ({found[1]})"
        return Decision(200, who) if found[1] == role else _forbidden(who, role)


class KubernetesAuth(Authenticator):
    """Tokens checked by the API server: TokenReview for who it is, then ``writers`` for writing
    and a SubjectAccessReview (``get`` ``services/proxy`` ``service`` in ``namespace``) for
    reading. ``api_client`` is a ``kubernetes`` ApiClient of the service's own identity."""

    def __init__(self, api_client, namespace: str, service: str, writers: tuple[str, ...]):
        self.api = api_client
        self.namespace, self.service, self.writers = namespace, service, frozenset(writers)
        self.cache: dict[tuple[bytes, str], tuple[float, Decision]] = {}
        self.lock = threading.Lock()
        self.description = (f"TokenReview; writers: {', '.join(sorted(writers))}; readers: who may get "
                            f"services/proxy {service} in {namespace}")

    def _post(self, path: str, body: dict) -> dict:
        from kubernetes.client import ApiException

        from netpol_learn._kube import transport_errors, transport_reason

        try:
            response = self.api.call_api(path, "POST", body=body, auth_settings=["BearerToken"], _preload_content=False,
                                         header_params={"Content-Type": "application/json", "Accept": "application/json"},
                                         _request_timeout=(5, 10))
        except ApiException as exc:
            raise _Unavailable(f"HTTP {exc.status} from the API server" if exc.status else f"API server: {exc.reason}") from exc
        except transport_errors() as exc:
            raise _Unavailable(f"cannot reach the API server: {transport_reason(exc)}") from exc
        data = response[0].data if isinstance(response, tuple) else response.data
        try:
            return json.loads(data)
        except ValueError as exc:
            raise _Unavailable("the API server's answer is not JSON") from exc

    def _review(self, token: str) -> dict | None:
        answer = self._post("/apis/authentication.k8s.io/v1/tokenreviews", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
        status = answer.get("status") or {}
        return status.get("user") if status.get("authenticated") else None

    def _may_read(self, user: dict) -> bool:
        answer = self._post("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user.get("username"), "groups": user.get("groups") or [], "uid": user.get("uid"),
                     "extra": user.get("extra") or {},
                     "resourceAttributes": {"namespace": self.namespace, "verb": "get", "resource": "services",
                                            "subresource": "proxy", "name": self.service}}})
        return bool((answer.get("status") or {}).get("allowed"))

    def decide(self, token, role):
        if not token:
            return NO_TOKEN
        key = (hashlib.sha256(token.encode()).digest(), role)
        now = time.monotonic()
        with self.lock:
            cached = self.cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        try:
            user = self._review(token)
            if user is None:
                decision = UNKNOWN
            else:
                who = str(user.get("username") or "?")
                if role == "write":
                    decision = Decision(200, who) if who in self.writers else _forbidden(who, role)
                else:
                    decision = Decision(200, who) if self._may_read(user) else _forbidden(who, role)
        except _Unavailable as exc:
            return Decision(503, error=f"cannot check the token now: {exc}")
        with self.lock:
            if len(self.cache) > 10_000:
                self.cache = {k: v for k, v in self.cache.items() if v[0] > now}
            self.cache[key] = (now + CACHE_SECONDS, decision)
        return decision


class _Unavailable(Exception):
    """The API server could not answer a review."""


def bearer_token(headers) -> str | None:
    """The token of ``Authorization: Bearer ...``, or of ``Netpol-Learn-Token`` (through the API
    server's service proxy, which consumes Authorization)."""
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    token = (headers.get("netpol-learn-token") or "").strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    return token or None

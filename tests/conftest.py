"""Shared test settings.

In CI (``CI`` set) a skipped test fails the run: every test here can run on the CI machine, so a
skip means something is missing, not something optional.

``capture_engine``: a test module that uses it (``pytestmark = pytest.mark.usefixtures(
"capture_engine")``) runs each test with the capture stage's C accelerator and with the
Python/numpy reference code. Without the accelerator (not built, or NETPOL_LEARN_PURE_PYTHON set)
only the reference runs.
"""

import os

import pytest

from netpol_learn._capture import _accel
# The review page's browser: one Chromium for the whole session, shared by every module that
# opens a page (a fixture imported into each module would start one per module).
from reportkit import report_browser, report_page  # noqa: F401

CAPTURE_ENGINES = ["c", "python"] if _accel.ENGINE == "c" else ["python"]


@pytest.fixture(params=CAPTURE_ENGINES)
def capture_engine(request, monkeypatch):
    monkeypatch.setattr(_accel, "ENGINE", request.param)
    return request.param


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter and reporter.stats.get("skipped"):
        reporter.write_line(f"CI: {len(reporter.stats['skipped'])} test(s) skipped; failing the run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

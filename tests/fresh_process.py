"""Run ``python -m netpol_learn`` as its own process with a chosen hash seed: determinism checks.

The iteration order of a set or dict of strings depends on the process's hash seed
(PYTHONHASHSEED), fixed for the life of the process. A command run twice in one process (e.g.
through CliRunner) gives the same bytes even when its output follows such an order; run it in
processes with different seeds (`SEEDS`) to see that it does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SEEDS = ("1", "2")


def netpol_learn(args, seed: str, *, engine: str | None = None, cwd: Path | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The command's result; engine ("c" or "python", as the capture_engine fixture) picks the
    capture stage's code in the child through NETPOL_LEARN_PURE_PYTHON."""
    env = {**os.environ, "PYTHONHASHSEED": seed}
    if engine is not None:
        env["NETPOL_LEARN_PURE_PYTHON"] = "1" if engine == "python" else "0"
    return subprocess.run([sys.executable, "-m", "netpol_learn", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd, stdin=subprocess.DEVNULL)

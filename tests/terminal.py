"""Run a command with stderr on a pseudo-terminal, as a person at a terminal would see it."""

from __future__ import annotations

import os
import pty
import subprocess


def run_on_terminal(args: list[str], timeout: float = 120) -> tuple[int, bytes]:
    """(exit code, what the command wrote to the terminal on stderr); stdout is discarded."""
    master, slave = pty.openpty()
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=slave, timeout=timeout)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the other end is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.returncode, shown

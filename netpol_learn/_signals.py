"""SIGTERM and SIGINT while a command runs: ``on_stop`` installs one handler for both and puts
back what was there when the block ends (the sniffer, the learning service, ``capture -``)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def on_stop(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT call ``handler(signum, frame)``."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

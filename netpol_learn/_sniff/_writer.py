"""The sniffer's output: whole segments appended to a file, or written to stdout, a FIFO or a device."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable

from netpol_learn._errors import OutputError, SniffError
from netpol_learn._flowlog import last_complete_segment_end, looks_like_flow_log
from netpol_learn._output import open_append

Warn = Callable[[str], None]


class SegmentWriter:
    """Writes whole segments: to stdout, or appended to ``path`` (``O_APPEND``).

    ``path`` may be a regular file (created if missing, each segment one write call and fsync'd),
    a symlink (to where it points), a FIFO (opened once something reads it, waiting until then)
    or a character device. Only a regular file is looked into: one that is not a flow log is
    refused, and one whose last segment was cut off (the machine lost power mid-write) is cut
    back to its last complete segment first, with a warning. A FIFO or a device is only written.

    ``cancelled`` (a callable) ends the wait for a FIFO's reader with an error when it says so;
    ``info`` is told once that the wait began."""

    def __init__(self, path: str | None, warn: Warn, *, info: Warn | None = None,
                 cancelled: Callable[[], bool] | None = None):
        self.path = None if path in (None, "-") else path
        self.regular = False
        if self.path is None:
            self.fd = sys.stdout.fileno()
            return
        self.fd = self._open(info, cancelled)
        try:
            st = os.fstat(self.fd)
            self.regular = stat.S_ISREG(st.st_mode)
            if self.regular:
                self._repair(warn, st)
        except BaseException:
            os.close(self.fd)
            raise

    def _open(self, info: Warn | None, cancelled: Callable[[], bool] | None) -> int:
        try:
            return open_append(self.path, cancelled=cancelled, info=info)
        except OutputError as exc:
            raise SniffError(str(exc)) from exc

    def _repair(self, warn: Warn, st: os.stat_result) -> None:
        size = st.st_size
        if not size:
            return
        with open(self.path, "rb") as fh:
            opened = os.fstat(fh.fileno())
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise SniffError(f"{self.path} was replaced while it was being opened; not appending to it")
            if not looks_like_flow_log(fh.readline(4096)):
                raise SniffError(f"{self.path} exists and is not a flow log; not appending to it")
            keep = last_complete_segment_end(fh, size)
        if keep < size:
            os.ftruncate(self.fd, keep)
            warn(f"{self.path}: removed {size - keep} bytes of a segment left incomplete by an earlier run")

    def write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8"))
        try:
            # One write call for a file (O_APPEND: the segment lands whole, after the last one);
            # a pipe can take less, so the rest follows until all is written.
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
            if self.regular:  # a FIFO or a device cannot be synced (EINVAL)
                os.fsync(self.fd)
        except BrokenPipeError as exc:
            if self.path is None:
                raise SniffError("stdout was closed: nobody reads the flow log") from exc
            raise SniffError(f"cannot write {self.path}: its reader went away (broken pipe)") from exc
        except OSError as exc:
            raise SniffError(f"cannot write {self.path or 'stdout'}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self.path is not None:
            os.close(self.fd)

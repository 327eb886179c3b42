"""The one writer: every file and directory a command writes goes through here.

Rules (what a user of ``-o`` may rely on):

- ``-`` is standard output.
- A regular file (new, or replaced) is written to a temporary file beside it, flushed to disk and
  renamed into place, so a reader sees the old file or the new one, never half of either. A new
  file gets the permissions the umask allows (0644 under umask 022); a replaced one keeps its
  mode (and, as root, its owner).
- A symlink is followed: its resolved target is replaced as above; the link stays a link.
- Anything that is not a regular file (a character device such as /dev/null, a FIFO, a socket,
  a process-substitution path /dev/fd/N) and anything under /dev or /proc is written directly,
  never replaced.
- Appending (``open_append``, the sniffer's segments) follows the same rules: a symlink is
  followed, a FIFO or device is opened as it is, a new file follows the umask.
- A directory to keep files in (``make_directory``, the sniffer's spool) is created with its
  parents when missing; each file in it is written as a regular file above.
- A directory of files (``write_directory``) is whole or unchanged: every new file is written in
  full beside its target first; only when all of them are on disk are they renamed into place,
  the index last. A new directory is built beside its target and renamed into place. On failure
  nothing this run wrote is left behind.

Errors are ``OutputError``: one line naming the path.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from netpol_learn._errors import OutputError

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it: there is no other portable way)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _direct(path: Path) -> bool:
    """True when ``path`` must be written in place rather than replaced."""
    text = os.path.abspath(path)
    if text == "/dev" or text.startswith(("/dev/", "/proc/")):
        return True
    try:
        st = os.stat(path)  # follows symlinks: what a write would reach
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {path}: is a directory")
    return not stat.S_ISREG(st.st_mode)


def write_text(path: str | os.PathLike, text: str | Iterable[str]) -> None:
    """Write ``text`` (a string, or strings to join) to ``path`` by the rules above; '-' is stdout."""
    if str(path) == "-":
        chunks = [text] if isinstance(text, str) else text
        sys.stdout.writelines(chunks)
        sys.stdout.flush()
        return
    write_data(path, text.encode("utf-8") if isinstance(text, str) else (t.encode("utf-8") for t in text))


class WrittenBy:
    """A file's contents that ``fill(name)`` writes at ``name`` (a new empty regular file), for
    ``write_data``: for a program that writes files by their path, as DuckDB's ``COPY`` does. A
    regular target's temporary file is the one filled (a merged flow log of a cluster is
    gigabytes: written once, not spooled and copied); standard output, a device or a FIFO gets
    a copy of a temporary file filled in full first (by the kernel, ``os.sendfile``)."""

    def __init__(self, fill: Callable[[str], None]):
        self.fill = fill


def write_data(path: str | os.PathLike, data: bytes | Iterable[bytes] | WrittenBy) -> None:
    """Write ``data`` (an image, say; or chunks of bytes; or ``WrittenBy``) to ``path`` by the
    rules above; '-' is stdout. Chunks go to a regular file's temporary file as they come (a
    merged flow log of a cluster is gigabytes: never all in memory); a device or FIFO gets them
    joined, once all are there, as before."""
    if isinstance(data, WrittenBy) and (str(path) == "-" or _direct(Path(path))):
        with tempfile.TemporaryDirectory(prefix="netpol-learn-") as directory:
            name = os.path.join(directory, "filled")
            open(name, "xb").close()
            try:
                data.fill(name)
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
            if str(path) == "-":
                _copy_to_stdout(name)
            else:
                _write_in_place(Path(path), Path(name))
        return
    if str(path) == "-":
        sys.stdout.flush()
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = (data,)
        for chunk in data:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    path = Path(path)
    if _direct(path):
        _write_in_place(path, data if isinstance(data, (bytes, bytearray, memoryview)) else b"".join(data))
        return
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    tmp = _stage(target, data)
    try:
        os.replace(tmp, target)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc


def spool(stream, path: str | os.PathLike, chunk: int = 1 << 20) -> None:
    """Copy a binary ``stream`` (standard input) to ``path``, a new file (``O_EXCL``: never one
    that is there), in chunks: a capture on standard input read as a file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    try:
        while data := stream.read(chunk):
            write_all(fd, data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    finally:
        os.close(fd)


def open_append(path: str | os.PathLike, *, cancelled: Callable[[], bool] | None = None,
                info: Callable[[str], None] | None = None) -> int:
    """A descriptor that appends to ``path``: a new file follows the umask, a symlink is followed,
    a device is opened as it is, and a FIFO is opened once a reader has opened it (polled, so
    that ``cancelled`` can end the wait: a blocking open would outlast any signal, as Python
    retries it; ``info`` is told once that the wait began)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:  # not there yet (or a dangling symlink): created below
        fifo = False
    try:
        if not fifo:
            return os.open(path, flags | os.O_CREAT, 0o666)
        waiting = False
        while True:
            try:
                fd = os.open(path, flags | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: nobody reads it yet
                    raise
            else:
                os.set_blocking(fd, True)
                return fd
            if cancelled is not None and cancelled():
                raise OutputError(f"stopped while waiting for a reader of {path} (a FIFO)")
            if not waiting and info is not None:
                info(f"{path} is a FIFO: waiting for a reader")
            waiting = True
            time.sleep(0.05)
    except IsADirectoryError as exc:
        raise OutputError(f"cannot write {path}: is a directory") from exc
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc


def make_directory(path: str | os.PathLike) -> Path:
    """``path`` as a directory, created with its parents (the umask deciding their modes) when
    missing; ``OutputError`` when it is something else or cannot be created."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file, or a symlink to one
        raise OutputError(f"{path}: not a directory") from exc
    except OSError as exc:
        raise OutputError(f"{path}: cannot create it: {_reason(exc)}") from exc
    if not path.is_dir():
        raise OutputError(f"{path}: not a directory")
    return path


def _copy_to_stdout(name: str) -> None:
    """The file ``name`` written to standard output: by the kernel to its file descriptor, or
    through Python where it has none (a test's captured output)."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.flush()
    try:
        fd = out.fileno()
    except (AttributeError, io.UnsupportedOperation):
        with open(name, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 22)
        out.flush()
        return
    _copy_file(fd, name)


def _write_in_place(path: Path, data: bytes | Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    try:
        write_all(fd, data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
    finally:
        os.close(fd)


def _stage(target: Path, data: bytes | Iterable[bytes] | WrittenBy) -> str:
    """``data`` in a new temporary file beside ``target``, on disk, with the mode ``target`` will
    have; returns its path. Nothing is left behind on failure."""
    directory = target.parent if str(target.parent) else Path(".")
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_reason(exc)}") from exc
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_reason(exc)}") from exc
    try:
        if isinstance(data, WrittenBy):
            data.fill(tmp)
            # The file now at that name: a program may write a new one there (DuckDB does).
            os.close(fd)
            fd = -1
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputError(f"cannot write {target}: what was written is not a regular file")
        _set_mode(fd, old)
        if not isinstance(data, WrittenBy):
            write_all(fd, data)
        os.fsync(fd)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {target}: {_reason(exc)}") from exc
        raise
    os.close(fd)
    return tmp


def _set_mode(fd: int, old: os.stat_result | None) -> None:
    """The mode (as root, the owner) a staged file takes: the umask's for a new file, the old
    file's for one replaced."""
    if old is None:
        os.fchmod(fd, 0o666 & ~current_umask())
    else:
        os.fchmod(fd, stat.S_IMODE(old.st_mode))
        if os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0):
            os.fchown(fd, old.st_uid, old.st_gid)


def write_all(fd: int, data: bytes | Iterable[bytes] | Path) -> None:
    """All of ``data`` (bytes, chunks of bytes, or a file's contents) written to ``fd``."""
    if isinstance(data, Path):  # a file's contents (``WrittenBy``, filled in a temporary directory)
        _copy_file(fd, data)
        return
    for chunk in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else _blocks(data):
        view = memoryview(chunk)
        while view:  # a pipe (or a full disk's last block) may take less than all at once
            view = view[os.write(fd, view):]


def copy_range(fd: int, source: int, offset: int, count: int) -> int:
    """Write ``count`` bytes of the file open at ``source``, from ``offset``, to ``fd`` (at its
    position): by ``os.sendfile`` (in the kernel), else (a kernel or target that refuses it
    before the first byte) read and written. Returns the bytes written: fewer only when the
    file ends first. (Not O_APPEND targets: Linux's sendfile refuses such a descriptor.)"""
    done = 0
    try:
        while done < count:
            sent = os.sendfile(fd, source, offset + done, min(count - done, 1 << 30))
            if sent == 0:
                return done  # the file was cut short: what it has now is what it holds
            done += sent
        return done
    except OSError as exc:
        if done or exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    while done < count and (block := os.pread(source, min(count - done, 1 << 22), offset + done)):
        write_all(fd, block)
        done += len(block)
    return done


def _copy_file(fd: int, path: str | os.PathLike) -> None:
    """The contents of the file ``path`` written to ``fd`` (``copy_range``)."""
    with open(path, "rb") as src:
        copy_range(fd, src.fileno(), 0, os.fstat(src.fileno()).st_size)


def _blocks(chunks: Iterable[bytes], size: int = 1 << 20) -> Iterable[bytes]:
    """``chunks`` (a line each, say) joined into blocks of about ``size`` bytes: one write each."""
    pending: list[bytes] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


def _unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encoded(content: str | bytes) -> bytes:
    return content if isinstance(content, bytes) else content.encode("utf-8")


def write_directory(directory: str | os.PathLike, files: Mapping[str, str | bytes], remove: Iterable[str] = (),
                    last: str | None = None) -> dict[str, str]:
    """Write ``files`` (name -> text, or bytes written as they are, such as an image) into
    ``directory``, whole or not at all, and then remove the files named in ``remove``; ``last`` (an
    index such as kustomization.yaml) is renamed into place after all the others. Returns the
    names in ``remove`` that could not be removed, with why."""
    directory = Path(directory)
    if directory.is_dir():
        _replace_files(directory, files, last)
    else:
        _new_directory(directory, files)
    left = {}
    for name in remove:
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            left[name] = _reason(exc)
    return left


def _replace_files(directory: Path, files: Mapping[str, str | bytes], last: str | None) -> None:
    order = sorted(files, key=lambda name: (name == last, name))
    staged: list[tuple[str, Path]] = []
    try:
        for name in order:
            staged.append((_stage(directory / name, _encoded(files[name])), directory / name))
    except BaseException:
        for tmp, _ in staged:
            _unlink_quietly(tmp)
        raise
    for i, (tmp, target) in enumerate(staged):
        try:
            os.replace(tmp, target)
        except OSError as exc:  # rename in one directory: only a vanished directory gets here
            for left, _ in staged[i:]:
                _unlink_quietly(left)
            raise OutputError(f"cannot write {target}: {_reason(exc)}") from exc
    _fsync_directory(directory)


def _new_directory(directory: Path, files: Mapping[str, str | bytes]) -> None:
    parent = directory.parent if str(directory.parent) else Path(".")
    created: list[Path] = []  # parents made here, removed again on failure
    for p in reversed([parent, *parent.parents]):
        if not p.exists():
            try:
                p.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                _remove_dirs(created)
                raise OutputError(f"{directory}: cannot create {p}: {_reason(exc)}") from exc
            created.append(p)
    try:
        building = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        _remove_dirs(created)
        raise OutputError(f"{directory}: cannot create: {_reason(exc)}") from exc
    try:
        os.chmod(building, 0o777 & ~current_umask())
        for name in sorted(files):
            os.replace(_stage(building / name, _encoded(files[name])), building / name)
        _fsync_directory(building)
        os.rename(building, directory)
        _fsync_directory(parent)
    except BaseException as exc:
        for entry in building.iterdir() if building.is_dir() else ():
            _unlink_quietly(entry)
        try:
            building.rmdir()
        except OSError:
            pass
        _remove_dirs(created)
        if isinstance(exc, OSError):
            raise OutputError(f"{directory}: cannot create: {_reason(exc)}") from exc
        raise


def _remove_dirs(created: list[Path]) -> None:
    for p in reversed(created):
        try:
            p.rmdir()
        except OSError:
            pass

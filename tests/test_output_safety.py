"""Writing output never damages what it writes to (netpol_learn/_output.py).

Each command runs as a separate process (``python -m netpol_learn``), as a user would run it, on
the guestbook example. Special files are made in a temporary directory (a FIFO, a symlink, a
character device made with mknod: never /dev/null itself); the full disk is a small tmpfs mounted
by the test (the tests run as root, in CI too); "another user" is nobody, through setpriv.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
GUESTBOOK = ROOT / "captures" / "guestbook"
PCAP = GUESTBOOK / "capture.pcap"
INVENTORY = GUESTBOOK / "inventory.yaml"


def cli(*args, umask: int | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    def preexec():
        if umask is not None:
            os.umask(umask)

    r = subprocess.run([sys.executable, "-m", "netpol_learn", *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, preexec_fn=preexec, timeout=120, **kw)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def flows(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flows") / "flows.jsonl"
    cli("capture", PCAP, "-o", out)
    return out


def tree(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --- special files ----------------------------------------------------------------------------


def test_a_character_device_stays_a_device(tmp_path, flows):
    policies = tmp_path.parent / f"{tmp_path.name}-policies"
    cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", policies)
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the null device, made here
    for args in (("capture", PCAP), ("merge", flows), ("resolve", "--flows", flows, "--inventory", INVENTORY),
                 ("manifests",), ("verify", "--policies", policies, "--inventory", INVENTORY, "--flows", flows)):
        r = cli(*args, "-o", dev, check=False)
        assert r.returncode == 0, r.stderr  # verify too: the policies were generated from these flows
        st = os.lstat(dev)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3), f"{args[0]} replaced the device node"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # no temporary file left beside it


def test_a_fifo_is_written_to_not_replaced(tmp_path, flows):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    cli("merge", flows, "-o", fifo)
    reader.join(30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got == [flows.read_bytes()]


def test_a_symlink_is_followed_and_stays_a_link(tmp_path, flows):
    target = tmp_path / "real" / "flows.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    cli("merge", flows, "-o", link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == flows.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its mode
    assert sorted(p.name for p in target.parent.iterdir()) == ["flows.jsonl"]


def test_process_substitution_and_stdout(tmp_path, flows):
    out = tmp_path / "copy.jsonl"
    shell = f'{sys.executable} -m netpol_learn merge {flows} -o >(cat > {out})'
    r = subprocess.run(["bash", "-c", shell + "; wait"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    for _ in range(100):  # the substituted process may finish a moment after bash
        if out.exists() and out.stat().st_size == flows.stat().st_size:
            break
        threading.Event().wait(0.05)
    assert out.read_bytes() == flows.read_bytes()
    assert cli("merge", flows, "-o", "-").stdout == flows.read_text()


def test_a_directory_as_an_output_file_is_one_error(tmp_path, flows):
    r = cli("merge", flows, "-o", tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error:") and "is a directory" in r.stderr


def test_every_writing_command_goes_through_the_one_writer():
    """Only netpol_learn/_output.py replaces, creates temporary files or opens files for writing;
    the sniffer's appending segment writer opens through it too."""
    offenders = []
    for path in sorted((ROOT / "netpol_learn").rglob("*.py")):
        if path.name == "_output.py":
            continue
        text = path.read_text()
        for needle in ("os.replace(", "os.rename(", "mkstemp(", "NamedTemporaryFile(", "write_text(", ".write_bytes(",
                       'open(path, "w', "open(self.path, \"w", "O_CREAT"):
            if needle in text and not (needle == "write_text(" and "from netpol_learn._output import" in text):
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []


# --- permissions --------------------------------------------------------------------------------


def test_new_files_follow_the_umask_and_another_user_can_read_them(tmp_path, flows):
    out = tmp_path / "policies"
    cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", out, umask=0o022)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    log = tmp_path / "flows.jsonl"
    cli("merge", flows, "-o", log, umask=0o027)
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    # another user (the one who runs kubectl apply -k) reads them; tmp_path's parents are root's own
    shared = Path(os.environ.get("TMPDIR", "/tmp")) / f"netpol-learn-perm-{os.getpid()}"
    shutil.rmtree(shared, ignore_errors=True)
    try:
        cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", shared / "policies", umask=0o022)
        os.chmod(shared, 0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", str(shared / "policies" / "guestbook.yaml")],
                           capture_output=True, timeout=30)
        assert r.returncode == 0 and r.stdout == (shared / "policies" / "guestbook.yaml").read_bytes(), r.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_replaced_file_keeps_its_mode_and_owner(tmp_path, flows):
    out = tmp_path / "policies"
    cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", out)
    os.chmod(out / "guestbook.yaml", 0o600)
    os.chown(out / "guestbook.yaml", 65534, 65534)
    cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", out, "--dns", "per-workload")
    st = (out / "guestbook.yaml").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (65534, 65534)
    assert "allow-dns" not in (out / "guestbook.yaml").read_text()  # it was replaced


def test_an_unwritable_directory_is_left_as_it_was(tmp_path, flows):
    """Without root's capabilities (setpriv drops them all), permission checks apply; a directory
    that may not be written gives one error line and stays as it was. (The interpreter lives under
    /root, mode 0700, so it cannot run as another user here.)"""
    out = tmp_path / "policies"
    cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", out)
    before = tree(out)
    os.chmod(out, 0o555)
    try:
        r = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "netpol_learn",
                            "generate", "--flows", str(flows), "--inventory", str(INVENTORY), "-o", str(out), "--dns", "per-workload"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    finally:
        os.chmod(out, 0o755)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Permission denied" in r.stderr, r.stderr
    assert tree(out) == before


# --- a directory is whole or unchanged ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount: Path, leave: int) -> None:
    """Fill the file system up to ``leave`` bytes."""
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"x" * 1024)
    except OSError:
        pass
    finally:
        os.close(fd)
    size = (mount / "filler").stat().st_size
    os.truncate(mount / "filler", max(size - leave, 0))


def test_a_full_disk_leaves_the_previous_directory_as_it_was(small_disk, flows):
    out = small_disk / "policies"
    cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", out)
    before = tree(out)
    fill(small_disk, 4096)  # room for one of the new files, not for all
    r = cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", out, "--dns", "per-workload", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "No space left" in r.stderr, r.stderr
    assert tree(out) == before  # no new file, no half of one, no kustomization listing what is missing
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "policies"]


def test_a_full_disk_leaves_no_directory(small_disk, flows):
    fill(small_disk, 4096)
    out = small_disk / "new" / "policies"
    r = cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", out, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # nor its parent, nor a temporary one


def test_a_stale_file_that_cannot_be_removed_is_a_warning(tmp_path, flows):
    """A file of an earlier run in a sticky directory, owned by another user: a process without
    root's capabilities may not remove it. The new files are written; a warning names it."""
    out = tmp_path / "policies"
    cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", out)
    stale = out / "old-namespace.yaml"
    stale.write_text("# Generated by netpol-learn: NetworkPolicies for namespace old-namespace.\n")
    os.chown(stale, 65534, 65534)
    os.chown(out, 65534, 65534)
    os.chmod(out, 0o1777)
    r = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "netpol_learn",
                        "generate", "--flows", str(flows), "--inventory", str(INVENTORY), "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "old-namespace.yaml" in r.stderr and "Traceback" not in r.stderr
    assert stale.exists()


# --- output does not depend on where it is written ------------------------------------------------


def test_the_same_inputs_give_the_same_bytes_wherever_they_are_written(tmp_path, flows):
    a, b, c = tmp_path / "a", tmp_path / "deeper" / "b", tmp_path / "c"
    cli("generate", "--flows", flows, "--inventory", INVENTORY, "-o", a)
    cli("generate", "--flows", flows.resolve(), "--inventory", INVENTORY.resolve(), "-o", str(b) + "/")
    cli("learn", PCAP, "--inventory", INVENTORY, "-o", c)
    assert tree(a) == tree(b) == tree(c)
    assert str(a) not in (a / "kustomization.yaml").read_text()


def test_a_merge_onto_a_full_disk_is_one_error_and_leaves_the_file_as_it_was(small_disk, flows):
    """DuckDB writes the merged log into the temporary file beside its target: when the disk is
    full, that is the command's one error, worded as the one writer words it; the old file stays
    as it was and nothing is left beside it."""
    out = small_disk / "merged.jsonl"
    out.write_text("old\n")
    fill(small_disk, 0)  # no room for the merged log
    r = cli("merge", flows, "-o", out, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "No space left" in r.stderr, r.stderr
    assert r.stderr == f"error: cannot write {out}: No space left on device\n"
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "merged.jsonl"]

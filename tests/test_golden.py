"""Golden cases: each command's output pinned byte for byte (black's habit).

``tests/cases/<name>/`` holds one case:

- ``args``: the command line after ``netpol-learn`` (shell words, ``#`` comments allowed), run
  as its own process (``python -m netpol_learn``, a fresh hash seed each time) with the case
  directory as the working directory, so input paths are relative to it; ``{out}`` stands for
  the output path, a directory or a file the command writes;
- the inputs the args name (flows, inventories, policies; the examples' captures are read from
  ``captures/`` where they live);
- ``expected/``: ``exit_code``, ``stdout`` and ``stderr`` (each left out when empty; ``{out}``
  again stands for the output path) and ``out``, a copy of what the command wrote there.

A difference fails with a unified diff. ``UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py``
rewrites ``expected/`` from what the commands do now; review the change with ``git diff`` before
committing it.
"""

from __future__ import annotations

import difflib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "cases"
NAMES = sorted(p.parent.name for p in CASES.glob("*/args"))
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))


def _args(case: Path, out: Path) -> list[str]:
    words = shlex.split((case / "args").read_text(), comments=True)
    return [w.replace("{out}", str(out)) for w in words]


def _run(case: Path, out: Path) -> dict[str, bytes]:
    """What the case's command produced, as {relative path under expected/: bytes}."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "COLUMNS", "NO_COLOR")}
    env["PYTHONHASHSEED"] = "random"
    proc = subprocess.run(
        [sys.executable, "-m", "netpol_learn", *_args(case, out)],
        cwd=case, capture_output=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
    )
    got = {"exit_code": f"{proc.returncode}\n".encode()}
    for name, data in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        if data:
            got[name] = data.replace(str(out).encode(), b"{out}")
    if out.is_dir():
        for path in sorted(out.rglob("*")):
            if path.is_file():
                got[f"out/{path.relative_to(out).as_posix()}"] = path.read_bytes()
    elif out.is_file():
        got["out"] = out.read_bytes()
    return got


def _expected(case: Path) -> dict[str, bytes]:
    root = case / "expected"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _diff(name: str, want: bytes | None, got: bytes | None) -> str:
    def lines(data: bytes | None) -> list[str]:
        return [] if data is None else data.decode("utf-8", "replace").splitlines(keepends=True)

    return "".join(difflib.unified_diff(
        lines(want), lines(got),
        fromfile=f"expected/{name}" if want is not None else "(no file)",
        tofile=f"got/{name}" if got is not None else "(no file)",
    )) or f"{name}: the bytes differ (line endings or encoding)\n"


def test_there_are_cases_for_every_command_family():
    families = {name.split("-")[0] for name in NAMES}
    assert {"learn", "capture", "generate", "verify", "diff", "manifests", "resolve", "merge"} <= families
    examples = {p.parent.name for p in (CASES.parent.parent / "captures").glob("*/expected.yaml")}
    assert {f"learn-{e}" for e in examples} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_golden(tmp_path, name):
    case = CASES / name
    got = _run(case, tmp_path / "out")
    if UPDATE:
        shutil.rmtree(case / "expected", ignore_errors=True)
        for rel, data in got.items():
            path = case / "expected" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return
    want = _expected(case)
    assert want, f"{case}/expected is missing: run UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py -k {name}"
    differences = [_diff(rel, want.get(rel), got.get(rel)) for rel in sorted(set(want) | set(got)) if want.get(rel) != got.get(rel)]
    assert not differences, f"{name}: output differs from tests/cases/{name}/expected " \
        f"(UPDATE_GOLDEN=1 rewrites it)\n" + "".join(differences)

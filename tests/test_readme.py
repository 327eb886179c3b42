"""The README's example runs and prints what the README shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quick_start_commands_are_the_ones_ci_runs():
    commands = [b.strip() for b in _blocks("sh")][:2]
    assert commands[0].startswith("pip install . && netpol-learn learn ")
    assert commands[1] == "pip install '.[test]' && python -m pytest"
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_quick_start_output_is_what_the_readme_shows(tmp_path):
    install_and_run = _blocks("sh")[0].strip()
    args = shlex.split(install_and_run.split("&&", 1)[1])
    assert args[0] == "netpol-learn"
    out_at = args.index("-o") + 1
    shown_output, args[out_at] = args[out_at], str(tmp_path / "policies")
    out = subprocess.run([sys.executable, "-m", "netpol_learn", *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = _blocks("text")[0].strip()
    assert out.stderr.strip() == summary.replace(shown_output, args[out_at])
    written = "\n".join(p.read_text() for p in sorted((tmp_path / "policies").glob("*.yaml")))
    shown = _blocks("yaml")[0]  # the policy the README explains (the CI workflow comes later)
    assert shown.strip() in written

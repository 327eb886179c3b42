"""Every command block of the README runs and does what the README says.

Blocks are found by their content, not their place, so the README can grow around them. Each
command line runs verbatim through the shell (``sh -c``; ``bash -e -c`` for the GitHub Actions
steps, as ``run:`` does) in a temporary directory, with a ``netpol-learn`` on PATH that runs
``python -m netpol_learn`` of this checkout. How each block is checked:

- quick start (``pip install . && netpol-learn learn captures/guestbook/...``): the ``pip
  install . &&`` prefix is dropped (the package under test is installed; installing again takes
  minutes), the rest runs in a copy of ``captures/guestbook/``; its stderr is the ``text`` block
  after it, it writes the files the README names, ``guestbook.yaml`` holds the policies the
  README lists and the ``yaml`` excerpt of ``db``, and ``kubectl apply -k policies/`` would find
  ``guestbook.yaml`` through the kustomization;
- tests (``pip install '.[test]' && python -m pytest``): not run here (it is this very suite,
  run by CI); it must be the command ``.ci/run`` runs, and the ``test`` extra must exist and
  bring pytest;
- the steps one at a time (``netpol-learn capture ... inventory ... verify``): every line runs;
  ``netpol-learn inventory`` lists from a local server speaking the Kubernetes API JSON
  (tests/fake_api.py) that serves the guestbook inventory, found through ``KUBECONFIG`` as a
  kubeconfig would be; the snapshot holds the served objects, ``generate`` writes the quick
  start's policies, ``verify`` exits 0 and, with the ``db`` policy removed, 1 ("exit 1:
  something would break");
- the CI workflow (``yaml`` with ``netpol-learn diff``): its ``pip install`` step is not run
  (a checkout path, and the package is installed); the ``learn`` and ``diff`` steps run in a
  directory with the guestbook capture, its inventory and the quick start's policies committed
  as ``policies/``, ``$GITHUB_STEP_SUMMARY`` a file: equal policies exit 0; without the ``db``
  policy the diff exits 1 and the summary has the row the README shows, for the guestbook;
- every block with a command line in it must be one of these (`test_every_command_block_is_checked`);
  blocks without one (the summary line, the policy excerpt, the architecture diagram) are what
  other blocks' checks compare against, or nothing to run.

The commands table's options are checked against each command's own options.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from fake_api import LocalApiServer, no_ambient_cluster, status  # noqa: F401  (an autouse fixture)
from netpol_learn._cli import main

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUESTBOOK = ROOT / "captures" / "guestbook"

# a line that runs something (after an optional "- run:" of a workflow step)
COMMAND = re.compile(r"^\s*(?:-\s*run:\s*)?(?:\$\s*)?(?:netpol-learn|pip|python3?|kubectl|docker|tcpdump|helm|make)\b", re.M)


def _fences() -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return re.findall(r"^```([\w-]*)\n(.*?)^```$", README, flags=re.S | re.M)


def _one(what: str, match) -> str:
    found = [body for lang, body in _fences() if match(lang, body)]
    assert len(found) == 1, f"the README should have one {what} block, has {len(found)}"
    return found[0]


def quick_start_block() -> str:
    return _one("quick start", lambda lang, body: lang == "sh" and body.startswith("pip install . && netpol-learn learn "))


def suite_block() -> str:
    return _one("test command", lambda lang, body: lang == "sh" and body.strip().endswith("python -m pytest"))


def steps_block() -> str:
    return _one("steps one at a time", lambda lang, body: "netpol-learn capture " in body and "netpol-learn verify " in body)


def ci_block() -> str:
    return _one("CI workflow", lambda lang, body: lang == "yaml" and "netpol-learn diff " in body)


def summary_block() -> str:
    return _one("quick start summary", lambda lang, body: lang == "text" and " flows -> " in body)


def db_policy_block() -> str:
    return _one("db policy excerpt", lambda lang, body: lang == "yaml" and body.startswith("# StatefulSet/db\n"))


CHECKED = {"quick start": quick_start_block, "tests": suite_block, "steps": steps_block, "CI workflow": ci_block}


def test_every_command_block_is_checked():
    checked = {name: block() for name, block in CHECKED.items()}
    for lang, body in _fences():
        if COMMAND.search(body):
            assert body in checked.values(), f"a README block with commands that tests/test_readme.py does not run:\n{body}"


# --- running lines as the README shows them ----------------------------------------------------


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """run(line, cwd, shell=..., env=...): the line through the shell, `netpol-learn` being this checkout."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "netpol-learn"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m netpol_learn "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def run(line: str, cwd: Path, *, shell: tuple[str, ...] = ("sh", "-c"), env: dict | None = None):
        import os

        environment = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        return subprocess.run([*shell, line], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)

    return run


def _guestbook_copy(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name in ("capture.pcap", "inventory.yaml"):
        shutil.copy(GUESTBOOK / name, directory / name)
    return directory


def _without_db_policy(policies: Path) -> None:
    """The guestbook's policies as if the db policy had never been committed."""
    path = policies / "guestbook.yaml"
    documents = path.read_text(encoding="utf-8").split("\n---\n")
    kept = [d for d in documents if "\n  name: db\n" not in d]
    assert len(kept) == len(documents) - 1
    path.write_text("\n---\n".join(kept), encoding="utf-8")


@pytest.fixture(scope="module")
def quick_start(shell, tmp_path_factory):
    """(the directory the quick start ran in, its result)."""
    line = quick_start_block().strip()
    assert "\n" not in line and line.startswith("pip install . && ")
    work = tmp_path_factory.mktemp("quick-start")
    _guestbook_copy(work / "captures" / "guestbook")
    return work, shell(line.removeprefix("pip install . && "), work)


def test_quick_start_output_is_what_the_readme_shows(quick_start):
    work, r = quick_start
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == summary_block().strip()
    # "and writes `policies/guestbook.yaml`, `policies/kustomization.yaml` (...) and `policies/REPORT.md`"
    written = re.search(r"^and writes (.*?)\. `guestbook\.yaml` holds", README, flags=re.S | re.M)
    assert written, "the README's sentence on what the quick start writes"
    named = re.findall(r"`policies/([^`/]+)`", written.group(1))
    assert sorted(named) == ["REPORT.md", "guestbook.yaml", "kustomization.yaml", "learning.png"]
    policies = work / "policies"
    assert sorted(p.name for p in policies.iterdir()) == sorted(named)
    # `kubectl apply -k policies/` finds the policies through the kustomization
    assert "`kubectl apply -k policies/`" in written.group(1)
    assert yaml.safe_load((policies / "kustomization.yaml").read_text())["resources"] == ["guestbook.yaml"]
    # "`guestbook.yaml` holds five policies": default-deny, allow-dns, and one per workload (ui, api, db)
    assert "`guestbook.yaml` holds five policies:" in README
    assert "- `default-deny`: " in README and "- `allow-dns`: " in README
    assert "named after it, selecting its pods as its owner does: `ui` may call\n  `api`, `api` may be called by `ui` and may call `db`" in README
    text = (policies / "guestbook.yaml").read_text(encoding="utf-8")
    documents = [d for d in yaml.safe_load_all(text) if d]
    assert sorted(d["metadata"]["name"] for d in documents) == sorted(["default-deny", "allow-dns", "ui", "api", "db"])
    assert {d["kind"] for d in documents} == {"NetworkPolicy"} and {d["metadata"]["namespace"] for d in documents} == {"guestbook"}
    assert db_policy_block().strip() in text  # the policy the README explains


def test_test_command_is_the_one_ci_runs():
    command = suite_block().strip()
    assert command == "pip install '.[test]' && python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\n" + command + "\n" in ci
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(re.match(r"pytest\b", requirement) for requirement in extras["test"])
    assert f"- Tests: `{command}` (the same command `.ci/run` runs in CI)." in README


# --- the steps one at a time, `inventory` against a local API server ----------------------------

LIST_PATHS = {  # kind: (list path, apiVersion) of what `netpol-learn inventory` lists
    "Namespace": ("/api/v1/namespaces", "v1"), "Node": ("/api/v1/nodes", "v1"), "Pod": ("/api/v1/pods", "v1"),
    "Service": ("/api/v1/services", "v1"), "EndpointSlice": ("/apis/discovery.k8s.io/v1/endpointslices", "discovery.k8s.io/v1"),
    "Endpoints": ("/api/v1/endpoints", "v1"), "ReplicaSet": ("/apis/apps/v1/replicasets", "apps/v1"),
    "Deployment": ("/apis/apps/v1/deployments", "apps/v1"), "StatefulSet": ("/apis/apps/v1/statefulsets", "apps/v1"),
    "DaemonSet": ("/apis/apps/v1/daemonsets", "apps/v1"), "Job": ("/apis/batch/v1/jobs", "batch/v1"),
    "CronJob": ("/apis/batch/v1/cronjobs", "batch/v1"),
}


class GuestbookApi(LocalApiServer):
    """Serves the guestbook inventory's objects as the API's list calls do (one page each)."""

    def __init__(self, items: list[dict]):
        super().__init__()
        assert {i["kind"] for i in items} <= set(LIST_PATHS)
        self.items = items
        self.paths: set[str] = set()

    def handle(self, request, path: str, query: dict) -> None:
        self.paths.add(path)
        for kind, (list_path, api_version) in LIST_PATHS.items():
            if path == list_path:
                items = [{k: v for k, v in i.items() if k not in ("apiVersion", "kind")} for i in self.items if i["kind"] == kind]
                request.send_json(200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": {"resourceVersion": "1"},
                                        "items": items})
                return
        request.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "guestbook",
        "clusters": [{"name": "guestbook", "cluster": {"server": server}}],
        "users": [{"name": "reader", "user": {"token": "reader-token"}}],
        "contexts": [{"name": "guestbook", "context": {"cluster": "guestbook", "user": "reader"}}],
    }))
    return path


def _keys(items: list[dict]) -> list[tuple]:
    return sorted((i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in items)


def test_the_steps_one_at_a_time(shell, quick_start, tmp_path):
    lines = [line for line in steps_block().splitlines() if line.strip()]
    assert [line.split()[1] for line in lines] == ["capture", "inventory", "resolve", "generate", "verify"]
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(GUESTBOOK / "capture.pcap", work / "capture.pcap")
    served = yaml.safe_load((GUESTBOOK / "inventory.yaml").read_text())["items"]
    with GuestbookApi(served) as api:
        env = {"KUBECONFIG": str(_kubeconfig(tmp_path / "kubeconfig", api.url))}
        results = {}
        for line in lines:
            r = shell(line, work, env=env)
            assert r.returncode == 0, (line, r.stderr)
            results[line.split()[1]] = r
    assert set(LIST_PATHS[k][0] for k in LIST_PATHS) <= api.paths
    assert results["capture"].stderr.strip().endswith("-> flows.jsonl") and (work / "flows.jsonl").exists()
    snapshot = yaml.safe_load((work / "inventory.yaml").read_text())
    assert snapshot["kind"] == "List" and _keys(snapshot["items"]) == _keys(served)
    assert "netpol-learn.io/snapshot-time" in snapshot["metadata"]["annotations"]
    # what every address is: all 8 flows between pods, nothing unresolved or ambiguous
    assert results["resolve"].stdout.startswith("Flows by peer kind (client -> server):\n  pod -> pod  8\n"
                                                "Unresolved addresses: none\nAmbiguous addresses: none\n"), results["resolve"].stdout
    # the same policies as `learn` gave in one step
    quick_start_policies = quick_start[0] / "policies"
    assert (work / "policies" / "guestbook.yaml").read_text() == (quick_start_policies / "guestbook.yaml").read_text()
    # "# exit 1: something would break": what was observed passes; without the db policy, api -> db would break
    _without_db_policy(work / "policies")
    verify = lines[-1]
    assert results["verify"].stdout == "All 4 observed connections are allowed.\n", results["verify"].stdout
    r = shell(verify, work)
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines()[:2] == [
        "1 observed connection would be denied (3 allowed):",
        "  guestbook/Deployment/api -> guestbook/StatefulSet/db TCP/5432: 2 flows, 100 packets; denied by ingress: "
        "ingress of guestbook/StatefulSet/db is isolated by guestbook/default-deny; none allows it"], r.stdout


# --- the CI workflow ---------------------------------------------------------------------------


def test_the_ci_workflow_steps(shell, quick_start, tmp_path):
    steps = yaml.safe_load(ci_block())["jobs"]["diff"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    install, learn, diff = runs
    # not run: installs a checkout of netpol-learn (the tests run with this checkout installed)
    assert re.fullmatch(r"pip install \S+", install.split("#")[0].strip()), install
    work = _guestbook_copy(tmp_path / "repo")
    shutil.copytree(quick_start[0] / "policies", work / "policies")  # committed
    summary = tmp_path / "summary.md"
    summary.touch()
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    bash = ("bash", "-e", "-c")  # what a `run:` step is on ubuntu-latest
    r = shell(learn, work, shell=bash, env=env)
    assert r.returncode == 0, r.stderr
    assert (work / "suggested" / "guestbook.yaml").read_text() == (work / "policies" / "guestbook.yaml").read_text()
    r = shell(diff, work, shell=bash, env=env)
    assert r.returncode == 0, r.stderr  # nothing changed: the step passes
    equal = summary.read_text()
    # "`diff` exits 1 when the policies differ and writes a Markdown summary for the pull request"
    _without_db_policy(work / "policies")
    r = shell(diff, work, shell=bash, env=env)
    assert r.returncode == 1, r.stderr
    changed = summary.read_text()[len(equal):]
    # "Each row names the workloads and the port (`shop/Deployment/api -> shop/StatefulSet/db TCP/5432`)"
    example = re.search(r"Each row names the workloads and the port \(`([^`]+)`\)", README)
    assert example, "the README's example row"
    source, destination, port = re.fullmatch(r"(\S+) -> (\S+) (\S+)", example.group(1)).groups()
    row = f"| {source} | {destination} | {port} |".replace("shop/", "guestbook/")
    assert [line for line in changed.splitlines() if line.startswith("| guestbook/")] == [row + "  |"], changed


# --- the commands table ------------------------------------------------------------------------


def test_the_commands_tables_options_exist():
    rows = re.findall(r"^\| `netpol-learn (\w+)([^`]*)` \|", README, flags=re.M)
    assert {name for name, _ in rows} == set(main.commands), "every command in the table, and only those"
    for name, usage in rows:
        command = main.commands[name]
        options = {o: p for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
        for option, value in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)(?: ([^\]\s]+))?", usage):
            assert option in options, f"README: netpol-learn {name} {option}: no such option"
            choice = options[option].type
            if isinstance(choice, click.Choice) and value:
                assert value.replace("\\|", "|").split("|") == list(choice.choices), (name, option)

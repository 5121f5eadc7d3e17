"""The docs (README.md, docs/*.md) against the code: every option they show exists, every nox
session they name exists, and every command in their shell blocks is executed, here or by the
test or CI step the table EXECUTED_BY names. Facts a run produces are linked, never retyped,
so nothing here compares figures."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import cli, mutants
from lab.conformance import options
from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SKIPPED_DIRS = {"node_modules", "build", "dist", "__pycache__"}

# Commands shown in a shell block that this file does not run itself: where each is executed,
# as (file, text that must be in it). A command shown and neither quick (see _quick) nor here
# fails test_every_shown_command_is_executed.
EXECUTED_BY: dict[str, tuple[str, str]] = {
    # README's Quick start, run verbatim in a copy of the checkout, below
    "python3 -m venv .venv && .venv/bin/pip install .":
        ("tests/test_docs.py", "def test_quick_start_installs_a_runnable_command("),
    # a local lab's life: up, the tutorial's client through the proxy, status, down
    "redis-mesh-lab up --name demo": ("tests/test_local_lab.py", "def test_up_write_status_down("),
    "redis-mesh-lab cli --name demo set a 1":
        ("tests/test_running_lab.py", "def test_version_and_cli_command("),
    "redis-mesh-lab status --name demo":
        ("tests/test_local_lab.py", "def test_up_write_status_down("),
    "redis-mesh-lab down --name demo":
        ("tests/test_local_lab.py", "def test_up_write_status_down("),
    # another project's CI: up, the shipped suite and its own test attached, down
    "redis-mesh-lab up --name mylab": ("tests/test_shipped_suite.py",
                                       "def test_another_project_runs_the_shipped_suite_and_its"),
    "pytest --pyargs lab.suites tests/ --lab-backend attach --lab-name mylab":
        ("tests/test_shipped_suite.py", "def test_another_project_runs_the_shipped_suite_and_its"),
    "redis-mesh-lab down --name mylab": ("tests/test_shipped_suite.py",
                                         "def test_another_project_runs_the_shipped_suite_and_its"),
    # istiod: the session builds it, then brings a lab up with it and runs the suite
    "redis-mesh-lab tools install istiod": ("noxfile.py", '"tools", "install", "istiod"'),
    # docs/backends.md's kind walk-through: `nox -s e2e_kind` runs it (.ci/run's step 5)
    "redis-mesh-lab tools install kubernetes": ("noxfile.py", '"tools", "install", "kubernetes"'),
    "redis-mesh-lab up --backend kind --name k": ("noxfile.py", '"up", "--backend", "kind"'),
    "kubectl --kubeconfig ~/.local/state/redis-mesh-lab/k/kubeconfig get pods -n redis":
        ("noxfile.py", '"get", "pods", "-n", "redis"'),
    "pytest --pyargs lab.suites --lab-backend attach --lab-name k":
        ("noxfile.py", '"--lab-backend", "attach", "--lab-name", name, *session.posargs'),
    "redis-mesh-lab down --name k":
        ("noxfile.py", 'session.run("redis-mesh-lab", "down", "--name", name)'),
    "redis-mesh-lab up --name real --control-plane istiod":
        ("tests/test_controlplane_local.py", "def test_istiod_lab_is_configured_only_by_istiod("),
    # CI's own steps
    "pip install 'nox[uv]'": (".ci/run", "pip install --quiet --disable-pip-version-check "
                                         "--upgrade 'nox[uv]'"),
    "nox -s e2e": (".ci/run", ".ci-venv/bin/nox -s e2e\n"),
    "nox -s tests": (".ci/run", ".ci-venv/bin/nox -s tests\n"),
    "nox -s e2e_istiod": (".ci/run", ".ci-venv/bin/nox -s e2e_istiod\n"),
    "nox -s mutations -- --profile tutorial":
        (".ci/run", ".ci-venv/bin/nox -s mutations -- --profile tutorial\n"),
    "nox -s mutations -- --profile tutorial --backend docker --reports reports/docker":
        (".ci/run", "nox -s mutations -- --profile tutorial --backend docker --reports "
                    "reports/docker\n"),
    "nox -s matrix -- --envoys ends": (".ci/run", ".ci-venv/bin/nox -s matrix -- --envoys ends\n"),
}


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, re.S | re.M)


def _commands(block: str) -> list[str]:
    """Each command line of a shell block: comments dropped, `.venv/bin/` dropped."""
    found = []
    for raw in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#\s.*$", "", raw).strip().removeprefix("$ ")
        if line and not line.startswith("#"):
            found.append(line.removeprefix(".venv/bin/"))
    return found


def _shown_commands() -> dict[str, list[str]]:
    shown: dict[str, list[str]] = {}
    for page in PAGES:
        for block in _shell_blocks(_text(page)):
            for command in _commands(block):
                shown.setdefault(command, []).append(page.name)
    return shown


def _quick(command: str) -> bool:
    """Quick and safe: `redis-mesh-lab` help, version, a dry run, the list of labs."""
    words = command.split()
    return words[0] == "redis-mesh-lab" and "&&" not in words and (
        bool({"--help", "--version", "--dry-run"} & set(words)) or words[1:] == ["list"])


def test_readme_is_at_most_300_lines() -> None:
    assert len(_text(README).splitlines()) <= 300


def test_no_markdown_file_has_merge_conflict_markers() -> None:
    marker = re.compile(r"^(<{7} |={7}$|>{7} )", re.M)
    bad = [str(path.relative_to(ROOT)) for path in ROOT.rglob("*.md")
           if not any(part.startswith(".") or part in SKIPPED_DIRS
                      for part in path.relative_to(ROOT).parts)
           and marker.search(path.read_text(encoding="utf-8", errors="replace"))]
    assert bad == []


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _cli_uses() -> list[tuple[str, str]]:
    """Every `redis-mesh-lab ...` shown, in a code span or a shell block line, with its page."""
    uses = []
    for page in PAGES:
        text = _text(page)
        pieces = re.findall(r"`([^`\n]+)`", text)
        for block in _shell_blocks(text):
            pieces += block.splitlines()
        for piece in pieces:
            for use in re.findall(r"(?:^|[\s/(])redis-mesh-lab((?:\s+[^\s|;&#)]+)*)", piece):
                uses.append((page.name, use))
    return uses


def test_every_redis_mesh_lab_option_shown_exists() -> None:
    parser = cli._parser()
    commands = _subparsers(parser)
    wrong = []
    for page, use in _cli_uses():
        words = use.split()
        target, rest = parser, words
        if words and not words[0].startswith("-"):
            if words[0] not in commands:
                wrong.append(f"{page}: redis-mesh-lab {use.strip()}: no command {words[0]}")
                continue
            target, rest = commands[words[0]], words[1:]
            if words[0] == "tools" and rest[:1] == ["install"]:
                target, rest = _subparsers(target)["install"], rest[1:]
        known = _option_strings(target)
        for word in rest:
            if not word.startswith("-"):
                if target is commands["cli"]:
                    break  # the rest goes to redis-cli
                continue
            if word.split("=", 1)[0] not in known and not word.startswith("<"):
                wrong.append(f"{page}: redis-mesh-lab {use.strip()}: no option {word}")
    assert wrong == []


def test_every_option_in_the_cli_pages_tables_exists() -> None:
    """docs/cli.md's option tables: the first cell's options are the parser's."""
    parser = cli._parser()
    known = _option_strings(parser) | {
        flag for sub in _subparsers(parser).values() for flag in _option_strings(sub)}
    rows = re.findall(r"^\| `(--[^|]*)\|", _text(ROOT / "docs" / "cli.md"), re.M)
    shown = {flag for row in rows for flag in re.findall(r"--[a-z][a-z-]*", row)}
    assert rows and shown - known == set()


def test_every_lab_pytest_option_shown_is_declared() -> None:
    shown = {flag: page.name for page in PAGES
             for flag in re.findall(r"--lab-[a-z][a-z-]*[a-z]", _text(page))}
    assert {f: p for f, p in shown.items() if f not in options.BY_FLAG} == {}


def test_every_nox_session_shown_exists() -> None:
    sessions = set(re.findall(r"@nox\.session[^\n]*\ndef (\w+)", _text(ROOT / "noxfile.py")))
    pages = [*PAGES, ROOT / "reports" / "README.md"]
    shown = {name: page.name for page in pages
             for name in re.findall(r"nox -s ([\w-]+)", _text(page))}
    assert sessions and {n: p for n, p in shown.items() if n not in sessions} == {}


def test_every_shown_command_is_executed(tmp_path: Path) -> None:
    env = {**os.environ, "REDIS_MESH_LAB_HOME": str(tmp_path / "labs")}
    unmapped, failed = [], []
    for command, pages in _shown_commands().items():
        if _quick(command):
            argv = [sys.executable, "-m", "lab", *shlex.split(command)[1:]]
            run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=120, check=False)
            if run.returncode != 0:
                failed.append(f"{command} ({pages[0]}): exit {run.returncode} {run.stderr}")
        elif command not in EXECUTED_BY:
            unmapped.append(f"{command} ({', '.join(pages)})")
    assert unmapped == [], "shown but never executed: map it in EXECUTED_BY, or run it here"
    assert failed == []


def test_every_mapped_command_is_shown_and_its_executor_exists() -> None:
    shown = _shown_commands()
    for command, (path, needle) in EXECUTED_BY.items():
        assert command in shown, f"{command}: no longer shown, drop it from EXECUTED_BY"
        assert needle in _text(ROOT / path), f"{command}: {path} has no {needle!r}"


def test_the_mutant_table_is_the_catalogue() -> None:
    rows = {line for line in _text(ROOT / "docs" / "mutants.md").splitlines()
            if re.match(r"\| `[a-z0-9-]+` \| (tutorial|extended) \|", line)}
    expected = {f"| `{m.name}` | {m.profile} | {', '.join(m.expect_fail) or '(none: must pass)'}"
                f" | {m.description} |" for m in mutants.catalogue()}
    assert rows == expected


def test_architecture_lists_every_folder() -> None:
    page = _text(ROOT / "docs" / "architecture.md")
    folders = [path for top in ("lab", "suites", "tests", "manifests") for path in
               [ROOT / top, *(ROOT / top).rglob("*")]
               if path.is_dir() and not set(path.relative_to(ROOT).parts) & SKIPPED_DIRS]
    missing = [f"{p.relative_to(ROOT)}/" for p in folders
               if f"`{p.relative_to(ROOT)}/`" not in page]
    assert missing == []


def test_quick_start_installs_a_runnable_command(tmp_path: Path) -> None:
    """The README's Quick start block, verbatim, in a copy of the checkout."""
    if shutil.which("python3") is None:
        pytest.skip("no python3 on PATH")
    quick_start = _text(README).split("## Quick start", 1)[1]
    block = _shell_blocks(quick_start)[0]
    copy = tmp_path / "checkout"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=copy,
                         capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (copy / ".venv" / "bin" / "redis-mesh-lab").is_file()
    assert re.search(r"^redis-mesh-lab \d", run.stdout, re.M), run.stdout[-2000:]

"""docs/architecture.md matches the code: every module it names exists and every module is in it, the flow of
`make export` names functions that exist, in the order pipeline/export.py calls them; and the house rules
that keep the layout readable (file length, one definition of the shared helpers, one-way dependencies)."""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
PACKAGES = ("pipeline", "edge_runtime", "benchmarks", "scripts")
MAX_LINES = 450


def _section(title: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"docs/architecture.md has no '## {title}' section"
    return m.group(1)


def documented_modules() -> set[str]:
    """The .py paths of the layout tree: two spaces of indent per level, folders end in '/'."""
    block = re.search(r"```text\n(.*?)```", _section("Layout"), re.S).group(1)
    stack: list[str] = []
    found = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.strip().split()[0]
        stack = stack[:depth]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        elif name.endswith(".py"):
            found.add("/".join([*stack, name]))
    return found


def code_modules() -> set[str]:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *PACKAGES],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    return {f for f in files if f.endswith(".py") and (REPO / f).is_file()}


def only_a_docstring(path: str) -> bool:
    """A package's __init__.py that holds nothing but its docstring: the folder's line in the layout says it."""
    body = ast.parse((REPO / path).read_text()).body
    return path.endswith("__init__.py") and len(body) <= 1 and all(isinstance(n, ast.Expr) for n in body)


def test_every_module_in_the_layout_exists_and_every_module_is_in_it():
    documented, code = documented_modules(), code_modules()
    assert documented - code == set(), "docs/architecture.md names modules that do not exist"
    assert {m for m in code - documented if not only_a_docstring(m)} == set(), \
        "modules missing from docs/architecture.md's layout"


def flow_functions() -> list[str]:
    """The dotted functions of the '## Flow of make export' section, in the order it gives them."""
    return re.findall(r"`(pipeline(?:\.\w+)+)\(\)`", _section("Flow of `make export`"))


def test_the_flow_names_functions_that_exist_in_the_order_export_calls_them():
    names = flow_functions()
    assert len(names) >= 15
    for dotted in names:
        module, func = dotted.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), func, None)), f"{dotted} does not exist"
    chain = (REPO / "pipeline" / "export.py").read_text().split("def run(", 1)[1]
    positions = []
    for dotted in names:
        module, func = dotted.rsplit(".", 1)
        call = f"{module.rsplit('.', 1)[1]}.{func}("
        assert call in chain, f"pipeline/export.py's run() does not call {call}"
        positions.append(chain.index(call))
    assert positions == sorted(positions), "the flow's order is not the order run() calls the stages in"


def test_no_module_outside_tests_is_longer_than_450_lines():
    long = {f: n for f in code_modules() if (n := len((REPO / f).read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_hashing_and_the_git_commit_are_defined_once():
    found = subprocess.run(["git", "grep", "-n", "-E", r"def .*sha256|def git_commit", "--", "*.py"],
                           capture_output=True, text=True, cwd=REPO).stdout.splitlines()
    outside = [line for line in found if not line.startswith(("edge_runtime/", "tests/"))]
    inside = [line for line in found if line.startswith("edge_runtime/")]
    assert [line.split(":")[0] for line in outside] == ["pipeline/release/provenance.py"] * 2, outside
    assert len(inside) <= 1, inside


@pytest.mark.parametrize("forbidden", ["pipeline", "tensorflow", "tf_keras"])
def test_edge_runtime_never_imports_the_pipeline_or_tensorflow(forbidden):
    pattern = rf"^\s*(from|import) {forbidden}\b"
    offenders = [f for f in code_modules() if f.startswith("edge_runtime/")
                 and re.search(pattern, (REPO / f).read_text(), re.M)]
    assert offenders == []

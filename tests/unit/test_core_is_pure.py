"""The decision core imports nothing that touches the OS (design.md: "Shape of the code")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import prefork

EFFECTS = {"os", "socket", "signal", "time", "selectors", "subprocess", "asyncio", "threading"}
PACKAGE = Path(prefork.__file__).parent


def imports_of(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def core_closure(start: str) -> dict[str, set[str]]:
    """Every prefork module ``start`` imports, directly or not, with its imports."""
    seen: dict[str, set[str]] = {}
    todo = [start]
    while todo:
        name = todo.pop()
        path = PACKAGE.parent / (name.replace(".", "/") + ".py")
        if name in seen or not path.exists():
            continue
        seen[name] = imports_of(path)
        todo += [n for n in seen[name] if n.startswith("prefork.")]
    return seen


def test_the_supervisor_and_everything_it_imports_are_pure() -> None:
    closure = core_closure("prefork.core._supervisor")
    assert {"prefork.core._supervisor", "prefork.core._roster", "prefork.core._events"} <= set(
        closure
    )
    dirty = {
        module: sorted(n for n in names if n.split(".")[0] in EFFECTS)
        for module, names in closure.items()
    }
    assert {m: d for m, d in dirty.items() if d} == {}


@pytest.mark.parametrize(
    "module",
    [
        "prefork.ops._control_protocol",
        "prefork.ops._metrics",
        "prefork.core._status",
        "prefork.core._ledger",
        "prefork.ops._accounts",
    ],
)
def test_what_the_console_decides_is_pure_too(module: str) -> None:
    closure = core_closure(module)
    assert module in closure
    dirty = {
        m: sorted(n for n in names if n.split(".")[0] in EFFECTS) for m, names in closure.items()
    }
    assert {m: d for m, d in dirty.items() if d} == {}


def test_the_check_would_see_an_effectful_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom time import monotonic\nfrom . import relative\n")
    assert {"os", "time", "time.monotonic"} <= imports_of(sample)

"""The package's layout, read from the code: which package may import which, a core that
touches nothing outside itself, and no import circle (design.md, "Shape of the code").

The rule, from the top down (an arrow: may import):

    cli -> _serve_command, load, ops, _flags, core      (each command imported when it runs)
    _serve_command -> http, master, _flags, core, config
    _flags -> core                                      (the flags of every command)
    load -> master, core, worker
    http -> core, worker
    master -> ops, core, config, worker
    ops -> core, config
    config, worker -> core
    core -> core only, and nothing that touches the OS

Imports under ``if TYPE_CHECKING:`` are for the type checker alone and are not counted.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

import prefork
from prefork.core._version import VERSION

PACKAGE = Path(prefork.__file__).parent
ROOT = PACKAGE.parent
#: Modules that touch the OS: none of them in the core.
EFFECTS = {
    "os", "socket", "signal", "time", "selectors", "subprocess", "asyncio", "threading",
    "multiprocessing", "fcntl", "resource", "ctypes", "uvloop", "select", "errno", "mmap",
}  # fmt: skip
#: What each part of the package may import (besides itself).
ALLOWED = {
    "core": set(),
    "config": {"core"},
    "worker": {"core"},
    "ops": {"core", "config"},
    "master": {"ops", "core", "config", "worker"},
    "http": {"core", "worker"},
    "load": {"master", "core", "worker"},
    "cli": {"_serve_command", "load", "ops", "_flags", "core"},
    "_serve_command": {"http", "master", "_flags", "core", "config"},
    "_flags": {"core"},
    "prefork": {"master", "core", "worker"},  # the public names, re-exported
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def part_of(module: str) -> str:
    """``core``, ``master``... for a subpackage's modules; the module's own name at the top
    (``config``, ``cli``); ``prefork`` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "prefork"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` counts ``a`` and ``a.b``), those
    under ``if TYPE_CHECKING:`` left out."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, f"{path}: relative import"  # grep-able
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def prefork_imports(module: str) -> set[str]:
    """The prefork modules ``module`` imports (a ``from pkg import name`` of a module names
    that module, not the package)."""
    found = {n for n in imports_of(MODULES[module]) if n in MODULES and n != module}
    return {n for n in found if not any(m.startswith(n + ".") for m in found)}


def test_each_package_says_what_it_owns() -> None:
    for name in ("core", "master", "ops", "http", "load"):
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and "import" in doc, f"prefork/{name}/__init__.py: say what it may import"


def test_imports_go_one_way() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module in MODULES
        for target in prefork_imports(module)
        if part_of(target) != part_of(module) and part_of(target) not in ALLOWED[part_of(module)]
    )
    assert wrong == []


def test_every_module_is_under_the_rule() -> None:
    assert {part_of(m) for m in MODULES} == set(ALLOWED)


def test_the_core_imports_nothing_that_touches_the_os() -> None:
    dirty = {
        module: sorted(n for n in imports_of(path) if n.split(".")[0] in EFFECTS)
        for module, path in MODULES.items()
        if part_of(module) == "core"
    }
    assert {m: d for m, d in dirty.items() if d} == {}
    assert "prefork.core._supervisor" in dirty  # the check saw the core


def test_no_circle_between_modules() -> None:
    graph = {m: prefork_imports(m) for m in MODULES}
    # An __init__ importing its own package's modules (a re-export) is no dependency of theirs.
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path, module]))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_checks_would_see_a_wrong_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom time import monotonic\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import socket\n"
    )
    assert {"os", "time", "time.monotonic"} <= imports_of(sample)
    assert "socket" not in imports_of(sample)
    sample.write_text("from . import relative\n")
    with pytest.raises(AssertionError, match="relative import"):
        imports_of(sample)


def test_the_version_is_pyprojects() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert VERSION == project["version"] == prefork.__version__

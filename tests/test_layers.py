"""The package's layers hold (import-linter's contracts in pyproject.toml), no module imports
another in a circle, and moving code between files changed no code fingerprint."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "scalelab"

# Computed on main at f3cff4f, before config.py and train.py were split (and so before any of
# their definitions moved): a finished study's train, trunk, tokenize, evaluate and aggregate
# jobs stay up to date only while these hold.
PINNED = {"tokenize": "13a8a528842bfa3f", "train": "d0fd280450117746", "train_wsd": "010dd84c70498f52",
          "evaluate": "f024ea4fd5b4552e", "aggregate": "cf5ecd1388b6c323"}


def test_lint_imports_keeps_every_contract():
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The scalelab modules `path` imports anywhere in it (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles_counting_imports_inside_functions():
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, name, set(files)) for name, path in files.items()}
    cycles, done = [], set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycles.append(trail[trail.index(name):] + [name])
            return
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, trail + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not cycles, cycles


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The test above can fail: two modules that import each other inside functions are found."""
    package = tmp_path / "scalelab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("def g():\n    from .a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    try:
        test_no_import_cycles_counting_imports_inside_functions()
    except AssertionError as exc:
        assert "scalelab.a" in str(exc) and "scalelab.b" in str(exc)
    else:
        raise AssertionError("the cycle a -> b -> a was not found")


def test_code_fingerprints_are_those_of_before_the_split():
    from scalelab.fingerprint import code_fingerprint

    assert {stage: code_fingerprint(stage) for stage in PINNED} == PINNED


def test_a_fingerprint_group_refuses_a_name_defined_in_two_of_its_files(tmp_path):
    import pytest

    from scalelab.fingerprint import module_fingerprint

    (tmp_path / "a.py").write_text("def f():\n    return g()\n\ndef g():\n    return 1\n")
    (tmp_path / "b.py").write_text("def g():\n    return 2\n")
    with pytest.raises(KeyError, match="g is also defined"):
        module_fingerprint((tmp_path / "a.py", tmp_path / "b.py"), ("f",))

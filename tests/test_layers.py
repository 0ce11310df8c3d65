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
PINNED = {
    "tokenize": "13a8a528842bfa3f",
    "train": "d0fd280450117746",
    "train_wsd": "010dd84c70498f52",
    "evaluate": "f024ea4fd5b4552e",
    "aggregate": "cf5ecd1388b6c323",
}


# Every stage, computed on main at 8a505fa, before the package was split by concern: a study
# finished then reruns nothing after the moves only while these hold. Kept apart from PINNED
# because fit, suggest and report pins change whenever their science changes (a cheap rerun of
# those jobs only): refresh those three here, with the reason, when fit/, suggest/ or report/ change.
# Refreshed for issues 26, 28, 29, 30 and 31 (rolling-origin checks and form mixing, metric laws,
# the curve laws' figure, the fit's row limit, suggest from the study's files, fit health in the
# report, BLEU and ROUGE-L prompt-noise bars, the metric forecasts' equal-weight mean of methods,
# predicted endpoints read by fit and suggest, suggest designing over every form's weight and drift,
# suggest's frontier share asked of the fit's draws of the frontier, the drift of N_opt read only from
# checks that add ln 2 e-folds of compute (and fit.txt saying so), suggest's frontier band widened by
# the fit's spread and said in suggest.txt, its design rid of resamples whose optimum does not move,
# its forecasts carrying the noise the fit has measured, frontier_draws returning the half-widths itself):
# a finished study reruns its fit, suggest and report jobs once, nothing else.
PINNED_EVERY_STAGE = {
    "tokenize": "13a8a528842bfa3f",
    "train": "d0fd280450117746",
    "train_wsd": "010dd84c70498f52",
    "tokenize_chunked": "e1a35490e026019c",
    "evaluate": "f024ea4fd5b4552e",
    "aggregate": "cf5ecd1388b6c323",
    "fit": "97c2c7a66ee10a21",
    "suggest": "56b781a0fd401f8c",
    "report": "95cb24af635ef850",
}


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
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
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
            cycles.append(trail[trail.index(name) :] + [name])
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
    from scalelab.store.fingerprint import code_fingerprint

    assert {stage: code_fingerprint(stage) for stage in PINNED} == PINNED


def test_every_stage_keeps_its_fingerprint_of_8a505fa():
    from scalelab.store.fingerprint import STAGE_CODE, code_fingerprint

    # stages added since 8a505fa ("tokenize_stream": a large corpus; "curves": the curve laws) have no
    # study of then to keep
    assert set(STAGE_CODE) - set(PINNED_EVERY_STAGE) == {"tokenize_stream", "curves"}
    assert {stage: code_fingerprint(stage) for stage in PINNED_EVERY_STAGE} == PINNED_EVERY_STAGE


def _package_copy(tmp_path, monkeypatch):
    import shutil

    from scalelab.store import fingerprint

    package = tmp_path / "scalelab"
    shutil.copytree(fingerprint.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE", package)
    monkeypatch.setattr(fingerprint, "UNITS", dict(fingerprint.UNITS))
    fingerprint.module_fingerprint.cache_clear()
    return fingerprint, package


def test_moving_or_splitting_code_keeps_every_fingerprint(tmp_path, monkeypatch):
    """A unit's files may move to another package, be split, and import differently: its label
    and its definitions, not its path, decide the hash."""
    fingerprint, package = _package_copy(tmp_path, monkeypatch)
    before = {stage: fingerprint.content_fingerprint(stage) for stage in fingerprint.STAGE_CODE}
    label = "evaluate.py"
    source, *others = fingerprint.UNITS[label]
    text = (package / source).read_text()
    lines = text.splitlines()
    tree = ast.parse(text)

    def segment(node):
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        return "\n".join(lines[start - 1 : node.end_lineno])

    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    half = len(defs) // 2
    (package / "moved").mkdir()
    (package / "moved" / "a.py").write_text("import torch\n\n" + "\n\n".join(segment(n) for n in defs[:half]))
    rest = [n for n in tree.body[1:] if n not in defs[:half]]  # without the module docstring
    (package / "moved" / "b.py").write_text("\n\n".join(segment(n) for n in rest) + "\nfrom .a import *\n")
    (package / source).unlink()
    fingerprint.UNITS[label] = ("moved/a.py", "moved/b.py", *others)
    fingerprint.module_fingerprint.cache_clear()
    assert {stage: fingerprint.content_fingerprint(stage) for stage in fingerprint.STAGE_CODE} == before
    assert fingerprint.code_fingerprint("evaluate") == PINNED["evaluate"]
    # and a change to what the code does still changes it
    text = (package / "moved" / "b.py").read_text()
    (package / "moved" / "b.py").write_text(text + "\n\nEXTRA = 1\n")
    fingerprint.module_fingerprint.cache_clear()
    assert fingerprint.content_fingerprint("evaluate") != before["evaluate"]
    assert fingerprint.code_fingerprint("evaluate") != PINNED["evaluate"]


def test_a_unit_moved_without_updating_its_label_fails(tmp_path, monkeypatch):
    import pytest

    fingerprint, package = _package_copy(tmp_path, monkeypatch)
    (package / fingerprint.UNITS["aggregate.py"][0]).rename(package / "elsewhere.py")
    with pytest.raises(FileNotFoundError, match="aggregate.py"):
        fingerprint.code_fingerprint("aggregate")


def test_a_fingerprint_group_refuses_a_name_defined_in_two_of_its_files(tmp_path):
    import pytest

    from scalelab.store.fingerprint import module_fingerprint

    (tmp_path / "a.py").write_text("def f():\n    return g()\n\ndef g():\n    return 1\n")
    (tmp_path / "b.py").write_text("def g():\n    return 2\n")
    with pytest.raises(KeyError, match="g is also defined"):
        module_fingerprint((tmp_path / "a.py", tmp_path / "b.py"), ("f",))

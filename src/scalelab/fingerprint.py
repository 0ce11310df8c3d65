"""Code fingerprints: which source files decide each stage's outputs.

Snakemake does not follow imports, so each rule gets a `code` param: a hash of the syntax
tree of the modules its stage depends on. Hashing the tree (without docstrings) rather than
the text means that editing a comment, a docstring or the formatting reruns nothing, while a
change to what the code does reruns exactly the stages that use it.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# The modules whose code decides each stage's outputs (the CLI plumbing is left out on purpose).
STAGE_MODULES = {
    "tokenize": ["data.py"],
    "train": ["model.py", "shapes.py", "train.py"],
    "evaluate": ["model.py", "shapes.py", "evaluate.py"],
    "aggregate": ["aggregate.py"],
    "fit": ["fit.py", "law.py"],
    "report": ["report/*.py", "report/*.css", "report/captions/**/*.rst", "law.py"],
}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=None)
def module_fingerprint(path: Path) -> str:
    """A Python module by its syntax tree; any other file (CSS, a caption) by its bytes."""
    if path.suffix != ".py":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _files(names: list[str]) -> list[str]:
    """The entries of STAGE_MODULES with each glob (`report/*.py`) expanded, sorted, in place."""
    expanded = []
    for name in names:
        if any(ch in name for ch in "*?["):
            expanded += sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.glob(name))
        else:
            expanded.append(name)
    return expanded


def code_fingerprint(stage: str) -> str:
    """A short hash of the code that decides `stage`'s outputs (a plain str, fit for a param)."""
    digest = hashlib.sha256()
    for name in _files(STAGE_MODULES[stage]):
        path = PACKAGE / name
        digest.update(name.encode())
        digest.update(module_fingerprint(path).encode() if path.exists() else b"missing")
    return digest.hexdigest()[:16]

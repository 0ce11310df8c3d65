"""Code fingerprints: which code decides each stage's outputs.

Snakemake does not follow imports, so each rule gets a `code` param: a hash of the syntax tree
of the code its stage's numbers depend on. Hashing the tree (without docstrings) rather than the
text means that editing a comment, a docstring or the formatting reruns nothing.

A stage names whole modules, or *roots* inside a module: then only those top-level definitions
count, together with every top-level definition of the same module that they use, found by
following names through the syntax tree. So for `train` the model, the step, the schedule, the
data order and the Trainer's settings decide the fingerprint, while the code that checks inputs,
collects metrics, writes files or keeps the run store can be restructured without retraining
anything. A change to a helper that a root uses still changes the fingerprint.

A module's name is part of the hash. When definitions move to other files, `SOURCES` maps the
old name (the label that is hashed) to the files that hold them now, read as one module, so
moving code between files reruns nothing while changing it still does.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# stage -> [(module or glob, roots)]; roots None = the whole file
STAGE_CODE: dict[str, list[tuple[str, tuple[str, ...] | None]]] = {
    "tokenize": [("data.py", ("build_tokens", "write_data"))],
    "train": [("model.py", None), ("shapes.py", None),
              ("train.py", ("configure_torch", "build_module", "build_trainer", "TokenData", "total_steps",
                            "DivergenceGuard", "CurveRecorder"))],
    "evaluate": [("model.py", None), ("shapes.py", None), ("evaluate.py", None)],
    "aggregate": [("aggregate.py", None), ("config.py", ("run_id",))],  # run_id names a sweep's group
    # the whole fit package, the law, and FitSettings (its defaults decide what a spec leaves out)
    "fit": [("fit/*.py", None), ("law.py", None), ("settings.py", ("FitSettings",))],
    # the whole report package: its modules, CSS and captions (globs are expanded, sorted)
    # the design, its law adapter and the shapes its snippet builds
    "suggest": [("suggest/*.py", None), ("law.py", None), ("shapes.py", None),
                ("settings.py", ("SuggestSettings",))],
    "curves": [("curves/*.py", None), ("wsd.py", ("lr_factor", "branch_step", "warmup_steps", "family_id")),
               ("train.py", ("lr_factor", "warmup_steps_for"))],
    "report": [("report/*.py", None), ("report/*.css", None), ("report/captions/**/*.rst", None), ("law.py", None),
               ("settings.py", ("ReportSettings",))],
}
# label -> the files whose top-level definitions it stands for (read as one module). The train
# code was train.py and the corpus helpers lived in data.py; their fingerprints keep those names.
SOURCES: dict[str, tuple[str, ...]] = {
    "train.py": ("train/schedule.py", "train/module.py", "train/batches.py", "train/callbacks.py",
                 "train/trainer.py"),
    "data.py": ("data.py", "corpus.py"),
    "config.py": ("counts.py",),  # run_id and the count spelling it uses
}
# A corpus with a text file over data.source.max_document_bytes: the tokenize code, the chunked
# build (data.build_tokens_chunked) and the splitting of large files (scalelab.chunking). Apart
# from "tokenize", so no other study retokenizes.
STAGE_CODE["tokenize_chunked"] = [("data.py", ("build_tokens", "write_data", "build_tokens_chunked")),
                                  ("chunking.py", None)]
# A `schedule: wsd` run and its trunk: the train code plus the WSD schedule, its branch points and
# the trunk's training. Kept apart from "train", so adding WSD reran no cosine/linear/constant run.
STAGE_CODE["train_wsd"] = [
    *STAGE_CODE["train"],
    ("train.py", ("LitWSD", "build_wsd_module")),
    ("wsd.py", ("lr_factor", "branch_step", "warmup_steps", "total_steps", "family_spec")),
]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _definitions(tree: ast.Module) -> dict[str, ast.AST]:
    """Top-level functions, classes and assigned names of a module."""
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


def _module_definitions(paths: tuple[Path, ...], strip: bool) -> dict[str, ast.AST]:
    """The top-level definitions of these files read as one module (a name defined twice is an error)."""
    found: dict[str, ast.AST] = {}
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, node in _definitions(_strip_docstrings(tree) if strip else tree).items():
            if name in found:
                raise KeyError(f"{path.name}: {name} is also defined in another file of its fingerprint group")
            found[name] = node
    return found


def used_definitions(path: Path | tuple[Path, ...], roots: tuple[str, ...]) -> list[str]:
    """The roots and every top-level definition of the module they use, transitively (sorted);
    `path` may be several files read as one module."""
    paths = (path,) if isinstance(path, Path) else tuple(path)
    definitions = _module_definitions(paths, strip=False)
    missing = [r for r in roots if r not in definitions]
    if missing:
        raise KeyError(f"{paths[0].name}: no top-level {', '.join(missing)} (fingerprint roots)")
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(definitions[name]):
            if isinstance(node, ast.Name) and node.id in definitions and node.id not in seen:
                todo.append(node.id)
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def module_fingerprint(path: Path | tuple[Path, ...], roots: tuple[str, ...] | None = None) -> str:
    """A Python module by its syntax tree (or only its roots' part of it); any other file (CSS, a
    caption) by its bytes. Several files (a tuple) count as one module and need roots."""
    if isinstance(path, tuple):
        if roots is None:
            raise ValueError("a fingerprint group of several files needs roots")
        paths = path
    else:
        if path.suffix != ".py":
            return hashlib.sha256(path.read_bytes()).hexdigest()
        tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
        if roots is None:
            return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()
        paths = (path,)
    definitions = _module_definitions(paths, strip=True)
    digest = hashlib.sha256()
    for name in used_definitions(paths, roots):
        digest.update(name.encode() + b"\0" + ast.dump(definitions[name], include_attributes=False).encode())
    return digest.hexdigest()


def code_fingerprint(stage: str) -> str:
    """A short hash of the code that decides `stage`'s outputs (a plain str, fit for a param)."""
    digest = hashlib.sha256()
    for name, roots in stage_files(stage):
        digest.update(name.encode())
        if name in SOURCES:
            paths = tuple(PACKAGE / source for source in SOURCES[name])
            digest.update(module_fingerprint(paths, roots).encode())  # a missing file fails: it was moved
            continue
        path = PACKAGE / name
        digest.update(module_fingerprint(path, roots).encode() if path.exists() else b"missing")
    return digest.hexdigest()[:16]


def stage_files(stage: str) -> list[tuple[str, tuple[str, ...] | None]]:
    """STAGE_CODE[stage] with each glob (`report/*.py`) expanded, sorted, in place."""
    files = []
    for pattern, roots in STAGE_CODE[stage]:
        if any(ch in pattern for ch in "*?["):
            files += [(p.relative_to(PACKAGE).as_posix(), roots) for p in sorted(PACKAGE.glob(pattern))]
        else:
            files.append((pattern, roots))
    return files

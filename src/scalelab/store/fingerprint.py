"""Code fingerprints: which code decides each stage's outputs, named by content, not by path.

Snakemake does not follow imports, so each rule gets a `code` param: a hash of the syntax tree
of the code its stage's numbers depend on. Hashing the tree (without docstrings) rather than the
text means that editing a comment, a docstring or the formatting reruns nothing.

Every hashed unit of code has a stable *label* (`UNITS`: label -> the files that hold it now,
read as one module). A stage (`STAGE_CODE`) names labels, each whole or by *roots*: then only
those top-level definitions count, together with every top-level definition of the unit that
they use, found by following names through the syntax tree. A unit is hashed by its top-level
definitions (name and tree), never by its file names or its imports, so moving definitions
between files, splitting a file or moving it to another package reruns nothing, while changing
what a definition does still does. So for `train` the model, the step, the schedule, the data
order and the Trainer's settings decide the fingerprint, while the code that checks inputs,
collects metrics, writes files or keeps the run store can be restructured without retraining.

Studies finished before the labels existed carry fingerprints of the older, path-based hash.
`LEGACY` keeps them: when a stage's code is exactly what it was then (its content hash is the
one recorded), the stage keeps the fingerprint it had; any change to that code gives the new,
content-based value, and reruns the stage as a change should.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # src/scalelab

# label -> the files (or globs, expanded sorted) whose top-level definitions it stands for. The
# labels are the file names the code had when its studies were first fingerprinted; moving or
# splitting the code changes only the right-hand side.
UNITS: dict[str, tuple[str, ...]] = {
    "model.py": ("model.py",),
    "shapes.py": ("plan/shapes.py",),
    "train.py": ("train/schedule.py", "train/module.py", "train/batches.py", "train/callbacks.py", "train/trainer.py"),
    "wsd.py": ("plan/wsd.py",),
    "data.py": ("data/tokenize.py", "data/corpus.py"),
    "chunking.py": ("data/chunking.py",),
    "stream.py": ("data/stream.py",),
    "evaluate.py": ("evaluate/command.py", "evaluate/generation.py"),
    "aggregate.py": ("evaluate/aggregate.py",),
    "config.py": ("config/counts.py",),  # run_id and the count spelling it uses
    "law.py": ("laws/law.py",),
    "settings.py": ("config/stage_settings.py",),
}
# A unit whose label is a glob of the package (`fit/*.py`) is one unit per file, labelled by its
# path: editing those packages reruns only their own cheap jobs.

# stage -> [(label or glob, roots)]; roots None = every top-level definition of the unit. The
# order of the stages is the order `scalelab --version` and the report's settings list them.
STAGE_CODE: dict[str, list[tuple[str, tuple[str, ...] | None]]] = {
    "tokenize": [("data.py", ("build_tokens", "write_data"))],
    "train": [
        ("model.py", None),
        ("shapes.py", None),
        (
            "train.py",
            (
                "configure_torch",
                "build_module",
                "build_trainer",
                "TokenData",
                "total_steps",
                "DivergenceGuard",
                "CurveRecorder",
            ),
        ),
    ],
    "evaluate": [("model.py", None), ("shapes.py", None), ("evaluate.py", None)],
    "aggregate": [("aggregate.py", None), ("config.py", ("run_id",))],  # run_id names a sweep's group
    # the whole fit package, the law, and FitSettings (its defaults decide what a spec leaves out)
    "fit": [("fit/*.py", None), ("law.py", None), ("settings.py", ("FitSettings",))],
    # the design, its law adapter and the shapes its snippet builds
    "suggest": [("suggest/*.py", None), ("law.py", None), ("shapes.py", None), ("settings.py", ("SuggestSettings",))],
    # the curve laws, and the lr schedules they read (the WSD plan's and the train package's)
    "curves": [
        ("curves/*.py", None),
        ("wsd.py", ("lr_factor", "branch_step", "warmup_steps", "family_id")),
        ("train.py", ("lr_factor", "warmup_steps_for")),
    ],
    # the whole report package: its modules, CSS and captions
    "report": [
        ("report/*.py", None),
        ("report/*.css", None),
        ("report/captions/**/*.rst", None),
        ("law.py", None),
        ("settings.py", ("ReportSettings",)),
    ],
    # A corpus with a text file over data.source.max_document_bytes: the tokenize code, the chunked
    # build and the splitting of large files. Apart from "tokenize", so no other study retokenizes.
    "tokenize_chunked": [("data.py", ("build_tokens", "write_data", "build_tokens_chunked")), ("chunking.py", None)],
    # A corpus over scalelab.data.stages.STREAM_MIN_BYTES, or a hub dataset: the streaming build, the
    # in-memory build's helpers it uses, and the splitting of large files. Apart from "tokenize" and
    # "tokenize_chunked" (same bytes, other code), so no study tokenized before retokenizes.
    "tokenize_stream": [
        (
            "data.py",
            (
                "DOCUMENT_BUILDERS",
                "EOT",
                "SEP",
                "SPLITS",
                "Document",
                "check_split_sizes",
                "culprit",
                "document_bytes",
                "encode_documents",
                "first_line",
                "split_of",
                "token_dtype",
                "train_tokenizer",
            ),
        ),
        ("chunking.py", None),
        ("stream.py", None),
    ],
}
# A `schedule: wsd` run and its trunk: the train code plus the WSD schedule, its branch points and
# the trunk's training. Kept apart from "train", so adding WSD reran no cosine/linear/constant run.
STAGE_CODE["train_wsd"] = [
    *STAGE_CODE["train"],
    ("train.py", ("LitWSD", "build_wsd_module")),
    ("wsd.py", ("lr_factor", "branch_step", "warmup_steps", "total_steps", "family_spec")),
]

# stage -> (its content hash at 8a505fa, the path-based fingerprint its studies carry): see above.
LEGACY: dict[str, tuple[str, str]] = {
    "tokenize": ("4445065f875b8a88", "13a8a528842bfa3f"),
    "train": ("67c345d10968cffe", "d0fd280450117746"),
    "evaluate": ("8ba6fd2bec176db9", "f024ea4fd5b4552e"),
    "aggregate": ("87c0a7fb7f22cb79", "cf5ecd1388b6c323"),
    "fit": ("1ddbd3f98a5c6cf6", "a9a8e5e543c93565"),
    "suggest": ("1c7fe0c5865a0c4c", "1326aababd6c0e97"),
    "report": ("1cc1421f4498b7e7", "15fd74dc671a24c3"),
    "tokenize_chunked": ("1e6bd8da15f5cbdc", "e1a35490e026019c"),
    "train_wsd": ("d4552675bcf1bb81", "010dd84c70498f52"),
}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


class _ImportsByName(ast.NodeTransformer):
    """An import by the names it binds, not the module path it reads them from: where code lives
    is no part of what it does (the code it binds is its own unit, hashed where a stage names it)."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        return ast.Import(names=[ast.alias(name=a.asname or a.name) for a in node.names])

    def visit_Import(self, node: ast.Import) -> ast.AST:
        return ast.Import(names=[ast.alias(name=a.asname or a.name) for a in node.names])


def _names(node: ast.AST) -> list[str]:
    """The names a top-level statement defines ([] for an import or a bare expression)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


def _unit_statements(paths: tuple[Path, ...]) -> tuple[dict[str, ast.AST], list[ast.AST]]:
    """The top-level definitions of these files read as one module (a name defined twice is an
    error), and their other statements that are not imports (`matplotlib.use("Agg")`), in order."""
    found: dict[str, ast.AST] = {}
    other: list[ast.AST] = []
    for path in paths:
        tree = _ImportsByName().visit(_strip_docstrings(ast.parse(path.read_text(), filename=str(path))))
        for node in tree.body:
            names = _names(node)
            if not names and not isinstance(node, (ast.Import, ast.ImportFrom, ast.Pass)):
                other.append(node)
            for name in names:
                if name in found and found[name] is not node:
                    raise KeyError(f"{path.name}: {name} is also defined in another file of its fingerprint group")
                found[name] = node
    return found, other


def used_definitions(path: Path | tuple[Path, ...], roots: tuple[str, ...]) -> list[str]:
    """The roots and every top-level definition of the unit they use, transitively (sorted);
    `path` may be several files read as one module."""
    paths = (path,) if isinstance(path, Path) else tuple(path)
    definitions, _ = _unit_statements(paths)
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
    """A unit of Python code by its top-level definitions (all, or its roots' part), whatever
    files hold them; any other file (CSS, a caption) by its bytes."""
    paths = (path,) if isinstance(path, Path) else tuple(path)
    if len(paths) == 1 and paths[0].suffix != ".py":
        return hashlib.sha256(paths[0].read_bytes()).hexdigest()
    definitions, other = _unit_statements(paths)
    names = used_definitions(paths, roots) if roots is not None else sorted(definitions)
    digest = hashlib.sha256()
    done = set()
    for name in names:
        node = definitions[name]
        if id(node) in done:  # `a, b = ...` defines two names in one statement
            continue
        done.add(id(node))
        digest.update(name.encode() + b"\0" + ast.dump(node, include_attributes=False).encode())
    if roots is None:
        for node in other:
            digest.update(b"\0" + ast.dump(node, include_attributes=False).encode())
    return digest.hexdigest()


def unit_files(label: str) -> tuple[Path, ...]:
    """The files that hold a label's code now (a missing one fails: it was moved without UNITS)."""
    paths = tuple(PACKAGE / source for source in UNITS.get(label, (label,)))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"fingerprint unit {label}: no {missing[0]} (moved without updating UNITS?)")
    return paths


def content_fingerprint(stage: str) -> str:
    """A short hash of the code that decides `stage`'s outputs, by content and labels only."""
    digest = hashlib.sha256()
    for label, roots in stage_units(stage):
        digest.update(label.encode() + b"\0")
        digest.update(module_fingerprint(unit_files(label), roots).encode())
    return digest.hexdigest()[:16]


def code_fingerprint(stage: str) -> str:
    """A short hash of the code that decides `stage`'s outputs (a plain str, fit for a param):
    the fingerprint studies already carry while the code is what it was (LEGACY)."""
    content = content_fingerprint(stage)
    recorded, legacy = LEGACY.get(stage, ("", ""))
    return legacy if content == recorded else content


def stage_units(stage: str) -> list[tuple[str, tuple[str, ...] | None]]:
    """STAGE_CODE[stage] with each glob (`report/*.py`) expanded, sorted, in place, to labels."""
    units = []
    for pattern, roots in STAGE_CODE[stage]:
        if any(ch in pattern for ch in "*?["):
            units += [(p.relative_to(PACKAGE).as_posix(), roots) for p in sorted(PACKAGE.glob(pattern))]
        else:
            units.append((pattern, roots))
    return units


def stage_files(stage: str) -> list[Path]:
    """Every file whose code decides `stage` (for tests and docs), in the stage's order."""
    return [path for label, _ in stage_units(stage) for path in unit_files(label)]

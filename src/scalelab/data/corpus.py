"""The corpus and its token budget: what decides the tokens, the corpus files' fingerprint,
results/data/meta.json, and the one check that the splits can feed a grid.

Imported at DAG-build time (the Snakefile), by `tokenize` and by `train`: standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from pathlib import Path

from .chunking import DEFAULT_MAX_DOCUMENT_BYTES
from ..config.load import source_files
from ..errors import ScalelabError


def data_settings(config: dict) -> dict:
    """The data section as the tokenize stage sees it (plain JSON types). `allow_repeat` is left
    out: it permits runs longer than the corpus but changes no token, so it decides nothing."""
    settings = json.loads(json.dumps({k: v for k, v in config["data"].items() if k != "allow_repeat"}))
    source = settings.get("source")
    if isinstance(source, dict) and source.get("max_document_bytes") == DEFAULT_MAX_DOCUMENT_BYTES:
        source.pop("max_document_bytes")  # at its default: left out, so the data fingerprint is as before
    return settings


def data_fingerprint(config: dict) -> str:
    """Hash of the settings that decide the tokens; a changed corpus or tokenizer reruns all."""
    return hashlib.sha256(json.dumps(data_settings(config), sort_keys=True).encode()).hexdigest()[:16]


def stdlib_files() -> list[Path]:
    """The .py files of the running Python's standard library, without installed packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in ("site-packages", "dist-packages", "__pycache__")]
        files.extend(Path(folder) / name for name in names if name.endswith(".py"))
    return sorted(files)


def data_requirements(runs, allow_repeat: bool) -> dict[str, int]:
    """Tokens each split must hold for these runs: the train split every run's D (unless data may
    repeat) and a window of context + 1 tokens; val and test one such window each."""
    runs = list(runs)
    window = max(r.spec["context"] for r in runs) + 1
    train = window if allow_repeat else max(window, max(r.tokens for r in runs))
    return {"train": train, "val": window, "test": window}


def check_splits(required: dict[str, int], split_tokens: dict[str, int], where: str) -> None:
    """The one token-budget check (DAG build, tokenize and train all call it): one line naming
    the setting to change."""
    for split in ("train", "val", "test"):
        need, have = required.get(split, 0), split_tokens.get(split, 0)
        if need <= have:
            continue
        if split == "train":
            fix = (
                "lower grid.tokens or set data.allow_repeat: true"
                if need > required.get("val", 0)
                else "lower train.context"
            )
            raise ScalelabError(
                f"{where}: the train split has {have:,} tokens but the grid needs {need:,}; add data or {fix}"
            )
        raise ScalelabError(
            f"{where}: the {split} split has {have:,} tokens but one context window needs "
            f"{need:,}; raise data.split.{split} or add documents"
        )


def corpus_fingerprint(config: dict, base: Path = Path(".")) -> str:
    """A cheap fingerprint of the corpus files (names, sizes, mtimes), so that changed files
    rerun `tokenize` even when the config did not change. Hub sources are named by the config."""
    source = config["data"]["source"]
    if source == "python-stdlib":
        files = stdlib_files()
    elif "files" in source:
        files = source_files(config, base)
    else:
        return "hub"
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def read_meta(meta_path: str | Path) -> dict | None:
    """results/data/meta.json if it is whole and agrees with the token files beside it, else None
    (missing or damaged: the workflow then retokenizes)."""
    meta_path = Path(meta_path)
    try:
        meta = json.loads(meta_path.read_text())
        itemsize = 2 if meta["dtype"] == "uint16" else 4
        for split in ("train", "val", "test"):
            if (meta_path.parent / f"{split}.bin").stat().st_size != meta["splits"][split]["tokens"] * itemsize:
                return None
        if not isinstance(meta["tokenizer"]["fingerprint"], str) or not isinstance(meta["settings"], dict):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_corpus_budget(config: dict, runs, meta: dict | None) -> None:
    """Once the corpus is tokenized, reject a grid that its splits cannot feed."""
    if meta is None or meta.get("settings") != data_settings(config):
        return  # the data will be (re)tokenized; `tokenize` checks the new splits itself
    split_tokens = {split: meta["splits"][split]["tokens"] for split in ("train", "val", "test")}
    check_splits(data_requirements(runs, config["data"]["allow_repeat"]), split_tokens, "results/data/meta.json")

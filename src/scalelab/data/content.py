"""The corpus by content: a SHA-256 over every corpus file's bytes, so that an edit that keeps a
file's size (and the file count and total bytes that meta.json's corpus record compares) is seen.

Each file's hash is cached by (path, size, mtime_ns, inode, ctime_ns) in results/.corpus_content.json,
so a no-op dry run reads no corpus bytes (ctime too: an in-place write that restores the mtime keeps
the size, mtime and inode). The tokenize command records the digest in meta.json
(`corpus.content_sha256`; not part of the data identity, so no run id changes); a meta.json
written before has none, and its digest is trusted on first sight (kept in the cache, by the
meta.json's own hash) and compared on later runs. An `hf:` local folder (save_to_disk, or data
files) is hashed by all its files; a hub dataset or the stdlib corpus is not hashed here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..files import file_sha256, write_json

# {"files": {path: [size, mtime_ns, inode, ctime_ns, sha256]}, "trusted": {meta.json sha: digest}}
CACHE = ".corpus_content.json"


def content_files(data_cfg: dict, files: list[Path]) -> list[Path]:
    """The files whose bytes are the corpus: data.source.files' matches, or an `hf:` local folder's files."""
    if files:
        return list(files)
    source = data_cfg.get("source")
    if isinstance(source, dict) and isinstance(source.get("hf"), str):
        folder = Path(source["hf"]).expanduser()
        if folder.is_dir():
            return sorted(p for p in folder.rglob("*") if p.is_file())
    return []


def _load(path: Path | None) -> dict:
    try:
        cache = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def digest(files: list[Path], cache: dict | None = None) -> tuple[str, list[str]]:
    """(SHA-256 over the files' names and content hashes, the files whose content changed since
    `cache` last saw them); `cache["files"]` is updated in place."""
    known = cache.setdefault("files", {}) if cache is not None else {}
    total, changed = hashlib.sha256(), []
    for path in files:
        stat = os.stat(path)
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
        cached = known.get(str(path))
        if isinstance(cached, list) and cached[:4] == key:
            sha = cached[4]
        else:
            sha = file_sha256(path)
            if isinstance(cached, list) and len(cached) == 5 and cached[4] != sha:
                changed.append(str(path))
            known[str(path)] = [*key, sha]
        total.update(f"{path}\0{sha}\n".encode())
    return total.hexdigest(), changed


def record(meta_path: Path, data_cfg: dict, files: list[Path]) -> None:
    """Add the corpus content digest to a meta.json just written by tokenize."""
    meta = json.loads(Path(meta_path).read_text())
    paths = content_files(data_cfg, files)
    if paths:
        meta["corpus"]["content_sha256"] = digest(paths)[0]
        write_json(meta_path, meta)


def why_changed(results: Path, meta: dict, data_cfg: dict, files: list[Path]) -> str | None:
    """Why the corpus is not the one results/data was tokenized from (by content), or None."""
    paths = content_files(data_cfg, files)
    if not paths:
        return None
    cache_path = Path(results) / CACHE
    cache = _load(cache_path)
    before = json.dumps(cache, sort_keys=True)
    now, changed = digest(paths, cache)
    recorded = (meta.get("corpus") or {}).get("content_sha256")
    if recorded is None:  # tokenized before the digest was recorded: trusted on first sight
        meta_sha = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        trusted = cache.setdefault("trusted", {})
        recorded = trusted.setdefault(meta_sha, now)
    if json.dumps(cache, sort_keys=True) != before and Path(results).is_dir():
        try:
            write_json(cache_path, cache)
        except OSError:
            pass  # a read-only results folder: hashed again next time
    if now == recorded:
        return None
    named = f"corpus file {changed[0]} changed" if changed else "the corpus files' content changed"
    return f"{named} since it was tokenized"

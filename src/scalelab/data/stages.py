"""Which tokenize build, and so which code fingerprint, a study's tokenize job takes.

- "tokenize": the in-memory build (scalelab.data.tokenize.build_tokens);
- "tokenize_chunked": the same, for a corpus with a text file over data.source.max_document_bytes;
- "tokenize_stream": the streaming build (scalelab.data.stream), for a corpus of more than
  STREAM_MIN_BYTES (files, or a local `hf:` folder's files) or a hub dataset (its size is unknown
  when the DAG is built). It writes the same bytes as the in-memory build and holds a bounded
  amount of memory whatever the corpus size; the in-memory build holds about 7-8x the corpus.

A study tokenized in memory before the streaming build existed keeps its stage, so its
fingerprint, its tokens and every job after them stay as they were: while results/data/meta.json
holds this corpus and these settings (`meta`, the same check as scalelab.plan.integrity.stale_data)
and does not record the streaming build. Standard library only: imported at DAG-build time.
"""

from __future__ import annotations

from pathlib import Path

from . import chunking
from .corpus import data_settings

STREAM_MIN_BYTES = 100_000_000  # a larger corpus streams (the in-memory build would hold ~0.8 GB)
STREAM_BUILD = "stream"  # meta.json's corpus.build for the streaming build (absent: in memory)


def corpus_bytes(data_cfg: dict, files: list[Path]) -> int | None:
    """The corpus size on disk: its files, a local `hf:` folder's files, 0 for python-stdlib (about
    30 MB, always in memory), or None for a hub dataset."""
    source = data_cfg["source"]
    if files:
        return sum(p.stat().st_size for p in files)
    if isinstance(source, dict) and "hf" in source:
        folder = Path(source["hf"]).expanduser()
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else None
    return 0


def _kept_in_memory(meta: dict, data_cfg: dict, files: list[Path]) -> bool:
    """meta.json was written by the in-memory build from this corpus with these settings."""
    corpus = meta.get("corpus") or {}
    if corpus.get("build") == STREAM_BUILD or meta.get("settings") != data_settings({"data": data_cfg}):
        return False
    return not files or (
        corpus.get("files") == len(files) and corpus.get("file_bytes") == sum(p.stat().st_size for p in files)
    )


def tokenize_stage(data_cfg: dict, files: list[Path], meta: dict | None = None) -> str:
    """The stage name for code_fingerprint: "tokenize", "tokenize_chunked" or "tokenize_stream".

    `files` are the corpus files (config.load.source_files); `meta` today's results/data/meta.json
    (corpus.read_meta), or None. `scalelab tokenize` passes no meta: a job that runs rebuilds."""
    in_memory = "tokenize_chunked" if chunking.large_files(data_cfg, files) else "tokenize"
    size = corpus_bytes(data_cfg, files)
    if size is not None and size <= STREAM_MIN_BYTES:
        return in_memory
    if meta is not None and _kept_in_memory(meta, data_cfg, files):
        return in_memory
    return "tokenize_stream"


def held_bytes(files: list[Path], stage: str) -> int:
    """The corpus bytes a tokenize job's memory grows with (plan.resources.tokenize_mem_mb): the
    corpus for an in-memory build; for the streaming build, whose memory does not grow with the
    corpus, no more than STREAM_MIN_BYTES."""
    size = sum(p.stat().st_size for p in files)
    return min(size, STREAM_MIN_BYTES) if stage == "tokenize_stream" else size

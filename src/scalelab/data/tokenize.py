"""The `tokenize` stage: corpus -> document split -> byte-level BPE -> token memmaps.

Documents come from the running Python's standard library (the default corpus every machine
has), from local text/JSONL/parquet/CSV files, or from the Hugging Face hub, the last two
through `datasets`. Each document goes to train, val or test by a hash of its text, so the
split is deterministic and a document keeps its split when the corpus grows.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sysconfig
import time
from pathlib import Path

import numpy as np

from . import chunking
from .corpus import check_splits, stdlib_files
from ..errors import ScalelabError
from ..files import atomic_path, write_json, write_text

EOT, SEP = "<|endoftext|>", "<|sep|>"
SPLITS = ("train", "val", "test")
OUTPUTS = ("tokenizer.json", "train.bin", "val.bin", "test.bin", "meta.json")
_BUILDERS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".py": "text",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}

# A document is a text, or a (source, target) pair for `pairs` corpora.
Document = str | tuple[str, str]


# ----------------------------------------------------------------------------- loading


def _read_stdlib() -> tuple[list[str], dict]:
    documents, skipped, files = [], 0, stdlib_files()
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            skipped += 1  # a few test files are deliberately not UTF-8
            continue
        if text.strip():
            documents.append(text)
    return documents, {
        "source": "python-stdlib",
        "root": str(Path(sysconfig.get_paths()["stdlib"])),
        "files": len(files) - skipped,
        "files_skipped": skipped,
    }


def _column(dataset, field: str, where: str) -> list:
    if field not in dataset.column_names:
        raise ScalelabError(f"{where}: no field {field!r} (fields: {', '.join(dataset.column_names)})")
    return dataset[field]


def _documents_from(dataset, data_cfg: dict, where: str) -> list[Document]:
    pairs = data_cfg.get("pairs")
    if pairs:
        sources = _column(dataset, pairs["source_field"], where)
        targets = _column(dataset, pairs["target_field"], where)
        return [(str(s), str(t)) for s, t in zip(sources, targets) if s and t]
    field = data_cfg["source"].get("text_field", "text")
    return [str(t) for t in _column(dataset, field, where) if t and str(t).strip()]


def _read_files(data_cfg: dict, base: Path) -> tuple[list[Document], dict]:
    import datasets

    from ..config.load import source_files

    source = data_cfg["source"]
    files = source_files({"data": data_cfg}, base)
    by_builder: dict[str, list[str]] = {}
    for path in files:
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ScalelabError(f"{path}: unsupported file type (use .txt, .jsonl, .json, .parquet or .csv)")
        by_builder.setdefault(builder, []).append(str(path))
    documents: list[Document] = []
    datasets.disable_progress_bars()
    for builder, paths in by_builder.items():
        kwargs = {"sample_by": source.get("sample_by", "document")} if builder == "text" else {}
        try:
            dataset = datasets.load_dataset(builder, data_files=paths, split="train", **kwargs)
        except Exception as exc:  # datasets raises many types for a malformed file
            raise ScalelabError(
                f"{_culprit(builder, paths, kwargs)}: could not read as {builder} ({_first_line(exc)})"
            ) from None
        if builder == "text" and data_cfg.get("pairs"):
            raise ScalelabError(
                f"{paths[0]}: a pairs corpus needs .jsonl/.parquet/.csv files with source and target fields"
            )
        # Plain-text files always come as a `text` column; text_field names the column of the others.
        as_read = {**data_cfg, "source": {**source, "text_field": "text"}} if builder == "text" else data_cfg
        documents.extend(_documents_from(dataset, as_read, paths[0]))
    info = {
        "source": "files",
        "patterns": source["files"],
        "files": len(files),
        "file_bytes": sum(p.stat().st_size for p in files),
    }
    return documents, info


def _culprit(builder: str, paths: list[str], kwargs: dict) -> str:
    """The first of `paths` that fails to load alone (datasets reports a batch, not a file)."""
    import datasets

    for path in paths:
        if builder == "text":
            try:
                Path(path).read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                return path
            continue
        try:
            datasets.load_dataset(builder, data_files=[path], split="train", **kwargs)
        except Exception:
            return path
    return paths[0] if len(paths) == 1 else f"{paths[0]} (or another of {len(paths)} {builder} files)"


def _read_hub(data_cfg: dict) -> tuple[list[Document], dict]:
    """datasets.load_dataset: a hub name, or a local dataset folder; honours HF_*_OFFLINE."""
    import datasets

    source = data_cfg["source"]
    datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset(
            source["hf"], source.get("name"), split=source.get("split", "train"), revision=source.get("revision")
        )
    except Exception as exc:
        raise ScalelabError(f"data.source.hf: could not load {source['hf']!r} ({_first_line(exc)})") from None
    if source.get("max_documents"):
        dataset = dataset.select(range(min(len(dataset), source["max_documents"])))
    documents = _documents_from(dataset, data_cfg, f"data.source.hf {source['hf']!r}")
    info = {
        "source": "hf",
        "hf": source["hf"],
        "name": source.get("name"),
        "split": source.get("split", "train"),
        "revision": source.get("revision"),
        "rows": len(dataset),
    }
    return documents, info


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_documents(data_cfg: dict, base: Path = Path(".")) -> tuple[list[Document], dict]:
    source = data_cfg["source"]
    if source == "python-stdlib":
        documents, info = _read_stdlib()
    elif "files" in source:
        documents, info = _read_files(data_cfg, base)
    else:
        documents, info = _read_hub(data_cfg)
    if not documents:
        raise ScalelabError(f"data.source: the corpus has no non-empty documents ({json.dumps(info)})")
    return documents, info


# ----------------------------------------------------------------------------- splitting


def _doc_bytes(doc: Document) -> bytes:
    return doc.encode("utf-8") if isinstance(doc, str) else f"{doc[0]}\x00{doc[1]}".encode("utf-8")


def split_of(doc: Document, val: float, test: float) -> str:
    """test, val or train by a hash of the document: deterministic, and stable as the corpus grows."""
    u = _split_position(doc)
    return "test" if u < test else "val" if u < test + val else "train"


def split_documents(documents: list[Document], val: float, test: float) -> dict[str, list[Document]]:
    splits: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for doc in documents:
        splits[split_of(doc, val, test)].append(doc)
    return splits


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts, vocab_size: int):
    """Byte-level BPE (GPT-2 style) trained with `tokenizers`; ids 0 and 1 are EOT and SEP."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT, SEP],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _texts(documents: list[Document]):
    for doc in documents:
        if isinstance(doc, str):
            yield doc
        else:
            yield from doc


def encode_documents(tokenizer, documents: list[Document], dtype, chunk: int = 512) -> np.ndarray:
    """Token ids of all documents, each followed by EOT (pairs: source SEP target EOT)."""
    eot, sep = tokenizer.token_to_id(EOT), tokenizer.token_to_id(SEP)
    pieces: list[np.ndarray] = []
    for start in range(0, len(documents), chunk):
        batch = documents[start : start + chunk]
        if batch and isinstance(batch[0], str):
            for enc in tokenizer.encode_batch(batch, add_special_tokens=False):
                pieces.append(np.asarray(enc.ids + [eot], dtype=dtype))
        else:
            sources = tokenizer.encode_batch([d[0] for d in batch], add_special_tokens=False)
            targets = tokenizer.encode_batch([d[1] for d in batch], add_special_tokens=False)
            for s, t in zip(sources, targets):
                pieces.append(np.asarray(s.ids + [sep] + t.ids + [eot], dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size < 2**16 else np.uint32


def read_tokens(data_dir: Path, split: str) -> np.memmap:
    """The token memmap of a split, with the dtype recorded in meta.json."""
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    path = Path(data_dir) / f"{split}.bin"
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=meta["dtype"])
    return np.memmap(path, dtype=meta["dtype"], mode="r")


# ----------------------------------------------------------------------------- the stage


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _split_position(doc: Document) -> float:
    return int.from_bytes(hashlib.blake2b(_doc_bytes(doc), digest_size=8).digest(), "big") / 2**64


def fraction_needed(
    documents: list[Document], tokenizer, split: str, val: float, test: float, need: int
) -> float | None:
    """The smallest data.split.<split> (rounded up, with 10 % margin) that gives `split` at least
    `need` tokens with this tokenizer, or None when no fraction below 0.5 does."""
    low = 0.0 if split == "test" else test
    candidates = sorted((u, d) for d in documents if (u := _split_position(d)) >= low)
    have, eot = 0, 1
    for start in range(0, len(candidates), 256):
        chunk = candidates[start : start + 256]
        counts = [
            len(e.ids) + eot
            for e in tokenizer.encode_batch(list(_texts([d for _, d in chunk])), add_special_tokens=False)
        ]
        if chunk and not isinstance(chunk[0][1], str):  # pairs: source and target encode separately
            counts = [a + b for a, b in zip(counts[::2], counts[1::2])]
        for (u, _), n in zip(chunk, counts):
            have += n
            if have >= need:
                fraction = (u - low) * 1.1 + 1e-3
                return float(f"{fraction:.2g}") if fraction < 0.5 else None
    return None


def build_tokens(data_cfg: dict, base: Path = Path(".")):
    """Corpus -> documents -> split -> tokenizer -> token ids: everything that decides the tokens.

    Returns (documents, corpus info, splits, tokenizer, {split: token ids})."""
    documents, corpus = load_documents(data_cfg, base)
    corpus["documents"] = len(documents)
    corpus["bytes"] = sum(len(_doc_bytes(d)) for d in documents)
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(hashlib.sha256(_doc_bytes(doc)).digest())
    corpus["fingerprint"] = digest.hexdigest()[:16]
    splits = split_documents(documents, data_cfg["split"]["val"], data_cfg["split"]["test"])
    if not splits["train"]:
        raise ScalelabError("data: the train split is empty (corpus too small, or split.val + split.test too large)")
    tokenizer = train_tokenizer(_texts(splits["train"]), data_cfg["tokenizer"]["vocab_size"])
    dtype = token_dtype(tokenizer.get_vocab_size())
    tokens = {name: encode_documents(tokenizer, docs, dtype) for name, docs in splits.items()}
    return documents, corpus, splits, tokenizer, tokens


def build_tokens_chunked(data_cfg: dict, base: Path = Path(".")):
    """build_tokens for a corpus with large text files (scalelab.data.chunking): the other files are
    read as there, each large file is split into documents as it is read, and encoding goes in
    batches of about chunking.ENCODE_BYTES of text. Returns what build_tokens returns."""
    from ..config.load import source_files

    files = source_files({"data": data_cfg}, base)
    large = chunking.large_files(data_cfg, files)
    limit = min(chunking.max_document_bytes(data_cfg), chunking.DOCUMENT_BYTES)
    rest = [p for p in files if p not in set(large)]
    documents: list[Document] = []
    corpus = {
        "source": "files",
        "patterns": data_cfg["source"]["files"],
        "files": len(files),
        "file_bytes": sum(p.stat().st_size for p in files),
    }
    if rest:
        rest_cfg = {**data_cfg, "source": {**data_cfg["source"], "files": [glob.escape(str(p)) for p in rest]}}
        documents, _ = _read_files(rest_cfg, Path("."))
    for path in large:
        documents.extend(chunking.file_documents(path, limit))
    if not documents:
        raise ScalelabError("data.source: the corpus has no non-empty documents")
    corpus.update(
        documents=len(documents),
        split_files=len(large),
        document_bytes=limit,
        bytes=sum(len(_doc_bytes(d)) for d in documents),
    )
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(hashlib.sha256(_doc_bytes(doc)).digest())
    corpus["fingerprint"] = digest.hexdigest()[:16]
    splits = split_documents(documents, data_cfg["split"]["val"], data_cfg["split"]["test"])
    if not splits["train"]:
        raise ScalelabError("data: the train split is empty (corpus too small, or split.val + split.test too large)")
    tokenizer = train_tokenizer(_texts(splits["train"]), data_cfg["tokenizer"]["vocab_size"])
    dtype = token_dtype(tokenizer.get_vocab_size())
    batch = max(1, chunking.ENCODE_BYTES // limit)
    tokens = {name: encode_documents(tokenizer, docs, dtype, chunk=batch) for name, docs in splits.items()}
    return documents, corpus, splits, tokenizer, tokens


# Public names of the in-memory build's helpers for the streaming build (scalelab.data.stream).
# Aliases, not renames: the in-memory build's own definitions keep their names, so its code
# fingerprint (scalelab.store.fingerprint) stays what every study carries.
DOCUMENT_BUILDERS = _BUILDERS
document_bytes = _doc_bytes
culprit = _culprit
first_line = _first_line


def check_split_sizes(data_cfg: dict, documents, tokenizer, tokens: dict, require: dict[str, int]) -> None:
    """Refuse splits too small for the grid: a val or test split smaller than one context window
    names the fraction that would do, before any training is spent on an unevaluable study."""
    for split in ("val", "test"):
        if len(tokens[split]) < require.get(split, 0):
            fraction = data_cfg["split"][split]
            better = fraction_needed(
                documents, tokenizer, split, data_cfg["split"]["val"], data_cfg["split"]["test"], require[split]
            )
            fix = f"use data.split.{split}: {better} or more" if better else "add documents"
            raise ScalelabError(
                f"data.split.{split}: {fraction} of this corpus ({len(documents):,} documents) gives "
                f"the {split} split {len(tokens[split]):,} tokens, fewer than one context window "
                f"({require[split]:,}); {fix}"
            )
    check_splits(require, {name: len(tokens[name]) for name in SPLITS}, "data")


def write_data(out_dir: Path, data_cfg: dict, corpus: dict, splits: dict, tokenizer, tokens: dict) -> dict:
    """tokenizer.json, the token memmaps and meta.json (last: its presence means the set is complete)."""
    tokenizer_json = tokenizer.to_str()
    meta = {
        "format": "pairs" if data_cfg.get("pairs") else "text",
        "vocab_size": tokenizer.get_vocab_size(),
        "dtype": np.dtype(token_dtype(tokenizer.get_vocab_size())).name,
        "eot_id": tokenizer.token_to_id(EOT),
        "sep_id": tokenizer.token_to_id(SEP),
        "splits": {},
        "bytes_per_token": {},
        "corpus": corpus,
        "tokenizer": {
            "kind": "byte-level BPE",
            "library": "tokenizers",
            "vocab_size": tokenizer.get_vocab_size(),
            "fingerprint": _sha(tokenizer_json.encode()),
        },
        "settings": data_cfg,
    }
    for name in SPLITS:
        n_bytes = sum(len(_doc_bytes(d)) for d in splits[name])
        meta["splits"][name] = {"documents": len(splits[name]), "tokens": int(len(tokens[name])), "bytes": n_bytes}
        meta["bytes_per_token"][name] = n_bytes / len(tokens[name]) if len(tokens[name]) else None
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        with atomic_path(out_dir / f"{name}.bin") as tmp:
            tokens[name].tofile(tmp)
    write_text(out_dir / "tokenizer.json", tokenizer_json)
    write_json(out_dir / "meta.json", meta)
    return meta


def tokenize(data_cfg: dict, out_dir: Path, require: dict[str, int] | None = None, base: Path = Path(".")) -> dict:
    """The in-memory build, whole; OUTPUTS written into out_dir only when everything succeeded.
    `scalelab tokenize` (scalelab.data.command) takes this or the streaming build."""
    from ..config.load import source_files
    from .hfdisk import as_loadable

    started = time.time()
    # a corpus with a text file over data.source.max_document_bytes takes the chunked path (and
    # the workflow gives its job the "tokenize_chunked" code fingerprint); every other the plain one
    chunked = bool(chunking.large_files(data_cfg, source_files({"data": data_cfg}, base)))
    with as_loadable(data_cfg) as loadable:  # a save_to_disk folder, read through a parquet copy
        documents, corpus, splits, tokenizer, tokens = (build_tokens_chunked if chunked else build_tokens)(
            loadable, base
        )
    if "hf" in corpus:
        corpus["hf"] = data_cfg["source"]["hf"]  # the folder the config names, not the copy
    check_split_sizes(data_cfg, documents, tokenizer, tokens, require or {})
    corpus["tokenize_s"] = round(time.time() - started, 2)
    meta = write_data(Path(out_dir), data_cfg, corpus, splits, tokenizer, tokens)
    return meta

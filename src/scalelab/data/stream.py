"""The streaming tokenize build ("tokenize_stream"): a corpus of any size in bounded memory.

The in-memory build (scalelab.data.tokenize.build_tokens) holds every document's text and token
array, about 7-8x the corpus. This one reads the documents twice and holds neither. Pass one
feeds the train split's texts to the BPE trainer (`train_from_iterator`) while it counts the
documents and bytes of each split, keeps each document's split (one byte a document) and hashes
the corpus. Pass two encodes the documents in batches of about chunking.ENCODE_BYTES of text per
split (`encode_batch`, across RAYON_NUM_THREADS threads) and appends each batch's token ids to its
split's token file. Text files (sample_by: document) are read one at a time, as `datasets`' text
builder reads them; a text file over max_document_bytes is cut into documents as it is read
(scalelab.data.chunking); JSONL, JSON, parquet, CSV files and `hf:` datasets are read through
`datasets`, whose Arrow tables are memory-mapped, a batch of rows at a time (the mapped pages
read count in the resident size, but are file-backed: the kernel drops them under pressure).

What still grows: the BPE trainer's word counts, with the number of distinct words (not the
corpus size), and, only when a val or test split is too small for the grid, the documents that
tokenize.fraction_needed sorts to name the fraction that would do.

It writes the bytes the in-memory build writes: the same documents in the same order, the same
split of each, the same trainer input, and the same encoding (encode_documents) of each
document; meta.json differs only by `corpus.build: "stream"` and its time
(tests/test_tokenize_stream.py). scalelab.data.stages decides which build a study takes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from array import array
from pathlib import Path
from typing import Iterator

import numpy as np

from . import chunking
from .stages import STREAM_BUILD
from .tokenize import (
    DOCUMENT_BUILDERS,
    EOT,
    SEP,
    SPLITS,
    Document,
    check_split_sizes,
    culprit,
    document_bytes,
    encode_documents,
    first_line,
    split_of,
    token_dtype,
    train_tokenizer,
)
from ..errors import ScalelabError
from ..files import atomic_path, write_json, write_text

ROWS = 256  # dataset rows read per Arrow batch
TEXT_FILES = object()  # a part of the corpus that is text files read directly


def _fields(data_cfg: dict) -> list[str]:
    pairs = data_cfg.get("pairs")
    return [pairs["source_field"], pairs["target_field"]] if pairs else [data_cfg["source"].get("text_field", "text")]


def _rows(dataset, data_cfg: dict) -> Iterator[Document]:
    """A dataset's documents, as tokenize's _documents_from reads them, a batch of rows at a time."""
    fields = _fields(data_cfg)
    for batch in dataset.select_columns(fields).iter(batch_size=ROWS):
        if data_cfg.get("pairs"):
            yield from ((str(s), str(t)) for s, t in zip(batch[fields[0]], batch[fields[1]]) if s and t)
        else:
            yield from (str(t) for t in batch[fields[0]] if t and str(t).strip())


def _text_files(paths: list[str]) -> Iterator[str]:
    """Text files one document each, as datasets' text builder reads them with sample_by: document
    (UTF-8, universal newlines), one file at a time."""
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError) as exc:
            raise ScalelabError(f"{path}: could not read as text ({first_line(exc)})") from None
        if text and text.strip():
            yield text


def _checked(dataset, data_cfg: dict, where: str):
    for field in _fields(data_cfg):
        if field not in dataset.column_names:
            raise ScalelabError(f"{where}: no field {field!r} (fields: {', '.join(dataset.column_names)})")
    return dataset


class Corpus:
    """The documents of a `files` or `hf` source, read afresh on each iteration, in the order the
    in-memory build reads them. `len()` is known after one whole pass."""

    def __init__(self, data_cfg: dict, base: Path = Path(".")):
        self.data_cfg, self.parts, self.count = data_cfg, [], None
        source = data_cfg["source"]
        if not isinstance(source, dict):
            raise ScalelabError(
                "data.source: the streaming build reads files and hf datasets; python-stdlib is tokenized in memory"
            )
        if "files" in source:
            self._open_files(base)
        else:
            self._open_hub()

    def _open_files(self, base: Path) -> None:
        from ..config.load import source_files

        source = self.data_cfg["source"]
        files = source_files({"data": self.data_cfg}, base)
        large = chunking.large_files(self.data_cfg, files)
        self.info = {
            "source": "files",
            "patterns": source["files"],
            "files": len(files),
            "file_bytes": sum(p.stat().st_size for p in files),
        }
        self.chunked = (
            {
                "split_files": len(large),
                "document_bytes": min(chunking.max_document_bytes(self.data_cfg), chunking.DOCUMENT_BYTES),
            }
            if large
            else None
        )
        by_builder: dict[str, list[str]] = {}
        for path in (p for p in files if p not in set(large)):
            builder = DOCUMENT_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise ScalelabError(f"{path}: unsupported file type (use .txt, .jsonl, .json, .parquet or .csv)")
            by_builder.setdefault(builder, []).append(str(path))
        if self.data_cfg.get("pairs") and "text" in by_builder:
            raise ScalelabError(
                f"{by_builder['text'][0]}: a pairs corpus needs .jsonl/.parquet/.csv files with "
                "source and target fields"
            )
        if set(by_builder) - {"text"} or source.get("sample_by", "document") != "document":
            import datasets  # a corpus of text files alone does without it (~130 MB imported)

            datasets.disable_progress_bars()
        for builder, paths in by_builder.items():
            if builder == "text" and source.get("sample_by", "document") == "document":
                self.parts.append((paths, TEXT_FILES))  # read directly: mapped Arrow pages would count as memory
                continue
            kwargs = {"sample_by": source.get("sample_by", "document")} if builder == "text" else {}
            try:
                dataset = datasets.load_dataset(builder, data_files=paths, split="train", **kwargs)
            except Exception as exc:  # datasets raises many types for a malformed file
                raise ScalelabError(
                    f"{culprit(builder, paths, kwargs)}: could not read as {builder} ({first_line(exc)})"
                ) from None
            as_read = (
                {**self.data_cfg, "source": {**source, "text_field": "text"}} if builder == "text" else self.data_cfg
            )
            self.parts.append((_checked(dataset, as_read, paths[0]), as_read))
        self.parts += [(path, None) for path in large]

    def _open_hub(self) -> None:
        import datasets

        source = self.data_cfg["source"]
        datasets.disable_progress_bars()
        try:
            dataset = datasets.load_dataset(
                source["hf"], source.get("name"), split=source.get("split", "train"), revision=source.get("revision")
            )
        except Exception as exc:
            raise ScalelabError(f"data.source.hf: could not load {source['hf']!r} ({first_line(exc)})") from None
        if source.get("max_documents"):
            dataset = dataset.select(range(min(len(dataset), source["max_documents"])))
        self.parts.append((_checked(dataset, self.data_cfg, f"data.source.hf {source['hf']!r}"), self.data_cfg))
        self.chunked = None
        self.info = {
            "source": "hf",
            "hf": source["hf"],
            "name": source.get("name"),
            "split": source.get("split", "train"),
            "revision": source.get("revision"),
            "rows": len(dataset),
        }

    def __iter__(self) -> Iterator[Document]:
        limit = (self.chunked or {}).get("document_bytes")
        for part, as_read in self.parts:
            if as_read is TEXT_FILES:
                yield from _text_files(part)
            else:
                yield from _rows(part, as_read) if as_read is not None else chunking.file_documents(part, limit)

    def __len__(self) -> int:
        return self.count


class Survey:
    """Pass one: what meta.json records of the corpus and its splits, and each document's split."""

    def __init__(self, val: float, test: float):
        self.val, self.test = val, test
        self.documents, self.bytes, self.digest = 0, 0, hashlib.sha256()
        self.splits = {name: {"documents": 0, "bytes": 0} for name in SPLITS}
        self.assigned = array("B")  # index into SPLITS, one a document
        self.error: Exception | None = None

    def train_texts(self, corpus: Corpus) -> Iterator[str]:
        """The texts the BPE trainer reads (the train split's, as tokenize._texts gives them)."""
        try:
            for doc in corpus:
                data, split = document_bytes(doc), split_of(doc, self.val, self.test)
                self.documents += 1
                self.bytes += len(data)
                self.digest.update(hashlib.sha256(data).digest())
                self.splits[split]["documents"] += 1
                self.splits[split]["bytes"] += len(data)
                self.assigned.append(SPLITS.index(split))
                if split == "train":
                    yield from ((doc,) if isinstance(doc, str) else doc)
        except Exception as exc:  # kept: raised again once the trainer returns, whatever it made of it
            self.error = exc


def survey_and_train(corpus: Corpus, data_cfg: dict):
    """Pass one: the tokenizer trained on the train split, and the Survey of the corpus."""
    survey = Survey(data_cfg["split"]["val"], data_cfg["split"]["test"])
    tokenizer = train_tokenizer(survey.train_texts(corpus), data_cfg["tokenizer"]["vocab_size"])
    if survey.error is not None:
        raise survey.error
    corpus.count = survey.documents
    if not survey.documents:
        detail = "" if corpus.chunked else f" ({json.dumps(corpus.info)})"
        raise ScalelabError(f"data.source: the corpus has no non-empty documents{detail}")
    if not survey.splits["train"]["documents"]:
        raise ScalelabError("data: the train split is empty (corpus too small, or split.val + split.test too large)")
    return tokenizer, survey


def encode_to(outputs: dict, corpus: Corpus, survey: Survey, tokenizer) -> dict[str, int]:
    """Pass two: each split's token ids appended to its open file, a batch at a time; the counts."""
    dtype = token_dtype(tokenizer.get_vocab_size())
    tokens = {name: 0 for name in SPLITS}
    pending: dict[str, list[Document]] = {name: [] for name in SPLITS}
    pending_chars = {name: 0 for name in SPLITS}

    def flush(split: str) -> None:
        if pending[split]:
            ids = encode_documents(tokenizer, pending[split], dtype, chunk=len(pending[split]))
            ids.tofile(outputs[split])
            tokens[split] += len(ids)
            pending[split], pending_chars[split] = [], 0

    changed = ScalelabError(
        "data.source: the corpus changed while it was tokenized (its documents differ between "
        "the two reads); rerun tokenize once it holds still"
    )
    seen = 0
    for seen, doc in enumerate(corpus, 1):
        if seen > len(survey.assigned):
            raise changed
        split = SPLITS[survey.assigned[seen - 1]]
        pending[split].append(doc)
        pending_chars[split] += len(doc) if isinstance(doc, str) else len(doc[0]) + len(doc[1])
        if pending_chars[split] >= chunking.ENCODE_BYTES:
            flush(split)
    if seen != len(survey.assigned):
        raise changed
    for split in SPLITS:
        flush(split)
    return tokens


def stream_meta(data_cfg: dict, corpus_info: dict, survey: Survey, tokens: dict[str, int], tokenizer) -> dict:
    """meta.json as tokenize.write_data writes it, from the counts instead of the documents."""
    tokenizer_json = tokenizer.to_str()
    meta = {
        "format": "pairs" if data_cfg.get("pairs") else "text",
        "vocab_size": tokenizer.get_vocab_size(),
        "dtype": np.dtype(token_dtype(tokenizer.get_vocab_size())).name,
        "eot_id": tokenizer.token_to_id(EOT),
        "sep_id": tokenizer.token_to_id(SEP),
        "splits": {
            name: {
                "documents": survey.splits[name]["documents"],
                "tokens": tokens[name],
                "bytes": survey.splits[name]["bytes"],
            }
            for name in SPLITS
        },
        "bytes_per_token": {
            name: survey.splits[name]["bytes"] / tokens[name] if tokens[name] else None for name in SPLITS
        },
        "corpus": corpus_info,
        "tokenizer": {
            "kind": "byte-level BPE",
            "library": "tokenizers",
            "vocab_size": tokenizer.get_vocab_size(),
            "fingerprint": hashlib.sha256(tokenizer_json.encode()).hexdigest()[:16],
        },
        "settings": data_cfg,
    }
    return meta


def _corpus_record(corpus: Corpus, survey: Survey) -> dict:
    """meta.json's corpus, with the keys in the in-memory build's order."""
    record = {
        **corpus.info,
        "documents": survey.documents,
        **(corpus.chunked or {}),
        "bytes": survey.bytes,
        "fingerprint": survey.digest.hexdigest()[:16],
    }
    return record


def tokenize_streaming(
    data_cfg: dict, out_dir: Path, require: dict[str, int] | None = None, base: Path = Path(".")
) -> dict:
    """The whole stage, streaming: OUTPUTS written into out_dir only when everything succeeded."""
    from .hfdisk import as_loadable

    started, out_dir = time.time(), Path(out_dir)
    with as_loadable(data_cfg) as loadable:  # a save_to_disk folder, read through a parquet copy
        corpus = Corpus(loadable, base)
        tokenizer, survey = survey_and_train(corpus, loadable)
        with contextlib.ExitStack() as stack:  # each split's file replaces the old one only on success
            paths = {name: stack.enter_context(atomic_path(out_dir / f"{name}.bin")) for name in SPLITS}
            outputs = {name: stack.enter_context(open(path, "wb")) for name, path in paths.items()}
            tokens = encode_to(outputs, corpus, survey, tokenizer)
            for handle in outputs.values():
                handle.close()
            # the check's token arrays stand in by their lengths; its documents are read again if it fails
            check_split_sizes(
                data_cfg, corpus, tokenizer, {name: range(n) for name, n in tokens.items()}, require or {}
            )
    record = _corpus_record(corpus, survey)
    if "hf" in record:
        record["hf"] = data_cfg["source"]["hf"]  # the folder the config names, not the copy
    record.update(build=STREAM_BUILD, tokenize_s=round(time.time() - started, 2))
    meta = stream_meta(data_cfg, record, survey, tokens, tokenizer)
    write_text(out_dir / "tokenizer.json", tokenizer.to_str())
    write_json(out_dir / "meta.json", meta)
    return meta

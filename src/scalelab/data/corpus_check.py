"""Corpus files checked when the DAG is built, before Snakemake deletes results/data for a
tokenize job that would then fail: each file's extension, the encoding of a text file's first
bytes, the first record of each .jsonl/.json (it must hold the text field), a .csv header and a
.parquet schema. Cheap: a few kilobytes of each file (a .json array is read whole only when it
is small), so ten thousand files take well under a second on a local disk.

What only the whole file shows (a bad record in the middle) is still caught by the tokenize job,
in one line naming the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

from ..errors import ScalelabError

HEAD_BYTES = 1 << 13  # bytes of each text file whose encoding is checked (8 KB: cheap for 10^4 files)
SMALL_JSON_BYTES = 16 << 20  # a .json file is parsed whole (for its first record) up to this size
TEXT = {".txt", ".text", ".md", ".py"}
SUPPORTED = TEXT | {".json", ".jsonl", ".parquet", ".csv"}  # as scalelab.data.tokenize reads them


def _fields(data_cfg: dict) -> list[str]:
    pairs = data_cfg.get("pairs")
    if pairs:
        return [pairs.get("source_field", "source"), pairs.get("target_field", "target")]
    return [data_cfg["source"].get("text_field", "text")]


def _head(path: Path, size: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def check_text(path: Path, head: bytes | None = None) -> None:
    """The first bytes must be UTF-8 text: no byte-order mark of UTF-16/32, no NUL bytes."""
    head = _head(path) if head is None else head
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if head.startswith(bom):
            raise ScalelabError(f"{path}: {name} text; the corpus must be UTF-8 (convert it, e.g. with iconv)")
    if b"\0" in head:
        raise ScalelabError(f"{path}: binary, not text (a NUL byte in its first {len(head):,} bytes)")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut at the end is fine
    except UnicodeDecodeError as exc:
        raise ScalelabError(f"{path}: not UTF-8 text (byte {exc.start:,} cannot be decoded)") from None


def _first_line(path: Path) -> str | None:
    """The first non-blank line of a text file, or None when it has none."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                return raw.decode("utf-8", errors="replace")
    return None


def _check_record(path: Path, record, fields: list[str]) -> None:
    if not isinstance(record, dict):
        raise ScalelabError(
            f"{path}: the first record is a JSON {type(record).__name__}, not an object with "
            f"the field{'s' if len(fields) > 1 else ''} {', '.join(map(repr, fields))}"
        )
    missing = [f for f in fields if f not in record]
    if missing:
        raise ScalelabError(
            f"{path}: the first record has no field {missing[0]!r} (fields: "
            f"{', '.join(map(str, record)) or 'none'}); set data.source.text_field"
        )


def check_jsonl(path: Path, fields: list[str]) -> None:
    check_text(path)
    line = _first_line(path)
    if line is None:
        raise ScalelabError(f"{path}: empty (no records); remove it or exclude it from data.source.files")
    try:
        record = json.loads(line)
    except ValueError:
        raise ScalelabError(f"{path}: the first line is not a JSON record") from None
    _check_record(path, record, fields)


def check_json(path: Path, fields: list[str]) -> None:
    head = _head(path)
    check_text(path, head)
    text = head.decode("utf-8", errors="replace").lstrip()
    if not text:
        raise ScalelabError(f"{path}: empty (no records); remove it or exclude it from data.source.files")
    if path.stat().st_size > SMALL_JSON_BYTES:
        if text[0] not in "[{":
            raise ScalelabError(f"{path}: not JSON (it starts with {text[:20]!r})")
        return  # large: the tokenize job reads it
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        line = _first_line(path)  # JSON lines under a .json name, as datasets also accepts
        try:
            value = json.loads(line or "")
        except ValueError:
            raise ScalelabError(f"{path}: not JSON") from None
    if isinstance(value, list):
        if not value:
            raise ScalelabError(f"{path}: an empty JSON array (no records)")
        value = value[0]
    _check_record(path, value, fields)


def check_csv(path: Path, fields: list[str]) -> None:
    head = _head(path)
    check_text(path, head)
    header = next(csv.reader(io.StringIO(head.decode("utf-8", errors="replace"))), None)
    if not header:
        raise ScalelabError(f"{path}: empty (no header row)")
    missing = [f for f in fields if f not in header]
    if missing:
        raise ScalelabError(
            f"{path}: no column {missing[0]!r} (columns: {', '.join(header)}); set data.source.text_field"
        )


def check_parquet(path: Path, fields: list[str]) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise ScalelabError(f"{path}: not a parquet file ({type(exc).__name__})") from None
    missing = [f for f in fields if f not in names]
    if missing:
        raise ScalelabError(
            f"{path}: no column {missing[0]!r} (columns: {', '.join(names)}); set data.source.text_field"
        )


def check_files(data_cfg: dict, files: list[Path]) -> None:
    """Each corpus file, cheaply (see the module docstring): one line naming the first bad one."""
    if not files:
        return  # not a files source (python-stdlib, a hub dataset)
    fields = _fields(data_cfg)
    for path in files:
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED:
            raise ScalelabError(f"{path}: unsupported file type (use .txt, .jsonl, .json, .parquet or .csv)")
        if suffix in TEXT:
            if data_cfg.get("pairs"):
                raise ScalelabError(
                    f"{path}: a pairs corpus needs .jsonl/.parquet/.csv files with source and target fields"
                )
            check_text(path)
        elif suffix == ".jsonl":
            check_jsonl(path, fields)
        elif suffix == ".json":
            check_json(path, fields)
        elif suffix == ".csv":
            check_csv(path, fields)
        else:
            check_parquet(path, fields)

"""Large text files split into documents, so that tokenize's memory does not grow with one
file's size and a one-file corpus still gets val and test splits.

A `.txt` (`.text`, `.md`, `.py`) file is one document (`sample_by: document`), and one document
of hundreds of megabytes is encoded as one `tokenizers` Encoding (ids, offsets and token strings:
tens of bytes per token) and lands wholly in one split. A text file larger than
`data.source.max_document_bytes` (default 1 MB; 0: never split) is instead read in blocks and cut
into documents of at most 64 KB (or max_document_bytes, if smaller), so that even a one-file
corpus of a few megabytes has documents enough for 1 % val and test splits: at the last blank
line that fits, else the last line end, else the last space, else at a character boundary.

Only a study with such a file takes this path (scalelab.data.tokenize.build_tokens_chunked): its tokenize
job's code fingerprint is then "tokenize_chunked" (the tokenize code, that function and this
module), so every other study keeps its tokens, its fingerprints and its runs. Standard library
only, below every stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import ScalelabError

DEFAULT_MAX_DOCUMENT_BYTES = 1_000_000  # a text file larger than this is split ...
DOCUMENT_BYTES = 1 << 16  # ... into documents of at most this (or max_document_bytes, if smaller)
TEXT_SUFFIXES = (".txt", ".text", ".md", ".py")
READ_BYTES = 1 << 22  # a file is read this much at a time
ENCODE_BYTES = 4 << 20  # text encoded per tokenizers batch: bounds the Encodings held at once (~100 B a token)


def max_document_bytes(data_cfg: dict) -> int:
    source = data_cfg["source"]
    return source.get("max_document_bytes", DEFAULT_MAX_DOCUMENT_BYTES) if isinstance(source, dict) else 0


def large_files(data_cfg: dict, files: list[Path]) -> list[Path]:
    """The text files this study splits into documents (none for other sources, for `sample_by`
    paragraph or line, which split every file already, and for pairs corpora)."""
    source, limit = data_cfg["source"], max_document_bytes(data_cfg)
    if (
        not limit
        or not isinstance(source, dict)
        or "files" not in source
        or data_cfg.get("pairs")
        or source.get("sample_by", "document") != "document"
    ):
        return []
    return [p for p in files if p.suffix.lower() in TEXT_SUFFIXES and p.stat().st_size > limit]


def _cut(pending: bytearray, limit: int) -> int:
    """Where the next document ends in `pending` (more than `limit` bytes)."""
    for separator in (b"\n\n", b"\n", b" "):
        at = pending.rfind(separator, 0, limit)
        if at > 0:
            return at + len(separator)
    cut = limit
    while cut > 0 and (pending[cut] & 0xC0) == 0x80:  # never inside a UTF-8 character
        cut -= 1
    return cut or limit


def file_documents(path: Path, limit: int) -> Iterator[str]:
    """The documents of one large text file, read `READ_BYTES` at a time (whitespace-only pieces
    are dropped, as load_documents drops empty documents)."""
    pending = bytearray()

    def emit(piece: bytes) -> str | None:
        try:  # each piece ends at a character boundary, so it decodes alone
            text = piece.decode("utf-8")
        except UnicodeDecodeError:
            raise ScalelabError(f"{path}: not UTF-8 text") from None
        return text if text.strip() else None

    with open(path, "rb") as f:
        while block := f.read(READ_BYTES):
            pending += block
            while len(pending) > limit:
                cut = _cut(pending, limit)
                document = emit(bytes(pending[:cut]))
                del pending[:cut]
                if document is not None:
                    yield document
    if pending:
        document = emit(bytes(pending))
        if document is not None:
            yield document

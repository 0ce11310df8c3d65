"""Atomic writes: a crash or a bad input never leaves a half-written result behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.
    A `path` that exists but is no regular file (/dev/null, a FIFO) is written in place: renamed
    over, a device would become a plain file (as root, for every process on the machine)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars become Python numbers, NaN/inf become null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(data), indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON or raise a one-line ScalelabError naming the file."""
    from .errors import ScalelabError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ScalelabError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScalelabError(f"{path}: {what} is not valid JSON ({exc})") from None


def loads_json(text: str, what: str) -> Any:
    """Parse a JSON command-line value or raise a one-line ScalelabError naming it."""
    from .errors import ScalelabError

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScalelabError(f"{what}: not valid JSON ({exc})") from None


def check_out_dir(out) -> Path:
    """A command's --out: a folder, or one it can create inside a writable folder; checked before
    any work, so a bad path costs no fit."""
    from .errors import ScalelabError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ScalelabError(f"--out {out}: exists and is not a folder")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ScalelabError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ScalelabError(f"--out {out}: {parent} is not a writable folder")
    return out


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Disk use of a study's results folder, by part: what `scalelab prune` can free, and what the
summary states. Standard library only (the report's onsuccess handler imports it)."""

from __future__ import annotations

import os
from pathlib import Path

# part -> folders under results/ (the trunk store lives inside the run store's folder)
PARTS = {
    "runs": ("runs",),
    "run store": ("store",),
    "trunks": ("trunks",),
    "trunk store": ("store/trunks",),
    "data": ("data",),
}


def tree_bytes(folder: Path, skip: Path | None = None) -> int:
    """Bytes of the regular files under `folder` (not following links), without `skip`."""
    total = 0
    for root, dirs, names in os.walk(folder):
        if skip is not None and Path(root) == skip:
            dirs[:] = []
            continue
        for name in names:
            try:
                stat = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += stat.st_size if not os.path.islink(os.path.join(root, name)) else 0
    return total


def usage(results: Path) -> dict[str, int]:
    """Bytes per part of `results` (PARTS), each counted once."""
    results = Path(results)
    found = {}
    for part, folders in PARTS.items():
        skip = results / "store" / "trunks" if part == "run store" else None
        found[part] = sum(tree_bytes(results / f, skip) for f in folders)
    return found


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def usage_line(results: Path) -> str:
    """`runs 1.2 MB, run store 1.2 MB, ...` for a summary."""
    parts = usage(results)
    return ", ".join(f"{part} {human_bytes(n)}" for part, n in parts.items())

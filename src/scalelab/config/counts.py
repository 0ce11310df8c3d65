"""Counts as a config writes them (250000, 2.5e5, '250K', '2M') and as run ids spell them.

A primitive: the config reader, the settings, the grid and the stages all read counts the same way.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import ScalelabError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_count(value: Any, key: str) -> int:
    """Read a count written as 250000, 2.5e5, '2.5e5', '250_000', '250K' or '2M'."""
    if isinstance(value, bool):
        raise ScalelabError(f"config: {key}: expected a count, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9_.eE+-]+?)\s*([KkMmGgTt]?)\s*", str(value))
        try:
            number = float(match.group(1).replace("_", "")) * _SUFFIX[match.group(2).upper()]
        except (AttributeError, ValueError):
            raise ScalelabError(f"config: {key}: {value!r} is not a count (e.g. 250000, 2.5e5, 250K, 2M)") from None
    if not math.isfinite(number) or number <= 0:
        raise ScalelabError(f"config: {key}: must be positive, got {value!r}")
    if round(number) < 1:
        raise ScalelabError(f"config: {key}: must be at least 1, got {value!r}")
    return int(round(number))


def compact_count(n: int) -> str:
    """250000 -> '250K', 2000000 -> '2M', 1500000 -> '1.5M'; lossless, so ids never collide."""
    for suffix, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale and (n * 1000) % scale == 0:
            text = f"{n / scale:.3f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return str(n)


def run_id(model: str, tokens: int, seed: int) -> str:
    return f"{model}-{compact_count(tokens)}-s{seed}"

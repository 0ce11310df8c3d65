"""The lr schedules of `cosine`, `linear` and `constant` runs, in optimizer steps (pure maths).

WSD's schedule is scalelab.plan.wsd's: it is part of that plan (branch points, families).
"""

from __future__ import annotations

import math


def total_steps(tokens: int, batch_size: int, context: int) -> int:
    """Exactly ceil(D / (batch_size * context)) optimizer steps."""
    return max(1, math.ceil(tokens / (batch_size * context)))


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step`: linear warmup, then cosine/linear decay to min_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * decay


def warmup_steps_for(spec: dict, steps: int) -> int:
    tokens_per_step = spec["batch_size"] * spec["context"]
    warmup_tokens = spec["warmup_tokens"] * spec["tokens"] if spec["warmup_tokens"] <= 1 else spec["warmup_tokens"]
    return min(steps, math.ceil(warmup_tokens / tokens_per_step)) if warmup_tokens > 0 else 0

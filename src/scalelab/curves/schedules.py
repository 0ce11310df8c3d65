"""The learning rate of every optimizer step of a run, from its spec and the project's own schedule code.

WSD runs follow `scalelab.wsd.lr_factor` (a trunk is branch == steps); cosine, linear and constant
runs follow `scalelab.train.schedule.lr_factor`. Importing the latter imports the train package
(torch), so it is imported only when a non-WSD spec asks for it.
"""

from __future__ import annotations

import math

import numpy as np

from ..plan import wsd
from ..errors import ScalelabError

SCHEDULE_KEYS = ("tokens", "batch_size", "context", "lr", "schedule", "warmup_tokens", "min_lr_ratio")


def check_spec(spec: dict, where: str = "spec") -> None:
    missing = [key for key in SCHEDULE_KEYS if key not in spec]
    if missing:
        raise ScalelabError(f"{where}: missing {', '.join(missing)} (a run spec as grid.expand_grid builds it)")
    if wsd.is_wsd(spec) and ("cooldown" not in spec or "cooldown_shape" not in spec):
        raise ScalelabError(f"{where}: a wsd spec needs cooldown and cooldown_shape")


def run_steps(spec: dict) -> int:
    return max(1, math.ceil(spec["tokens"] / (spec["batch_size"] * spec["context"])))


def lr_sequence(spec: dict, steps: int | None = None) -> np.ndarray:
    """The lr of updates 0 .. steps-1 (the rate update i used); `steps` defaults to the run's own."""
    check_spec(spec)
    total = run_steps(spec)
    steps = total if steps is None else steps
    if wsd.is_wsd(spec):
        warmup, branch = wsd.warmup_steps(spec), wsd.branch_step(spec)
        factors = [
            wsd.lr_factor(i, total, warmup, branch, spec["cooldown_shape"], spec["min_lr_ratio"]) for i in range(steps)
        ]
    else:
        from ..train.schedule import lr_factor, warmup_steps_for

        if spec["schedule"] not in ("cosine", "linear", "constant"):
            raise ScalelabError(
                f"spec: schedule {spec['schedule']!r} is not one the curves know (wsd, cosine, linear, constant)"
            )
        warmup = warmup_steps_for(spec, total)
        factors = [lr_factor(i, total, warmup, spec["schedule"], spec["min_lr_ratio"]) for i in range(steps)]
    return spec["lr"] * np.asarray(factors, dtype=float)


def trunk_lr_sequence(spec: dict, steps: int) -> np.ndarray:
    """The lr of a family's trunk for `steps` steps: its warmup, then the peak."""
    warmup = wsd.warmup_steps(spec)
    factors = [
        wsd.lr_factor(i, steps, warmup, steps, spec["cooldown_shape"], spec["min_lr_ratio"]) for i in range(steps)
    ]
    return spec["lr"] * np.asarray(factors, dtype=float)

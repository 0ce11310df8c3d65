"""What a finished run leaves: curve.csv, metrics.json and model.pt (written atomically, the
metrics last: their presence means the run is complete).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..store import runs as store
from ..files import atomic_path, write_json
from ..model import GPTConfig, param_counts
from .callbacks import DivergenceGuard
from .module import LitGPT
from .plan import RunPlan
from .trainer import resolve_precision


CURVE_COLUMNS = ("step", "tokens", "flops", "lr", "train_loss", "val_loss")


def _last_by_step(rows, width: int) -> dict[int, list]:
    """step -> the last value of each column that is not missing (NaN or None) in `rows`."""
    merged: dict[int, list] = {}
    for step, *values in rows:
        current = merged.setdefault(int(step), [None] * width)
        for i, value in enumerate(values):
            if value is not None and not math.isnan(value):
                current[i] = value
    return merged


def _cell(value) -> str:
    # Python's repr of a float is its shortest round-trip text, as pandas' to_csv wrote it before.
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def write_curve(
    train_rows: list, val_history: list, curve_csv: Path, tokens_per_step: int, flops_per_tok: int
) -> list[tuple]:
    """curve.csv (step, tokens, flops, lr, train_loss, val_loss); `step` counts the optimizer
    steps done when the value was measured (train loss before that step's update). One row per
    step, in order; a value not measured at that step is empty. Returns the rows (None: empty)."""
    train, val = _last_by_step(train_rows, 2), _last_by_step(val_history, 1)
    curve = []
    for step in sorted(train.keys() | val.keys()):
        tokens = step * tokens_per_step
        lr, train_loss = train.get(step, (None, None))
        curve.append((step, tokens, float(tokens) * flops_per_tok, lr, train_loss, val.get(step, [None])[0]))
    text = ",".join(CURVE_COLUMNS) + "\n" + "".join(",".join(map(_cell, row)) + "\n" for row in curve)
    with atomic_path(curve_csv) as tmp:
        tmp.write_text(text)
    return curve


# every other key a sweep may vary (scalelab.config.sweeps.SWEEPABLE), so metrics.csv has its column
SWEPT_SETTINGS = ("schedule", "warmup_tokens", "min_lr_ratio", "weight_decay", "beta2", "grad_clip")


def run_metrics(
    spec: dict,
    plan: RunPlan,
    model_config: GPTConfig,
    trainer,
    curve: list[tuple],
    guard: DivergenceGuard,
    resumed_from_step: int | None,
    started: float,
    fit_s: float,
    first_step: int | None = None,
    flops_spent: float | None = None,
) -> dict:
    """metrics.json's values (without the identity keys that `train_run` adds)."""
    params, params_total = param_counts(model_config)
    diverged = guard.diverged_at is not None
    trained_steps = trainer.global_step
    val = [row[5] for row in curve if row[5] is not None]
    tail = [row[4] for row in curve if row[0] >= trained_steps * 0.9 and row[4] is not None]
    tokens = plan.tokens
    new_steps = trained_steps - (first_step if first_step is not None else resumed_from_step or 0)
    return {
        "run": spec["run"],
        "model": spec["model"],
        "n_layer": spec["n_layer"],
        "d_model": spec["d_model"],
        "n_head": spec["n_head"],
        "vocab_size": model_config.vocab_size,
        "context": spec["context"],
        "params": params,
        "params_total": params_total,
        "tokens": tokens,
        "tokens_requested": spec["tokens"],
        "flops": plan.flops,
        "flops_total": tokens * plan.flops_per_token_total,
        "seed": spec["seed"],
        "isoflop_budget": spec["isoflop_budget"],
        "steps": trained_steps,
        "batch_size": spec["batch_size"],
        "lr": spec["lr"],
        **{key: spec[key] for key in SWEPT_SETTINGS if key in spec},
        "train_loss": float(np.mean(tail)) if tail else None,  # numpy's pairwise sum, as pandas' mean
        "val_loss": None if diverged or not val else float(val[-1]),
        "wall_s": round(time.time() - started, 2),
        "tokens_per_s": round(new_steps * plan.tokens_per_step / fit_s, 1) if fit_s > 0 else None,
        "status": "diverged" if diverged else "ok",
        "diverged_at_step": guard.diverged_at,
        "resumed_from_step": resumed_from_step,
        "precision": resolve_precision(spec),
        "accelerator": str(trainer.accelerator.__class__.__name__),
        "devices": spec["devices"],
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "lightning_version": L.__version__,
        **schedule_metrics(spec, plan, flops_spent),
    }


def schedule_metrics(spec: dict, plan: RunPlan, flops_spent: float | None) -> dict:
    """schedule, branch_from_tokens (the WSD branch point; None otherwise) and flops_spent: what
    this run cost, its trunk charged by scalelab.plan.wsd's rule (without a trunk: its own FLOPs)."""
    branch = plan.branch_step * plan.tokens_per_step if plan.family is not None else None
    return {
        "schedule": spec["schedule"],
        "branch_from_tokens": branch,
        "flops_spent": float(plan.flops if flops_spent is None else flops_spent),
    }


def save_run(run_dir: Path, spec: dict, model_config: GPTConfig, lit: LitGPT, metrics: dict) -> None:
    """model.pt, then metrics.json (its presence means the run is complete). Both carry the run
    id and spec hash, and metrics.json the model file's size and checksum, so a damaged or
    foreign file is recognised as such."""
    state = {k: v.detach().cpu() for k, v in lit.gpt.state_dict().items()}
    with atomic_path(run_dir / "model.pt") as tmp:
        torch.save(
            {
                "config": model_config.to_dict(),
                "state_dict": state,
                "run": spec["run"],
                "spec_sha": metrics["spec_sha"],
            },
            tmp,
        )
        metrics["model_bytes"] = tmp.stat().st_size
        metrics["model_sha256"] = store.file_sha256(tmp)
    write_json(run_dir / "metrics.json", metrics)

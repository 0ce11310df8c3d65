"""A study's curves as trajectories: every run's lr schedule with the losses measured along it.

A WSD run is a cooldown branched from its family's constant-lr trunk, so its curve is cut in two:
the rows up to its branch step belong to the family's *trunk* trajectory (shared, counted once),
the rows after it to the run's own. The trunk rows come from the family's latest trunk checkpoint
in results/trunks (its recorded train rows and val evaluations; reading it needs torch) and from
the trunk part of the finished runs' curves. A non-WSD run is one trajectory of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..plan import wsd
from ..errors import ScalelabError
from ..files import read_json
from .schedules import lr_sequence, trunk_lr_sequence

CURVE_COLUMNS = ("step", "train_loss", "val_loss")
TARGETS = {"val_loss": "val", "train_loss": "train"}


@dataclass
class Trajectory:
    """One lr schedule and the losses measured along it (`rows`: step, kind 'val'/'train', loss)."""

    name: str
    model: str
    spec: dict
    lrs: np.ndarray
    rows: pd.DataFrame
    is_run: bool = True  # False: a WSD family's trunk
    annealed: bool = True  # False: a constant lr after warmup (nothing for an annealing term to fit)

    @property
    def final_step(self) -> int:
        return len(self.lrs)

    def final_row(self, kind: str = "val") -> pd.Series | None:
        """The measured row at the run's last step (its final target), if any."""
        rows = self.rows[(self.rows["kind"] == kind) & (self.rows["step"] == self.final_step)]
        return None if rows.empty else rows.iloc[-1]


def read_curve(path: Path) -> pd.DataFrame:
    """curve.csv as rows (step, kind, loss), checked; one line naming the file when it is not one."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ScalelabError(f"{path}: curve not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ScalelabError(f"{path}: not a curve CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in CURVE_COLUMNS if c not in df.columns]
    if missing:
        raise ScalelabError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows_from_columns(df, str(path))


def rows_from_columns(df: pd.DataFrame, where: str) -> pd.DataFrame:
    parts = []
    for column, kind in (("val_loss", "val"), ("train_loss", "train")):
        values = pd.to_numeric(df[column], errors="coerce")
        steps = pd.to_numeric(df["step"], errors="coerce")
        keep = values.notna() & steps.notna()
        bad = keep & ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise ScalelabError(f"{where}: {column} at step {int(steps[bad].iloc[0])} is not a positive finite loss")
        parts.append(pd.DataFrame({"step": steps[keep].astype(int), "kind": kind, "loss": values[keep].astype(float)}))
    return pd.concat(parts, ignore_index=True)


def trunk_checkpoint_rows(trunks_dir: Path, family: str) -> pd.DataFrame | None:
    """The train rows and val evaluations the family's latest trunk checkpoint carries (None: none)."""
    folder = trunks_dir / family
    ckpts = sorted(folder.glob("step*.ckpt"), key=lambda p: int(p.stem[4:]) if p.stem[4:].isdigit() else -1)
    if not ckpts:
        return None
    import torch

    try:
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: the run curves still hold the trunk rows
        print(f"scalelab curves: {ckpts[-1]}: not read ({type(exc).__name__}); using the runs' curves")
        return None
    train = [row for cb in (state.get("callbacks") or {}).values() for row in (cb.get("rows") or [])]
    val = list(state.get("val_history") or [])
    frames = [
        pd.DataFrame({"step": [int(r[0]) for r in train], "kind": "train", "loss": [r[2] for r in train]}),
        pd.DataFrame({"step": [int(r[0]) for r in val], "kind": "val", "loss": [r[1] for r in val]}),
    ]
    # CurveRecorder's step counts the updates done before the batch: as curve.csv writes it
    return pd.concat(frames, ignore_index=True)


def usable(rows: pd.DataFrame, first_step: int) -> pd.DataFrame:
    """Rows after the warmup (the laws describe the loss after it), finite, one per (step, kind)."""
    rows = rows[(rows["step"] >= first_step) & np.isfinite(rows["loss"])]
    return rows.drop_duplicates(["step", "kind"], keep="last").sort_values(["kind", "step"]).reset_index(drop=True)


def first_step(spec: dict) -> int:
    """The first step a law is fitted from: the end of warmup (at least step 1)."""
    tokens_per_step = spec["batch_size"] * spec["context"]
    warmup = spec["warmup_tokens"] * (spec["tokens"] if spec["warmup_tokens"] <= 1 else 1)
    return max(1, math.ceil(warmup / tokens_per_step))


def run_trajectories(specs: dict[str, dict], curves: dict[str, pd.DataFrame]) -> list[Trajectory]:
    """The trajectories of these runs' curves: each run's own part, and one trunk per WSD family."""
    out, trunk_rows, trunk_spec = [], {}, {}
    for run_id, rows in curves.items():
        spec = specs[run_id]
        lrs = lr_sequence(spec)
        if wsd.is_wsd(spec):
            branch, family = wsd.branch_step(spec), wsd.family_id(spec)
            trunk_rows.setdefault(family, []).append(rows[rows["step"] <= branch])
            trunk_spec.setdefault(family, spec)
            rows = rows[rows["step"] > branch]
        out.append(Trajectory(run_id, spec["model"], spec, lrs, usable(rows, first_step(spec))))
    for family, parts in trunk_rows.items():
        out.append(trunk_trajectory(family, trunk_spec[family], parts))
    return out


def trunk_trajectory(family: str, spec: dict, parts: list[pd.DataFrame]) -> Trajectory:
    rows = usable(pd.concat(parts, ignore_index=True), first_step(spec))
    steps = int(rows["step"].max()) if len(rows) else 1
    return Trajectory(
        f"trunk {family}", spec["model"], spec, trunk_lr_sequence(spec, steps), rows, is_run=False, annealed=False
    )


def finished_runs(results: Path, run_ids) -> list[str]:
    """The runs among `run_ids` whose metrics.json says ok and that have a curve.csv."""
    done = []
    for run_id in run_ids:
        folder = results / "runs" / run_id
        metrics = folder / "metrics.json"
        if metrics.exists() and (folder / "curve.csv").exists() and read_json(metrics, "metrics").get("status") == "ok":
            done.append(run_id)
    return done

"""How well a law predicts what it was not fitted to, per model size: the basis of the choice.

Two checks, each a refit without the held-out rows:
- `leave-one-out`: each run's own rows (a WSD run's cooldown) left out, its final target predicted
  from the trunk and the other runs (only while another annealed run remains to fit the annealing);
- `beginning`: the held-out end of a curve: each trajectory's rows after the midpoint of its own
  measured steps left out, its last measured target predicted from its beginning and the others.
  (A first version cut every curve at one step, the midpoint of the longest: with a WSD study's
  trunk the only curve past it, it predicted the constant-lr trunk's end, where the two laws are
  one function, and said nothing about annealing.)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import ScalelabError
from .fitting import fit_law

MIN_ROWS = 8  # a fit on fewer target rows than this is not a check of the law


def _last_row(traj, kind: str):
    rows = traj.rows[traj.rows["kind"] == kind]
    return None if rows.empty else rows.sort_values("step").iloc[-1]


def _record(check, traj, row, fit) -> dict:
    predicted = float(np.exp(fit.log_predict(traj.lrs, int(row["step"]))[0]))
    observed = float(row["loss"])
    return {
        "check": check,
        "trajectory": traj.name,
        "step": int(row["step"]),
        "observed": observed,
        "predicted": predicted,
        "rel_error": predicted / observed - 1,
    }


def _enough(trajectories, kind) -> bool:
    return sum(int((t.rows["kind"] == kind).sum()) for t in trajectories) >= MIN_ROWS


def leave_one_out(law, trajectories, kind: str, **fit_args) -> list[dict]:
    out = []
    for traj in trajectories:
        final = traj.final_row(kind)
        if not traj.is_run or final is None:
            continue
        others = [t for t in trajectories if t is not traj]
        if not any(t.is_run and t.annealed and len(t.rows) for t in others) or not _enough(others, kind):
            continue
        try:
            fit = fit_law(law, others, **fit_args)
        except ScalelabError:
            continue
        out.append(_record("leave-one-out", traj, final, fit))
    return out


def beginning(law, trajectories, kind: str, **fit_args) -> list[dict]:
    """Each trajectory's own end: its rows after the midpoint of its measured steps left out (the
    other trajectories kept whole), its last measured target predicted."""
    out = []
    for traj in trajectories:
        rows = traj.rows
        last = _last_row(traj, kind)
        if last is None or len(rows) < 2:
            continue
        cut = (int(rows["step"].min()) + int(last["step"])) // 2
        early = replace(traj, rows=rows[rows["step"] <= cut])
        fitted = [t for t in trajectories if t is not traj] + ([early] if len(early.rows) else [])
        if not _enough(fitted, kind):
            continue
        try:
            fit = fit_law(law, fitted, **fit_args)
        except ScalelabError:
            continue
        out.append(_record("beginning", traj, last, fit))
    return out


def heldout_errors(law, trajectories, kind: str, **fit_args) -> list[dict]:
    return leave_one_out(law, trajectories, kind, **fit_args) + beginning(law, trajectories, kind, **fit_args)


def summary(records: list[dict]) -> dict:
    """mean and max |relative error|, and the rms of the log errors (the interval's model term)."""
    if not records:
        return {"n": 0, "mean_abs_rel_error": None, "max_abs_rel_error": None, "rms_log_error": None}
    rel = np.array([r["rel_error"] for r in records])
    return {
        "n": len(records),
        "mean_abs_rel_error": float(np.mean(np.abs(rel))),
        "max_abs_rel_error": float(np.max(np.abs(rel))),
        "rms_log_error": float(np.sqrt(np.mean(np.log1p(rel) ** 2))),
    }

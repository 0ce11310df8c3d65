"""Figures of the hyperparameter sweeps: the loss against the learning rate, with each size's
optimum as fit.json gives it (the section "Hyperparameter sweeps")."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .fmt import clause, finite, human, label
from .inputs import Study
from .plotting import MODEL_CMAP, CannotDraw, legend_with_diamonds, palette, size_label


def swept_keys(s: Study) -> list[str]:
    """The hyperparameters the fit was told were swept (fit.json settings.sweep_keys)."""
    keys = (s.fit.get("settings") or {}).get("sweep_keys") or (s.fit.get("selection") or {}).get("by") or []
    return [str(k) for k in keys] if isinstance(keys, list) else []


def hparam_groups(s: Study, key: str) -> list[dict]:
    """fit.json's per-(N, D) optima of one swept key (hyperparameters.<key>.groups), or []."""
    section = s.fit.get("hyperparameters")
    entry = section.get(key) if isinstance(section, dict) else None
    groups = entry.get("groups") if isinstance(entry, dict) else None
    return [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []


def _fit_optimum(groups: list[dict], params: float, tokens: float) -> dict | None:
    """The fit's group for this size at this token count (params within 1 %, tokens within 10 %)."""
    near = [
        g
        for g in groups
        if finite(g.get("params"))
        and finite(g.get("tokens"))
        and finite(g.get("optimum"))
        and abs(float(g["params"]) / params - 1) < 0.01
        and abs(float(g["tokens"]) / tokens - 1) < 0.10
    ]
    return min(near, key=lambda g: abs(np.log(float(g["tokens"]) / tokens))) if near else None


def _lr_curve(rows: pd.DataFrame, target: str, others: list[str]) -> pd.DataFrame:
    """Loss per lr: averaged over seeds at each setting, then the best of the other swept keys."""
    by = ["lr", *others]
    mean = rows.groupby(by, dropna=False)[target].mean().reset_index()
    return mean.groupby("lr")[target].min().reset_index().sort_values("lr")


def _lr_rows(s: Study) -> tuple[pd.DataFrame, float]:
    """The finished runs with a positive lr at the largest D, and that D; raises CannotDraw."""
    if "lr" not in swept_keys(s) or "lr" not in s.metrics.columns:
        raise CannotDraw(
            "Nothing was swept over the learning rate (grid.sweep has no lr), so there is no sensitivity to draw."
        )
    ok = s.ok.copy()
    ok["lr"] = pd.to_numeric(ok["lr"], errors="coerce")
    ok = ok[np.isfinite(ok["lr"]) & (ok["lr"] > 0)]
    if ok["lr"].nunique() < 2:
        raise CannotDraw("Fewer than two learning rates have finished runs, so there is no curve to draw.")
    # The largest D as the grid asked for it: a swept batch size rounds each run's D differently.
    d_col = "tokens_requested" if "tokens_requested" in ok.columns else s.d_col
    d_values = pd.to_numeric(ok[d_col], errors="coerce")
    if not np.isfinite(d_values).all():
        d_col, d_values = s.d_col, ok[s.d_col]
    top = d_values.max()
    return ok[np.isclose(d_values, top, rtol=1e-6)], top


def _lr_optimum(curve: pd.DataFrame, target: str, group: dict | None) -> tuple[float, float, bool]:
    """(lr, loss, at an edge) of one size's optimum: the fit's group, else the lowest point."""
    if group is not None:
        x, y, edge = float(group["optimum"]), group.get("optimum_loss"), bool(group.get("edge"))
        return x, float(y) if finite(y) else float(curve[target].min()), edge
    # the fit has no optimum here (e.g. fewer than 3 values): the lowest point, flagged at an edge
    best = int(np.argmin(curve[target].to_numpy(float)))
    edge = len(curve) >= 2 and best in (0, len(curve) - 1)
    return float(curve["lr"].iloc[best]), float(curve[target].iloc[best]), edge


def _lr_legend(ax, inside: bool, edges: list[str]) -> None:
    """The sizes, then what a filled and a hollow diamond mean (each only when drawn)."""
    legend_with_diamonds(
        ax, "optimum inside the sweep" if inside else None, "optimum at an edge: widen the sweep" if edges else None
    )


def _lr_note(s: Study, edges: list[str], from_data: list[str]) -> str:
    note = []
    if edges:
        note.append(f"Optimum at an edge of the sweep (widen it there): {', '.join(edges)}.")
    if from_data:
        why = (
            (s.fit.get("hyperparameters") or {}).get("lr_why")
            if isinstance(s.fit.get("hyperparameters"), dict)
            else s.fit.get("hyperparameters_why")
        )
        note.append(
            f"Marked at the lowest measured point, as fit.json has no lr optimum there"
            f"{': ' + clause(why) if why else ''}: {', '.join(from_data)}."
        )
    return " ".join(note)


def fig_lr_sensitivity(s: Study):
    rows, top = _lr_rows(s)
    others = [k for k in swept_keys(s) if k != "lr" and k in rows.columns]
    groups = hparam_groups(s, "lr")
    sizes = np.sort(rows[s.n_col].unique())
    names = s.model_names()
    fig, ax = plt.subplots()
    edges, from_data = [], []
    for size, color in zip(sizes, palette(len(sizes), MODEL_CMAP)):
        at_size = rows[rows[s.n_col] == size]
        curve = _lr_curve(at_size, s.target, others)
        ax.plot(curve["lr"], curve[s.target], "o-", color=color, lw=1.2, ms=4, label=size_label(names, size))
        group = _fit_optimum(groups, float(size), float(at_size[s.d_col].median()))
        x, y, edge = _lr_optimum(curve, s.target, group)
        if group is None:
            from_data.append(size_label(names, size))
        ax.plot(
            x,
            y,
            "D",
            ms=8,
            mec="black",
            mew=1,
            mfc="white" if edge else color,
            zorder=4,
            gid="edge" if edge else "optimum",
        )
        if edge:
            edges.append(size_label(names, size))
            ax.annotate("edge", (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8, color="0.25")
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate (lr)")
    ax.set_ylabel(label(s.target))
    ax.set_title(f"Loss vs learning rate at D = {human(top)} tokens")
    _lr_legend(ax, len(edges) < len(sizes), edges)
    return fig, _lr_note(s, edges, from_data)

"""Laws of the best hyperparameters, for fit.json's `hyperparameters` section.

For each swept column (e.g. lr), from every usable run of the sweeps (not only the best): the
optimum of each (N, D) group (HPARAM_RULE, `_hparam_group`), then power laws of that optimum in
N and in C (statsmodels OLS in log-log space) and the value they recommend at the next budget,
with the fit.txt lines that report them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm

from .common import SIZE_TOLERANCE, cluster, safe_exp, n_distinct

HPARAM_RULE = (
    "per (N, D) group, the loss averaged over seeds at each value; a quadratic in log(value) "
    "(statsmodels OLS on every run) through the best value and its neighbour on each side; "
    "if the best value is the smallest or largest swept, the optimum is that edge value "
    "(edge: true, a wider sweep is needed) and the group is left out of the laws"
)

HPARAM_COLUMNS = [
    "key",
    "params",
    "tokens",
    "flops",
    "n_values",
    "n_rows",
    "value_min",
    "value_max",
    "best_value",
    "optimum",
    "optimum_loss",
    "edge",
    "method",
]


def _hparam_group(rows: pd.DataFrame, column: str, others: list[str]) -> dict:
    """The optimum of one swept value in one (N, D) group (see HPARAM_RULE)."""
    if others:  # other swept keys: the slice through the group's best run
        best_row = rows.iloc[int(np.argmin(rows["loss"].to_numpy(float)))]
        same = np.ones(len(rows), dtype=bool)
        for other in others:
            same &= np.isclose(rows[other].to_numpy(float), float(best_row[other]), rtol=1e-9, equal_nan=True)
        rows = rows[same]
    value, loss = rows[column].to_numpy(float), rows["loss"].to_numpy(float)
    values, inverse = np.unique(value, return_inverse=True)
    mean_loss = np.bincount(inverse, loss) / np.bincount(inverse)
    out = {
        "params": float(rows["params"].median()),
        "tokens": float(rows["tokens"].median()),
        "flops": float(np.exp(np.log(rows["flops"]).mean())),
        "n_values": len(values),
        "n_rows": len(rows),
        "value_min": float(values[0]) if len(values) else None,
        "value_max": float(values[-1]) if len(values) else None,
        "best_value": None,
        "optimum": None,
        "optimum_loss": None,
        "edge": None,
        "method": None,
    }
    if len(values) < 3:
        out["reason"] = f"{len(values)} distinct values; the optimum needs 3 or more"
        return out
    best = int(np.argmin(mean_loss))
    out["best_value"] = float(values[best])
    if best in (0, len(values) - 1):
        out.update(
            optimum=float(values[best]),
            optimum_loss=float(mean_loss[best]),
            edge=True,
            method="edge: the best value is the " + ("smallest" if best == 0 else "largest") + " swept",
        )
        return out
    out.update(_interior_optimum(value, loss, inverse, values, mean_loss, best))
    return out


def _interior_optimum(value, loss, inverse, values, mean_loss, best: int) -> dict:
    """The optimum inside the swept range: a quadratic in log(value) through the best value and
    its two neighbours (statsmodels OLS), or the best value where the loss is flat around it."""
    window = np.isin(inverse, [best - 1, best, best + 1])
    u = np.log(value[window]) - math.log(values[best])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ols = sm.OLS(loss[window], np.column_stack([np.ones_like(u), u, u * u])).fit()
    c0, c1, c2 = ols.params
    if c2 <= 0:  # ties: the loss is flat around the best value
        return {
            "optimum": float(values[best]),
            "optimum_loss": float(mean_loss[best]),
            "edge": False,
            "method": "best value (the loss is flat around it)",
        }
    low, high = math.log(values[best - 1] / values[best]), math.log(values[best + 1] / values[best])
    u_opt = float(np.clip(-c1 / (2 * c2), low, high))
    return {
        "optimum": float(values[best] * math.exp(u_opt)),
        "optimum_loss": float(c0 + c1 * u_opt + c2 * u_opt**2),
        "edge": False,
        "method": "quadratic in log(value) through the best value and its neighbours",
    }


def _loglog_law(x, y) -> dict:
    """log y = log coefficient + exponent·log x by statsmodels OLS, with 95 % intervals."""
    X = sm.add_constant(np.log(x))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ols = sm.OLS(np.log(y), X).fit()
        ci = np.asarray(ols.conf_int(0.05))
    finite = np.all(np.isfinite(ci))
    return {
        "coefficient": safe_exp(ols.params[0]),
        "exponent": float(ols.params[1]),
        "ci95": {
            "coefficient": [safe_exp(ci[0, 0]), safe_exp(ci[0, 1])] if finite else None,
            "exponent": [float(ci[1, 0]), float(ci[1, 1])] if finite else None,
        },
        "r2": float(ols.rsquared),
        "n_groups": len(x),
        "_ols": ols,
    }


def fit_hyperparameters(points: pd.DataFrame, keys, predict_at: float | None):
    """The fit.json `hyperparameters` section (None when nothing could be fitted), why not, the
    tidy table (one row per key and (N, D) group) and fit.txt lines.

    Per key, from every usable run (not only the best): the optimum of each (N, D) group (see
    HPARAM_RULE), then optimum = coefficient·N^exponent and coefficient·C^exponent by OLS in
    log-log space over the groups whose optimum is not at an edge of the sweep, and the optimum
    predicted at `predict_at` FLOPs with the law's 95 % confidence and prediction intervals.
    """
    table = pd.DataFrame(columns=HPARAM_COLUMNS)
    if not keys:
        return None, "no swept hyperparameters (set sweep_keys in --spec, or --select-best-by)", table, []
    if len(points) == 0:
        return None, "no usable rows", table, []
    section, rows, text, reasons = {}, [], [], []
    group_labels = pd.MultiIndex.from_arrays(
        [cluster(points["params"], SIZE_TOLERANCE), cluster(points["tokens"], SIZE_TOLERANCE)]
    )
    labels = pd.factorize(group_labels, sort=True)[0]
    for key in keys:
        entry, why = _key_entry(points, labels, key, keys, predict_at)
        if why:
            reasons.append((key, why))
            continue
        section[key] = entry
        rows += [{"key": key, **{c: g[c] for c in HPARAM_COLUMNS[1:]}} for g in entry["groups"]]
        text += _key_text(key, entry)
    if not section:
        return None, "; ".join(f"{key}: {why}" for key, why in reasons), table, []
    for key, why in reasons:  # the fit.json convention one level down: null and <key>_why
        section[key], section[f"{key}_why"] = None, why
        text.append(f"-- {key}: not fitted: {why}")
    return section, None, pd.DataFrame(rows, columns=HPARAM_COLUMNS), text


def _key_entry(points: pd.DataFrame, labels, key: str, keys, predict_at) -> tuple[dict | None, str | None]:
    """One swept key's entry of the section (its groups, laws and recommendation), or why not."""
    column = f"hp:{key}"
    others = [f"hp:{k}" for k in keys if k != key]
    usable = np.isfinite(points[column].to_numpy(float)) & (points[column].to_numpy(float) > 0)
    groups, skipped = [], []
    for label in np.unique(labels[usable]):
        group = _hparam_group(points[usable & (labels == label)], column, others)
        if group.get("reason"):
            skipped.append({"params": group["params"], "tokens": group["tokens"], "reason": group.pop("reason")})
        else:
            groups.append(group)
    if not groups:
        return None, (
            f"no (N, D) group has runs at 3 or more values of {key}"
            + ("" if usable.any() else f" (no run has a positive {key})")
        )
    entry = {
        "rule": HPARAM_RULE,
        "n_rows": int(usable.sum()),
        "n_rows_without_value": int((~usable).sum()),
        "groups": groups,
        "n_groups": len(groups),
        "n_edge": sum(bool(g["edge"]) for g in groups),
        "skipped": skipped,
        "law_N": None,
        "law_C": None,
        "recommended": None,
    }
    _fit_laws(entry, [g for g in groups if not g["edge"]])
    _recommend(entry, predict_at)
    for law_key in ("law_N", "law_C"):
        if entry[law_key]:
            entry[law_key].pop("_ols")
    return entry, None


def _fit_laws(entry: dict, inner: list[dict]) -> None:
    """law_N and law_C (or law_N_why, law_C_why) from the groups whose optimum is inside the sweep."""
    for law_key, var in (("law_N", "params"), ("law_C", "flops")):
        x = np.array([g[var] for g in inner])
        if len(inner) < 3:
            entry[f"{law_key}_why"] = (
                f"{len(inner)} groups have an optimum inside the sweep "
                f"({entry['n_edge']} at an edge); the law needs 3 or more"
            )
        elif n_distinct(x) < 2:
            entry[f"{law_key}_why"] = f"every group has the same {var}"
        else:
            entry[law_key] = _loglog_law(x, np.array([g["optimum"] for g in inner]))


def _recommend(entry: dict, predict_at: float | None) -> None:
    """The value the law in C recommends at `predict_at` FLOPs (or recommended_why)."""
    law_c = entry["law_C"]
    if law_c is None:
        entry["recommended_why"] = f"no law in C ({entry['law_C_why']})"
    elif predict_at is None:
        entry["recommended_why"] = "no compute budget to predict at"
    else:
        frame = law_c["_ols"].get_prediction(np.array([[1.0, math.log(predict_at)]])).summary_frame(alpha=0.05)
        first = frame.iloc[0]
        entry["recommended"] = {
            "flops": float(predict_at),
            "value": safe_exp(first["mean"]),
            "ci95": [safe_exp(first["mean_ci_lower"]), safe_exp(first["mean_ci_upper"])],
            "pi95": [safe_exp(first["obs_ci_lower"]), safe_exp(first["obs_ci_upper"])],
        }


def _key_text(key: str, entry: dict) -> list[str]:
    """fit.txt lines for one swept key: its groups' optima, its laws and its recommendation."""
    groups = entry["groups"]
    optima = pd.DataFrame(groups)[["params", "tokens", "n_values", "best_value", "optimum", "edge"]]
    text = [
        f"-- {key}: optimum per (N, D) group ({entry['n_edge']} of {len(groups)} at an edge of the sweep)",
        optima.to_string(index=False),
    ]
    for law_key, symbol in (("law_N", "N"), ("law_C", "C")):
        law = entry[law_key]
        if law:
            text.append(
                f"{key}_opt = {law['coefficient']:.4g} * {symbol}^{law['exponent']:.4f}, exponent 95 % CI "
                f"[{law['ci95']['exponent'][0]:.4f}, {law['ci95']['exponent'][1]:.4f}] "
                f"({law['n_groups']} groups, R2 {law['r2']:.3f})"
                if law["ci95"]["exponent"]
                else f"{key}_opt = {law['coefficient']:.4g} * {symbol}^{law['exponent']:.4f}"
            )
        else:
            text.append(f"{key}_opt ~ {symbol}: not fitted: {entry[law_key + '_why']}")
    rec = entry["recommended"]
    text.append(
        f"recommended {key} at C = {rec['flops']:.4g} FLOPs: {rec['value']:.4g} (95 % CI "
        f"[{rec['ci95'][0]:.4g}, {rec['ci95'][1]:.4g}], prediction interval [{rec['pi95'][0]:.4g}, "
        f"{rec['pi95'][1]:.4g}])"
        if rec
        else f"recommended {key}: none: {entry['recommended_why']}"
    )
    if entry["n_edge"]:
        text.append(f"note: {entry['n_edge']} groups have their best {key} at an edge of the sweep: widen it there")
    return text

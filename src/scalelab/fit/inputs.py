"""Reading any metrics CSV into the points the fits use.

`read_metrics` reads the CSV; `prepare` picks the target, size, token and FLOPs columns (by flag,
by setting or by the default names), sets aside the rows that cannot be fitted with a reason each
(fit.json's `excluded`), carries the sweep columns along, and sorts the points into a canonical
order, so no result depends on the row order of the CSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ScalelabError


LOSS_RANGE = (1e-4, 1e4)  # plausible losses (nats, bits or perplexity); --allow-any-loss fits others
# The most usable rows one fit takes: the law forms' fits and the bootstrap grow with the rows
# (docs/benchmarks.md, "Fitting: time by rows"); a study has tens to thousands of runs, not millions.
# 200,000: the largest table the start grid's screening on a subsample is tested with (test_fit_forms).
MAX_FIT_ROWS = 200_000
# A row whose target a curve law predicted (scalelab.curves.endpoints; config grid.trained_cooldowns): fitted
# at its prediction, and drawn from its log-normal predictive distribution (sd PREDICTED_LOG_SD) in every
# bootstrap resample. It is never a measurement the law is checked against (scalelab.fit.choose, holdout).
PREDICTED = "predicted"
PREDICTED_LOG_SD = "predicted_log_sd"


def check_row_count(n_rows: int, source: str) -> None:
    """Refuse, in one line, more usable rows than MAX_FIT_ROWS (before any long fit starts)."""
    if n_rows > MAX_FIT_ROWS:
        raise ScalelabError(
            f"{source}: {n_rows} usable rows, more than one fit takes ({MAX_FIT_ROWS}); keep one row per "
            f"trained model (e.g. its final evaluation, not every logged step), or fit a sample of the rows"
        )


def duplicate_rows_warning(points: pd.DataFrame, columns: dict) -> str | None:
    """One line when rows repeat another row's params, tokens and target (a CSV appended twice, say):
    they are fitted as they are, each as one more observation, which narrows every interval."""
    repeated = points.duplicated(["params", "tokens", "loss"], keep="first")
    if not repeated.any():
        return None
    example = points.loc[repeated, "run"].iloc[0]
    return (
        f"{int(repeated.sum())} row(s) repeat another row's {columns['params']}, {columns['tokens']} and "
        f"{columns['loss']} exactly (e.g. run {example}); they are fitted as they are, each as one more "
        f"observation, which narrows the intervals: drop the copies if they are not separate runs"
    )


def rows_sha256(points: pd.DataFrame) -> str:
    """The fingerprint of the rows a fit used (run, params, tokens, flops, loss, in the canonical
    order), so a fit folder can be matched to the CSV it came from: fit.json's `inputs.rows_sha256`."""
    import hashlib

    digest = hashlib.sha256()
    for row in points[["run", "params", "tokens", "flops", "loss"]].itertuples(index=False):
        digest.update(("\t".join([str(row[0]), *(repr(float(v)) for v in row[1:])]) + "\n").encode())
    return digest.hexdigest()


def data_range(points: pd.DataFrame) -> dict:
    """[min, max] of the fitted runs' params, tokens, tokens per parameter and FLOPs: fit.json's
    `inputs.range`, against which a prediction says how far it extrapolates."""
    if not len(points):
        return {}
    per_param = points["tokens"] / points["params"]
    return {
        name: [float(values.min()), float(values.max())]
        for name, values in (
            ("params", points["params"]),
            ("tokens", points["tokens"]),
            ("tokens_per_param", per_param),
            ("flops", points["flops"]),
        )
    }


def _check_header(path: Path) -> None:
    """Refuse a CSV whose header names a column twice (pandas would silently rename the second)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, csv.Error):
        return  # pandas reports it below
    seen = set()
    for name in (h.strip() for h in header):
        if name in seen and name:
            raise ScalelabError(f"{path}: the column '{name}' appears twice in the header; keep one")
        seen.add(name)


def read_metrics(path) -> pd.DataFrame:
    path = Path(path)
    if path.is_file():
        _check_header(path)
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise ScalelabError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise ScalelabError(f"{path}: the file is empty (expected a CSV with a header row)") from None
    except (ValueError, UnicodeDecodeError, IsADirectoryError) as exc:  # ParserError is a ValueError
        raise ScalelabError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None


def _columns(df, loss_col, params_col, tokens_col, flops_col, source):
    def need(col, flag):
        if col not in df.columns:
            raise ScalelabError(
                f"{source}: no column '{col}' (set it with {flag}); "
                f"columns are: {', '.join(map(str, df.columns)) or 'none'}"
            )
        return col

    if loss_col is None:  # the default target: val_loss, else loss
        if "loss" not in df.columns and "val_loss" not in df.columns:
            raise ScalelabError(
                f"{source}: no 'loss' or 'val_loss' column (set one with --loss-col); "
                f"columns are: {', '.join(map(str, df.columns)) or 'none'}"
            )
        loss_col = "val_loss" if "val_loss" in df.columns else "loss"
    if flops_col is None:
        # `--params-col params_total` goes with `flops_total`, so grouping uses one convention.
        matching = "flops" + params_col[len("params") :] if params_col.startswith("params") else None
        flops_col = next((c for c in (matching, "flops") if c and c in df.columns), None)
    else:
        need(flops_col, "--flops-col")
    return need(loss_col, "--loss-col"), need(params_col, "--params-col"), need(tokens_col, "--tokens-col"), flops_col


def _flags(column: pd.Series, name: str, source: str) -> np.ndarray:
    """A true/false column (True/False, 1/0, yes/no) as 1.0/0.0, empty cells NaN."""
    words = {"true": 1.0, "1": 1.0, "1.0": 1.0, "yes": 1.0, "false": 0.0, "0": 0.0, "0.0": 0.0, "no": 0.0}
    out = np.full(len(column), np.nan)
    for i, value in enumerate(column):
        if pd.isna(value):
            continue
        text = str(value).strip().lower()
        if text not in words:
            raise ScalelabError(f"{source}: column '{name}' must be true or false, got {value!r} in row {i + 2}")
        out[i] = words[text]
    return out


def _exclusion_reasons(df, values: dict, columns: dict) -> np.ndarray:
    """Per row, the first reason it cannot be fitted (a status other than ok, then a missing or
    non-positive loss, params, tokens or flops), or None. Vectorised: a CSV may hold a million rows."""
    reasons = np.full(len(df), None, dtype=object)
    status = df["status"] if "status" in df.columns and df["status"].notna().any() else None
    if status is not None:
        text = status.astype(str).str.strip()
        bad = ((text != "ok") & ~((text == PREDICTED) & _has_log_sd(df))).to_numpy()
        reasons[bad] = np.where(status.isna().to_numpy()[bad], "no status", text.to_numpy()[bad])
    for name, col in columns.items():
        open_rows = reasons == None  # noqa: E711 (elementwise)
        reasons[open_rows & ~np.isfinite(values[name])] = f"{col} is missing or not a finite number"
        open_rows = reasons == None  # noqa: E711
        with np.errstate(invalid="ignore"):
            reasons[open_rows & (values[name] <= 0)] = f"{col} is not positive"
    return reasons


def _has_log_sd(df) -> pd.Series:
    """Per row: a finite, non-negative PREDICTED_LOG_SD (a predicted row without one is not fitted)."""
    if PREDICTED_LOG_SD not in df.columns:
        return pd.Series(False, index=df.index)
    sd = pd.to_numeric(df[PREDICTED_LOG_SD], errors="coerce")
    return pd.Series(np.isfinite(sd) & (sd >= 0), index=df.index)


def _add_predicted_columns(points, df, keep: list) -> None:
    """`predicted` (bool) and `log_sd` of the kept rows, only when some are predicted endpoints: a
    table without any gets exactly the points it had."""
    if "status" not in df.columns:
        return
    predicted = (df["status"].astype(str).str.strip() == PREDICTED).to_numpy()[keep]
    if predicted.any():
        points["predicted"] = predicted
        sd = pd.to_numeric(df[PREDICTED_LOG_SD], errors="coerce").to_numpy(float)[keep]
        points["log_sd"] = np.where(predicted, sd, 0.0)


def _check_loss_range(loss_values, keep: list, loss_col: str, source: str) -> None:
    """Refuse, in one line, kept losses outside LOSS_RANGE (say, a column of accuracies)."""
    loss = loss_values[keep]
    outside = (loss < LOSS_RANGE[0]) | (loss > LOSS_RANGE[1])
    if outside.any():
        i = keep[int(np.flatnonzero(outside)[0])]
        raise ScalelabError(
            f"{source}: column '{loss_col}' holds {int(outside.sum())} value(s) outside the "
            f"plausible loss range {LOSS_RANGE[0]:g}..{LOSS_RANGE[1]:g} (e.g. {loss_values[i]:.4g} "
            f"in row {i + 2}); fix the column, or allow it with --allow-any-loss"
        )


def _add_optional_columns(points, df, keep: list, sweep_keys, source: str) -> None:
    """unique_tokens, and the sweep columns: seed and sweep_group identify a grid point,
    best_in_sweep marks its best run, `hp:<key>` holds each swept value."""
    if "unique_tokens" in df.columns:  # the data-constrained form's U; a row without it is not repeated data
        unique = pd.to_numeric(df["unique_tokens"], errors="coerce").to_numpy(float)[keep]
        points["unique_tokens"] = np.where(np.isfinite(unique) & (unique > 0), unique, points["tokens"])
    if "seed" in df.columns and df["seed"].notna().any():
        points["seed"] = df["seed"].iloc[keep].astype(str).where(df["seed"].iloc[keep].notna(), "").to_numpy()
    if "sweep_group" in df.columns and df["sweep_group"].notna().any():
        points["sweep_group"] = (
            df["sweep_group"].iloc[keep].astype(str).where(df["sweep_group"].iloc[keep].notna(), "").to_numpy()
        )
    if "best_in_sweep" in df.columns and df["best_in_sweep"].notna().any():
        points["best_in_sweep"] = _flags(df["best_in_sweep"], "best_in_sweep", source)[keep]
    for key in sweep_keys:
        points[f"hp:{key}"] = pd.to_numeric(df[key], errors="coerce").to_numpy(float)[keep]


def prepare(
    df,
    loss_col=None,
    params_col="params",
    tokens_col="tokens",
    flops_col=None,
    source="metrics",
    sweep_keys=(),
    allow_any_loss=False,
):
    """Usable points (run, params, tokens, flops, loss, isoflop_budget, and seed, sweep_group,
    best_in_sweep and the `sweep_keys` columns) in a canonical order, the excluded rows with
    reasons, and the columns used."""
    loss_col, params_col, tokens_col, flops_col = _columns(df, loss_col, params_col, tokens_col, flops_col, source)
    for key in sweep_keys:
        if key not in df.columns:
            raise ScalelabError(
                f"{source}: no column '{key}' for the swept hyperparameter (sweep_keys / "
                f"--select-best-by); columns are: {', '.join(map(str, df.columns))}"
            )
    runs = df["run"].astype(str).tolist() if "run" in df.columns else list(range(len(df)))
    values = {
        name: pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        for name, col in (("loss", loss_col), ("params", params_col), ("tokens", tokens_col))
    }
    values["flops"] = (
        pd.to_numeric(df[flops_col], errors="coerce").to_numpy(float)
        if flops_col
        else 6 * values["params"] * values["tokens"]
    )
    columns = {"loss": loss_col, "params": params_col, "tokens": tokens_col, "flops": flops_col or "6*params*tokens"}
    reasons = _exclusion_reasons(df, values, columns)
    keep = np.flatnonzero(reasons == None).tolist()  # noqa: E711
    excluded = [{"run": runs[i], "reason": reasons[i]} for i in np.flatnonzero(reasons != None)]  # noqa: E711
    if not allow_any_loss and keep:
        _check_loss_range(values["loss"], keep, loss_col, source)
    budget = (
        pd.to_numeric(df["isoflop_budget"], errors="coerce").to_numpy(float)
        if "isoflop_budget" in df.columns
        else np.full(len(df), np.nan)
    )
    points = pd.DataFrame(
        {"run": [runs[i] for i in keep], **{k: v[keep] for k, v in values.items()}, "isoflop_budget": budget[keep]}
    )
    _add_optional_columns(points, df, keep, sweep_keys, source)
    _add_predicted_columns(points, df, keep)
    # A canonical order makes every result, bootstrap included, independent of the row order.
    points["_key"] = points["run"].astype(str)
    points = points.sort_values(["params", "tokens", "flops", "loss", "_key"], kind="mergesort")
    points = points.drop(columns="_key").reset_index(drop=True)
    return points, excluded, columns

"""A finished study in a notebook: `scalelab.load_study(path)`.

Reads what the workflow leaves under `results/` (see docs/architecture.md) and answers the two
questions a scaling law is for. A fit.json with law forms (schema_version 2) is read by
`scalelab.load_fit` (scalelab.laws.fitted): the chosen form, with 95 % prediction intervals, and the
columns `mean, mean_ci_lower/upper, obs_ci_lower/upper` (statsmodels' names, one per quantity).
An older fit.json falls back to its Approach-3 law of `results/fit/fit.json`:

- `predict(N, D)`: the loss of a model of N parameters trained on D tokens;
- `allocate(C)`: the compute-optimal N and D (and their loss) for a budget of C FLOPs.

Both give percentile intervals from the bootstrap resamples that `scalelab fit` wrote to
`results/fit/bootstrap.csv`, computed exactly as fit.json's `allocation` section computes them
(each resample's own law, its own optimum). Only numpy and pandas are imported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ScalelabError
from .fitted import positive_values
from .law import LAW_KEYS, compute_optimal, predict_loss

__all__ = ["Study", "load_study"]


def _read_csv(path: Path, what: str, required: tuple[str, ...] = ()) -> pd.DataFrame:
    if not path.is_file():
        raise ScalelabError(f"{path}: {what} not found")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ScalelabError(f"{path}: {what} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScalelabError(f"{path}: {what} is not a readable CSV ({reason})") from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ScalelabError(f"{path}: {what} lacks the column(s) {', '.join(missing)}")
    return table


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ScalelabError(f"{path}: {what} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScalelabError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ScalelabError(f"{path}: {what} is not a JSON object")
    return data


def _results_dir(path) -> Path:
    """The study's `results/` folder, given the study folder or `results/` itself."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ScalelabError(f"{path}: no such study folder")
    if (path / "results").is_dir():
        return path / "results"
    if (path / "metrics.csv").exists() or (path / "fit").is_dir():
        return path
    raise ScalelabError(f"{path / 'results' / 'metrics.csv'}: study results not found (has the workflow run?)")


def _interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-column percentile interval over the finite rows of `samples` (NaN with fewer than 2)."""
    low, high = np.full(samples.shape[1], np.nan), np.full(samples.shape[1], np.nan)
    tail = (1 - level) / 2 * 100
    for j in range(samples.shape[1]):
        column = samples[:, j]
        column = column[np.isfinite(column)]
        if len(column) >= 2:
            low[j], high[j] = np.percentile(column, [tail, 100 - tail])
    return low, high


class Study:
    """One finished study, read from its `results/` folder.

    Attributes: `path` (the results folder), `metrics` (metrics.csv), `fit` (fit.json as a dict),
    `curves` (every run's curve.csv in one long table with a `run` column), `bootstrap` (the
    resampled Approach-3 laws, one row each; empty without a bootstrap), `law` (the fitted
    E, A, B, alpha, beta; None when Approach 3 was not fitted or fit.json holds a null estimate)
    and `params_column` (the metrics column N stands for: `params` or `params_total`, after
    `fit.params`).
    """

    def __init__(self, path):
        self.path = _results_dir(path)
        self.metrics = _read_csv(self.path / "metrics.csv", "metrics table", ("run",))
        self.fit = _read_json(self.path / "fit" / "fit.json", "fit result")
        self.bootstrap = _read_csv(self.path / "fit" / "bootstrap.csv", "bootstrap table")
        self.curves = self._read_curves()
        self._unusable = None  # why the law cannot be used, when fit.json has it but not all of it
        self.fitted = None  # scalelab.laws.fitted.FittedLaw for a fit.json with law forms
        if "forms" in self.fit and self.fit.get("chosen_form") is None:
            # a study too small for a law (the usual first study) opens; only predict refuses
            self.law = None
            self._unusable = f"no law to predict with: {self.fit.get('chosen_form_why') or 'no form was chosen'}"
        elif "forms" in self.fit:
            from .fitted import load_fit

            self.fitted = load_fit(self.path / "fit")  # checks fit.json against its schema, too
            self.law = self.fitted.law
        else:
            self.law = self._read_law()
        self.params_column = (self.fit.get("columns") or {}).get("params", "params")

    def _read_curves(self) -> pd.DataFrame:
        frames = []
        statuses = self.metrics["status"] if "status" in self.metrics else pd.Series("ok", index=self.metrics.index)
        for run, status in zip(self.metrics["run"], statuses):
            if status == "missing":  # aggregate keeps a row for a run without outputs
                continue
            curve = _read_csv(self.path / "runs" / str(run) / "curve.csv", "training curve", ("step",))
            frames.append(curve.assign(run=run)[["run", *curve.columns]])
        if not frames:
            return pd.DataFrame(columns=["run", "step", "tokens", "flops", "lr", "train_loss", "val_loss"])
        return pd.concat(frames, ignore_index=True)

    def _read_law(self) -> dict | None:
        where = self.path / "fit" / "fit.json"
        if "approach3" not in self.fit:
            raise ScalelabError(f"{where}: fit result has no approach3 section")
        section = self.fit["approach3"]
        if section is None:
            return None
        if not isinstance(section, dict):
            raise ScalelabError(f"{where}: approach3 is not an object")
        law = {}
        for key in LAW_KEYS:
            if key not in section:
                raise ScalelabError(f"{where}: approach3.{key} is missing")
            value = section[key]
            if value is None:  # fit.json writes an infinite or NaN estimate as null
                self._unusable = f"approach3.{key} is null (the fit gave no finite value)"
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ScalelabError(f"{where}: approach3.{key} is not a number ({value!r})")
            law[key] = float(value)
            # The bounds fit.json's schema sets (an older file is read without it): no law has a
            # negative exponent or coefficient, and one that does predicts nonsense.
            low, high = (0.0, 10.0) if key in ("alpha", "beta") else (0.0, math.inf)
            if not low <= law[key] <= high:
                raise ScalelabError(
                    f"{where}: approach3.{key} = {value!r} is outside [{low:g}, {high:g}]; "
                    "this fit.json cannot come from scalelab fit"
                )
        if self._unusable:
            return None
        if len(self.bootstrap):
            missing = [key for key in LAW_KEYS if key not in self.bootstrap.columns]
            if missing:
                raise ScalelabError(
                    f"{self.path / 'fit' / 'bootstrap.csv'}: bootstrap table lacks the column(s) {', '.join(missing)}"
                )
        return law

    # ----------------------------------------------------------------------------------------

    def _require_law(self) -> dict:
        if self._unusable:
            raise ScalelabError(f"{self.path / 'fit' / 'fit.json'}: {self._unusable}")
        if self.law is None:
            why = self.fit.get("approach3_why", "no reason recorded")
            raise ScalelabError(f"{self.path / 'fit' / 'fit.json'}: Approach 3 was not fitted ({why})")
        return self.law

    def _samples(self) -> dict[str, np.ndarray] | None:
        if not len(self.bootstrap):
            return None
        return {key: pd.to_numeric(self.bootstrap[key], errors="coerce").to_numpy(float) for key in LAW_KEYS}

    def predict(self, N, D, alpha=None, level=None) -> pd.DataFrame:
        """Predicted loss of N parameters trained on D tokens (numbers or lists, broadcast together).

        One row per (N, D), as `scalelab.load_fit(...).predict`: `params, tokens, mean`,
        `mean_ci_lower/upper` (the law's own uncertainty) and `obs_ci_lower/upper` (a new run's loss),
        at 1 − alpha (default 0.05; `level=` = 1 − alpha also works). From a fit folder without
        forms (an older layout) the law's interval comes from the bootstrap resamples, a new run's is
        NaN, and both are NaN when the fit had none. N counts parameters as the fit did.
        """
        from .inference import interval_level

        level = interval_level(alpha, level)
        if self.fitted is not None:
            return self.fitted.predict(N, D, level=level)
        law = self._require_law()
        try:
            params, tokens = np.broadcast_arrays(positive_values(N, "N"), positive_values(D, "D"))
        except ValueError:
            raise ScalelabError(
                f"N and D must have the same length (or one be a single number), got {np.size(N)} and {np.size(D)}"
            ) from None
        loss = predict_loss(params, tokens, **law)
        low = high = np.full(len(params), np.nan)
        samples = self._samples()
        if samples is not None:
            with np.errstate(all="ignore"):
                grid = predict_loss(
                    params[None, :], tokens[None, :], **{key: samples[key][:, None] for key in LAW_KEYS}
                )
            low, high = _interval(grid, level)
        nan = np.full(len(params), np.nan)
        return pd.DataFrame(
            {
                "params": params,
                "tokens": tokens,
                "mean": loss,
                "mean_ci_lower": low,
                "mean_ci_upper": high,
                "obs_ci_lower": nan,
                "obs_ci_upper": nan,
            }
        )

    def allocate(self, C, level: float = 0.95) -> pd.DataFrame:
        """The compute-optimal split of C FLOPs (a number or a list), at C = 6·N·D: load_fit's table
        (`flops, params, tokens, tokens_per_param, loss, low, high, params_low/high, tokens_low/high`,
        extrapolation), whose numbers fit.json's `allocation` records as n_opt, d_opt, loss_pred and their ci95.

        A fit.json from before the law forms has only Approach 3 and its bootstrap: the same columns,
        each interval from each resample's own optimum (NaN without a bootstrap).
        """
        if self.fitted is not None:
            return self.fitted.allocate(C, level=level)
        law = self._require_law()
        if not (law["alpha"] > 0 and law["beta"] > 0):
            raise ScalelabError(
                f"{self.path / 'fit' / 'fit.json'}: the fitted exponents are not both positive "
                f"(alpha {law['alpha']:.3g}, beta {law['beta']:.3g}), so there is no "
                "compute-optimal split"
            )
        flops = positive_values(C, "C")
        _check_level(level)
        n_opt, d_opt = compute_optimal(flops, law["A"], law["B"], law["alpha"], law["beta"])
        table = pd.DataFrame(
            {
                "flops": flops,
                "params": n_opt,
                "tokens": d_opt,
                "tokens_per_param": d_opt / n_opt,
                "loss": predict_loss(n_opt, d_opt, **law),
            }
        )
        nan = (np.full(len(flops), np.nan),) * 2
        bands = {"loss": nan, "params": nan, "tokens": nan}
        samples = self._samples()
        if samples is not None:
            with np.errstate(all="ignore"):
                s = {key: value[:, None] for key, value in samples.items()}
                n_b, d_b = compute_optimal(flops[None, :], s["A"], s["B"], s["alpha"], s["beta"])
                loss_b = predict_loss(n_b, d_b, **s)
            bands = {"loss": _interval(loss_b, level), "params": _interval(n_b, level), "tokens": _interval(d_b, level)}
        table["low"], table["high"] = bands["loss"]
        for name in ("params", "tokens"):
            table[f"{name}_low"], table[f"{name}_high"] = bands[name]
        return table

    def __repr__(self) -> str:
        if self.fitted is not None:
            return f"<scalelab Study {self.path}: {len(self.metrics)} runs; {self.fitted!r}>"
        law = (
            f"alpha {self.law['alpha']:.3g}, beta {self.law['beta']:.3g}, E {self.law['E']:.3g}"
            if self.law
            else self._unusable or "Approach 3 not fitted"
        )
        return (
            f"<scalelab Study {self.path}: {len(self.metrics)} runs, {len(self.bootstrap)} bootstrap resamples; {law}>"
        )


def _check_level(level) -> None:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ScalelabError(f"level must be between 0 and 1, got {level!r}")


def load_study(path=".") -> Study:
    """Read a finished study: `path` is the folder Snakemake ran in (holding `results/`) or
    that `results/` folder itself. Bad or missing files raise a one-line `ScalelabError`."""
    return Study(path)

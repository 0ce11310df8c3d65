"""A fitted law from any `scalelab fit --out FOLDER`: `scalelab.load_fit(folder)`.

It reads fit.json (checked against its schema) and forms_bootstrap.csv, and answers with the
chosen form (`fit.json`'s `chosen_form`):

- `predict(N, D)`: mean, mean_ci_lower/upper, obs_ci_lower/upper, one row per (N, D), and
  `extrapolation`: how far (N, D) lies outside the fitted runs' N, D and tokens per parameter ('' inside);
- `allocate(C)`: the compute-optimal params and tokens at C = 6·N·D, their loss and intervals (N_opt's
  mixes every form and widens with each form's `optimum_drift` beyond the fitted compute);
- `params`, `conf_int(alpha)`, `summary()` as statsmodels' results have them (scalelab.laws.inference).

How the 95 % prediction interval is built (the same code gives fit.json's held-out, allocation
and next-budget intervals, so they agree with what a notebook computes):

1. Each fitted form predicts log loss with its point law, and the spread of that prediction over
   its bootstrap resamples (each resample's own law) is its parameter uncertainty: the
   interquartile range / 1.349, robust to a few wild resamples (0 without a bootstrap).
2. The residual scatter of single runs (`noise_sigma`: each form's RMS log residual with n − k
   degrees of freedom, its variance averaged by the forms' weights) is added in quadrature, so the interval is for a new
   run's loss, not only for the law's mean: each form is Normal(log point, spread^2 + sigma^2).
   (A form that misfits has a larger scatter of its own; that is its misfit, not the runs' noise,
   and it enters through its predictions.)
   Outside the fitted runs each form's extrapolation scatter is added too: `extrapolation_sigma`
   (fit.json, per form) times `log_distance` (e-folds outside `inputs.range`). It is learnt from
   the form's rolling-origin checks at fit time (scalelab.fit.evidence.extrapolation_sigma, an
   upper bound), so a law that extrapolated badly within the study gets intervals that widen quickly
   outside it.
3. The forms are mixed by their pseudo-BMA+ weights from the rolling checks (`forms.<name>.weight`):
   where the forms disagree by more than their own intervals, the interval widens toward the others.
4. low and high are the 2.5 % and 97.5 % quantiles of the mixture, widened to contain the
   chosen form's point prediction `loss`.

Numpy and pandas only (no scipy), so a notebook loads it fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ScalelabError
from .fitted_metrics import MetricLaw
from .law import FORMS, LawForm, optimal_allocation
from .mixture import predictive_interval

__all__ = ["FittedLaw", "load_fit", "predictive_interval"]

LEVEL = 0.95
BOOTSTRAP_FILE = "forms_bootstrap.csv"
METRICS_BOOTSTRAP_FILE = "metrics_bootstrap.csv"


def log_distance(params, tokens, ranges: dict) -> np.ndarray:
    """How far each (N, D) lies outside the fitted runs, in e-folds: the Euclidean norm of how far
    log N, log D and log(D/N) each lie beyond fit.json's `inputs.range` (0 inside all three)."""
    params, tokens = np.asarray(params, float), np.asarray(tokens, float)
    total = np.zeros(np.broadcast(params, tokens).shape)
    for key, values in (("params", params), ("tokens", tokens), ("tokens_per_param", tokens / params)):
        low, high = (ranges or {}).get(key) or (0.0, np.inf)
        with np.errstate(divide="ignore"):
            beyond = np.maximum(0.0, np.maximum(np.log(values / high), np.log(low / values)))
        total = total + beyond**2
    return np.sqrt(total)


def positive_values(values, name: str) -> np.ndarray:
    try:
        array = np.atleast_1d(np.asarray(values, dtype=float))
    except (TypeError, ValueError):
        raise ScalelabError(f"{name} must be a positive number or a list of them, got {values!r}") from None
    if array.ndim != 1 or not np.all(np.isfinite(array) & (array > 0)):
        raise ScalelabError(f"{name} must be a positive number or a list of them, got {values!r}")
    return array


def _check_level(level) -> None:
    if not (isinstance(level, (int, float)) and not isinstance(level, bool) and 0 < level < 1):
        raise ScalelabError(f"level must be between 0 and 1, got {level!r}")


class FittedLaw:
    """The forms of one fit and their bootstrap: predictions with prediction intervals.

    Attributes: `form` (the chosen LawForm), `law` ({'form': name, **parameters}), `params` (the
    chosen form's parameters), `bootstrap` (its resamples, one row each, columns = parameter
    names), `residual_sigma` (its residual scatter in log loss), `noise_sigma` (the runs' scatter
    the intervals use: the forms' residual variances averaged by weight), `weights` (form -> mixture
    weight), `fit` (fit.json as a dict) and `where` (the folder, for messages).
    """

    def __init__(self, fit: dict, samples: pd.DataFrame, where="fit"):
        self.fit, self.where = fit, str(where)
        forms = fit.get("forms")
        chosen = fit.get("chosen_form")
        if not isinstance(forms, dict) or chosen is None:
            why = fit.get("chosen_form_why") or "fit.json has no chosen form (written by an older scalelab fit?)"
            raise ScalelabError(f"{where}: no law to predict with: {why}")
        self.fitted = {}
        for name, section in forms.items():
            if name not in FORMS:
                raise ScalelabError(f"{where}: fit.json names an unknown law form {name!r}")
            if isinstance(section, dict) and section.get("fitted"):
                self.fitted[name] = section
        if chosen not in self.fitted:
            raise ScalelabError(
                f"{where}: chosen form {chosen!r} is not among the fitted forms ({', '.join(self.fitted) or 'none'})"
            )
        self.form: LawForm = FORMS[chosen]
        self.params = pd.Series(self._params(chosen), name="coef")  # statsmodels' `params`
        self.law = {"form": chosen, **self._params(chosen)}
        self.weights = {name: float(s.get("weight") or 0.0) for name, s in self.fitted.items()}
        if not any(self.weights.values()):
            self.weights[chosen] = 1.0
        self.samples = {}
        if len(samples):
            if "form" not in samples.columns:
                raise ScalelabError(f"{where}: {BOOTSTRAP_FILE} lacks the column 'form'")
            for name in self.fitted:
                rows = samples[samples["form"] == name]
                missing = [p for p in FORMS[name].param_names if p not in rows.columns]
                if missing and len(rows):
                    raise ScalelabError(f"{where}: {BOOTSTRAP_FILE} lacks the column(s) {', '.join(missing)}")
                if len(rows):
                    self.samples[name] = rows[list(FORMS[name].param_names)].apply(pd.to_numeric, errors="coerce")
        self.bootstrap = self.samples.get(chosen, pd.DataFrame(columns=list(self.form.param_names)))
        self.residual_sigma = float(self.fitted[chosen].get("residual_sigma") or 0.0)
        # The runs' noise as the forms the evidence trusts see it: their residual variances averaged
        # by weight. The chosen law's alone would count its misfit as noise where the checks
        # prefer another form (Chinchilla kept as the point law on a Kaplan ladder, say).
        sigmas = {n: float(s.get("residual_sigma") or 0.0) for n, s in self.fitted.items()}
        total = sum(self.weights.get(n, 0.0) for n in sigmas)
        self.noise_sigma = (
            float(np.sqrt(sum(self.weights.get(n, 0.0) * v**2 for n, v in sigmas.items()) / total))
            if total > 0
            else self.residual_sigma
        )
        self.metric_samples = pd.DataFrame()  # metrics_bootstrap.csv, set by load_fit

    def _params(self, name) -> dict:
        section = self.fitted[name]
        values = section.get("params") or {}
        out = {}
        for key in FORMS[name].param_names:
            value = values.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
                raise ScalelabError(f"{self.where}: forms.{name}.params.{key} is not a finite number ({value!r})")
            out[key] = float(value)
        return out

    def _unique(self, form: LawForm, U, n: int):
        if "unique_tokens" not in form.needs:
            return None
        if U is None:
            return None
        return np.broadcast_to(positive_values(U, "U"), (n,))

    def _log_preds(self, name, params, tokens, U) -> np.ndarray | None:
        """log loss of every bootstrap resample of form `name` (B × m); the point law without one."""
        form = FORMS[name]
        unique = self._unique(form, U, len(params))
        if "unique_tokens" in form.needs and unique is None:
            return None
        table = self.samples.get(name)
        with np.errstate(all="ignore"):
            if table is None or not len(table):
                return np.log(form.loss(self._params(name), params, tokens, unique))[None, :]
            cols = {k: table[k].to_numpy(float)[:, None] for k in form.param_names}
            return np.log(form.loss(cols, params[None, :], tokens[None, :], unique))

    def components(self, params, tokens, U=None) -> dict:
        """form -> (weight, bootstrap log predictions, scatter (m,), log point prediction). The
        scatter is the chosen form's residual sigma, and outside the fitted runs also the form's
        extrapolation scatter: `extrapolation_sigma` per e-fold of `log_distance`."""
        out = {}
        distance = log_distance(params, tokens, (self.fit.get("inputs") or {}).get("range"))
        for name, section in self.fitted.items():
            preds = self._log_preds(name, params, tokens, U)
            if preds is not None:
                form = FORMS[name]
                with np.errstate(all="ignore"):
                    centre = np.log(form.loss(self._params(name), params, tokens, self._unique(form, U, len(params))))
                # One scatter of single runs for every form (noise_sigma): a form that misfits has a
                # larger residual scatter, which is its misfit, not the runs' noise; its
                # disagreement enters through its predictions instead.
                per_efold = float(section.get("extrapolation_sigma") or 0.0)
                scatter = np.sqrt(self.noise_sigma**2 + (per_efold * distance) ** 2)
                out[name] = (self.weights.get(name, 0.0), preds, scatter, centre)
        return out

    def _interval(self, loss, params, tokens, U, level):
        bands = predictive_interval(list(self.components(params, tokens, U).values()), level)
        if bands is None:
            return np.full(len(loss), np.nan), np.full(len(loss), np.nan)
        low, high = np.exp(bands[0]), np.exp(bands[1])
        return np.minimum(low, loss), np.maximum(high, loss)

    def metric_law(self, metric: str) -> MetricLaw:
        """The law of an evaluation metric fitted with `scalelab fit --metrics` (fit.json's `metrics`)."""
        sections = self.fit.get("metrics") or {}
        if metric not in sections:
            raise ScalelabError(
                f"{self.where}: no law for the metric {metric!r} (fitted: "
                f"{', '.join(sections) or 'none; run scalelab fit --metrics COL'})"
            )
        return MetricLaw(metric, sections[metric], self.metric_samples, sections[metric].get("range"), self.where)

    def predict(self, N, D, U=None, level=None, metric: str | None = None, *, alpha=None) -> pd.DataFrame:
        """Loss of N parameters trained on D tokens (numbers or lists, broadcast together): one row
        per (N, D) with `params, tokens, mean` (the chosen form's law), `mean_ci_lower/upper` (the
        law's own uncertainty), `obs_ci_lower/upper` (a new run's loss) and `extrapolation`, the
        intervals at 1 − alpha (default 0.05; `level=` = 1 − alpha also works); statsmodels'
        summary_frame names (scalelab.laws.inference). U (unique tokens) only for the
        data-constrained form. With `metric`, that evaluation metric's law instead: `params, tokens,
        <metric>, low, high, verdict` (NaN where the verdict is NOT PREDICTABLE; laws.fitted_metrics)."""
        from .inference import interval_level, prediction_frame

        level = interval_level(alpha, level)
        try:
            params, tokens = np.broadcast_arrays(positive_values(N, "N"), positive_values(D, "D"))
        except ValueError:
            raise ScalelabError(
                f"N and D must have the same length (or one be a single number), got {np.size(N)} and {np.size(D)}"
            ) from None
        if metric is not None:
            law = self.metric_law(metric)
            return law.predict(params, tokens, log_distance(params, tokens, law.ranges), level)
        unique = self._unique(self.form, U, len(params))
        if "unique_tokens" in self.form.needs and unique is None:
            raise ScalelabError(
                f"{self.where}: the chosen form {self.form.name} needs the unique tokens U (predict(N, D, U=...))"
            )
        return prediction_frame(self, params, tokens, U, unique, level)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """The chosen form's parameters' bootstrap percentile intervals (`lower, upper`), as statsmodels'."""
        from .inference import conf_int

        return conf_int(self, alpha)

    def cov_params(self) -> pd.DataFrame:
        """The chosen form's parameter covariance over its bootstrap resamples, as statsmodels'."""
        from .inference import cov_params

        return cov_params(self)

    def summary(self, alpha: float = 0.05) -> str:
        """A statsmodels-like text table: form, runs, convergence, coef, std err and intervals."""
        from .inference import summary_text

        return summary_text(self, alpha)

    def extrapolation(self, N, D) -> list[str]:
        """How far each (N, D) lies outside the fitted runs (fit.json's `inputs.range`): '' inside
        every range, else e.g. 'N 4.1x above, tokens/param 2x below the fitted runs'. The interval
        does not know about regimes the runs never reached (on a published ladder, models trained
        on fewer tokens per parameter than any fitted run were all predicted too low), so a
        prediction outside the runs says so."""
        ranges = (self.fit.get("inputs") or {}).get("range") or {}
        params, tokens = np.asarray(N, float), np.asarray(D, float)
        values = {
            "params": ("N", params),
            "tokens": ("D", tokens),
            "tokens_per_param": ("tokens/param", tokens / params),
        }
        notes = []
        for i in range(len(params)):
            parts = []
            for key, (label, column) in values.items():
                low, high = ranges.get(key) or (0.0, np.inf)
                if column[i] > high * (1 + 1e-9):
                    parts.append(f"{label} {column[i] / high:.3g}x above")
                elif column[i] < low * (1 - 1e-9):
                    parts.append(f"{label} {low / column[i]:.3g}x below")
            notes.append(", ".join(parts) + " the fitted runs" if parts else "")
        return notes

    def allocate(self, C, level: float = LEVEL, forms_mixed: bool = True) -> pd.DataFrame:
        """The compute-optimal split of C FLOPs (C = 6·N·D) under the chosen form: one row per
        budget with `flops, params, tokens, tokens_per_param, loss, low, high` and the intervals
        `params_low/high, tokens_low/high` of the optimum. With forms_mixed (the default) the
        interval of N_opt mixes every form by its weight, each Normal(its log N_opt, its bootstrap
        spread^2 + (optimum_drift x e-folds of compute beyond the fitted runs)^2); without, it is the
        chosen form's bootstrap alone (each resample's own optimum), which the mixed interval always
        contains. D_opt's interval is C/(6 N_opt)'s."""
        flops = positive_values(C, "C")
        _check_level(level)
        if self.form.needs:
            raise ScalelabError(
                f"{self.where}: the {self.form.name} form has no compute-optimal allocation without the unique tokens"
            )
        n_opt, d_opt = optimal_allocation(self.form, self.params, flops)
        if not np.all(np.isfinite(n_opt)):
            raise ScalelabError(
                f"{self.where}: the {self.form.name} law has no compute-optimal split at some of "
                f"these budgets (an exponent is 0, or the optimum lies outside 1e-5..1 of C/6)"
            )
        loss = self.form.loss(self.params, n_opt, d_opt)
        low, high = self._interval(loss, n_opt, d_opt, None, level)
        table = pd.DataFrame(
            {
                "flops": flops,
                "params": n_opt,
                "tokens": d_opt,
                "tokens_per_param": d_opt / n_opt,
                "loss": loss,
                "low": low,
                "high": high,
                "extrapolation": self.extrapolation(n_opt, d_opt),
            }
        )
        n_low, n_high = (
            self._optimum_interval(flops, level)
            if forms_mixed
            else self._bootstrap_optimum_interval(self.form.name, flops, level)
        )
        if forms_mixed:
            # Never narrower than the point law's own bootstrap (the mixture's Normal parts lose its skew).
            own_low, own_high = self._bootstrap_optimum_interval(self.form.name, flops, level)
            n_low = np.fmin(np.fmin(n_low, own_low), n_opt)
            n_high = np.fmax(np.fmax(n_high, own_high), n_opt)
        table["params_low"], table["params_high"] = n_low, n_high
        table["tokens_low"], table["tokens_high"] = flops / (6 * n_high), flops / (6 * n_low)
        return table

    def _bootstrap_optimum_interval(self, name, flops, level):
        n_b = self._optimum_samples(name, flops)
        low, high = np.full(len(flops), np.nan), np.full(len(flops), np.nan)
        tail = (1 - level) / 2 * 100
        for j in range(len(flops)):
            column = n_b[:, j][np.isfinite(n_b[:, j])] if n_b is not None else []
            if len(column) >= 2:
                low[j], high[j] = np.percentile(column, [tail, 100 - tail])
        return low, high

    def _optimum_interval(self, flops, level):
        """N_opt's interval mixed over the forms (see `allocate`)."""
        top = ((self.fit.get("inputs") or {}).get("range") or {}).get("flops")
        beyond = np.maximum(0.0, np.log(flops / top[1])) if top else np.zeros(len(flops))
        components = []
        for name, section in self.fitted.items():
            form = FORMS[name]
            if form.needs:
                continue
            with np.errstate(all="ignore"):
                centre = np.log(optimal_allocation(form, self._params(name), flops)[0])
                samples = self._optimum_samples(name, flops)
                preds = np.log(samples) if samples is not None else centre[None, :]
            if not np.all(np.isfinite(centre)):
                continue
            drift = float(section.get("optimum_drift") or 0.0)
            components.append((self.weights.get(name, 0.0), preds, drift * beyond, centre))
        band = predictive_interval(components, level) if components else None
        if band is None:
            return np.full(len(flops), np.nan), np.full(len(flops), np.nan)
        return np.exp(band[0]), np.exp(band[1])

    def _optimum_samples(self, name, flops):
        """Each bootstrap resample's own N_opt of form `name` (B × budgets), None without resamples."""
        table = self.samples.get(name)
        if table is None or not len(table):
            return None
        form = FORMS[name]
        with np.errstate(all="ignore"):
            if form.optimal is not None:
                cols = {k: table[k].to_numpy(float)[:, None] for k in form.param_names}
                return np.asarray(form.optimal(cols, flops[None, :])[0], float)
            n_b = np.full((len(table), len(flops)), np.nan)
            for i, row in enumerate(table.to_dict("records")):
                if all(np.isfinite(v) for v in row.values()):
                    n_b[i] = optimal_allocation(form, row, flops)[0]
        return n_b

    def forms_at(self, N, D) -> dict:
        """Each fitted form's point prediction at (N, D) (forms that need U are left out)."""
        params, tokens = np.broadcast_arrays(positive_values(N, "N"), positive_values(D, "D"))
        out = {}
        for name in self.fitted:
            if not FORMS[name].needs:
                with np.errstate(all="ignore"):
                    out[name] = FORMS[name].loss(self._params(name), params, tokens)
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in self.params.items())
        return f"<scalelab fitted law {self.form.name} ({self.where}): {shown}>"


def _read_samples(folder: Path) -> pd.DataFrame:
    path = folder / BOOTSTRAP_FILE
    if not path.is_file():
        raise ScalelabError(f"{path}: bootstrap table not found (not a `scalelab fit --out` folder?)")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=["form"])
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScalelabError(f"{path}: bootstrap table is not a readable CSV ({reason})") from None


def load_fit(folder) -> FittedLaw:
    """Read what `scalelab fit --out FOLDER` wrote (the workflow's `results/fit` or a fit of your
    own CSV). A missing, damaged or foreign folder raises a one-line ScalelabError."""
    from .fitjson import read_fit_json

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ScalelabError(f"{folder}: no such fit folder")
    fit = read_fit_json(folder / "fit.json")
    law = FittedLaw(fit, _read_samples(folder), folder)
    law.metric_samples = _read_metric_samples(folder) if fit.get("metrics") else pd.DataFrame()
    return law


def _read_metric_samples(folder: Path) -> pd.DataFrame:
    """metrics_bootstrap.csv (empty when absent: the metric intervals then carry the scatter alone)."""
    path = folder / METRICS_BOOTSTRAP_FILE
    try:
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ScalelabError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None

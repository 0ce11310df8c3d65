"""Every law form fitted, checked walk-forward, and one chosen: fit.json's `forms`, `chosen_form`,
`chosen_form_why`, `validation` and the tables `forms`, `forms_bootstrap`, `bootstrap` (Chinchilla's,
the `approach3` contract) and `residuals`.

The out-of-sample checks are the rolling-origin checks of scalelab.fit.validation (fit on the
smallest sizes, token counts or compute, predict every larger run); scalelab.fit.evidence turns
their misses into each form's extrapolation scatter, the point law and the mixture weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..errors import ScalelabError
from ..laws.fitted import FittedLaw, log_distance
from ..laws.law import FORMS, LawForm
from .approach3 import HUBER_DELTA, PARAM_NAMES
from .common import n_distinct, percentile_ci
from .evidence import MARGIN_SDS, RULE, choose_form, evidence_weights, extrapolation_sigma, log_density
from .forms import (
    BOOTSTRAP_STARTS,
    FormData,
    bootstrap_form,
    fit_form,
    form_data,
    natural,
    on_bound,
    prediction_variance,
    residual_sigma,
)
from .inputs import data_range
from .validation import Check, largest_size_check, rolling_checks

SPAN_NOT_IDENTIFIED = 100.0  # a positive parameter whose 95 % interval spans more than this factor
REPEAT_TOLERANCE = 1e-3  # tokens > unique_tokens · (1 + this) counts as repeated data

NOT_IDENTIFIED_WORDS = {
    "E": "the runs do not reach the loss floor",
    "alpha": "the loss does not fall as a power of N over these runs",
    "beta": "the loss does not fall as a power of D over these runs",
    "alpha_N": "the loss does not fall as a power of N over these runs",
    "alpha_D": "the loss does not fall as a power of D over these runs",
    "R_star": "the runs do not repeat their data enough to measure the value of repeats",
}


@dataclass
class FormsResult:
    sections: dict  # fit.json's `forms`
    chosen: str | None
    why: str
    samples: pd.DataFrame  # forms_bootstrap.csv
    chinchilla_samples: pd.DataFrame  # bootstrap.csv (Approach 3's contract)
    residuals: pd.DataFrame
    data: dict = field(default_factory=dict)  # form -> FormData of the full fit
    thetas: dict = field(default_factory=dict)
    validation_fits: dict = field(default_factory=dict)  # (form, check) -> (theta, FormData of the rest)
    misses: dict = field(default_factory=dict)  # (form, check) -> (log(actual/predicted), log_distance, sigma)
    checks: list = field(default_factory=list)  # the rolling-origin checks (scalelab.fit.validation.Check)
    holdout: Check | None = None  # the largest size's runs, predicted from the rest
    ranges: dict = field(default_factory=dict)  # the fitted runs' inputs.range


def requested_forms(settings) -> list[str]:
    return list(settings.forms) if settings.forms else list(FORMS)


def _repeats(points) -> bool:
    if "unique_tokens" not in points.columns:
        return False
    unique = points["unique_tokens"].to_numpy(float)
    return bool(np.any(points["tokens"].to_numpy(float) > unique * (1 + REPEAT_TOLERANCE)))


def check_requested(points, settings, source) -> None:
    """Refuse, before any fitting, a form the settings name explicitly but the data cannot support."""
    explicit = set(settings.forms or ()) | ({settings.form} if settings.form != "auto" else set())
    if "data_constrained" in explicit:
        key = "fit.form" if settings.form == "data_constrained" else "fit.forms"
        if "unique_tokens" not in points.columns:
            raise ScalelabError(
                f"{key}: data_constrained needs a unique_tokens column in {source} "
                "(unique tokens per run), and there is none"
            )
        if not _repeats(points):
            raise ScalelabError(
                f"{key}: data_constrained needs runs that repeat their data (tokens > "
                f"unique_tokens), and no run in {source} does"
            )


def identifiable(points: pd.DataFrame, form: LawForm) -> str | None:
    """Why `form` cannot be fitted to these points, or None if it can."""
    if len(points) == 0:
        return "no usable rows"
    n_sizes, n_tokens = n_distinct(points["params"]), n_distinct(points["tokens"])
    if n_sizes < 3:
        return f"needs runs at 3 or more model sizes, found {n_sizes}"
    if n_tokens < 3:
        return f"needs runs at 3 or more token counts, found {n_tokens}"
    k = len(form.theta_names)
    if len(points) < k + 1:
        return f"needs at least {k + 1} points for {k} parameters, found {len(points)}"
    if form.needs and not all(c in points.columns for c in form.needs):
        return f"needs the column(s) {', '.join(form.needs)}"
    if "unique_tokens" in form.needs and not _repeats(points):
        return "no run repeats its data (tokens <= unique_tokens everywhere), so it is Chinchilla's form"
    return None


def points_data(points, n0=None, d0=None) -> FormData:
    unique = points["unique_tokens"].to_numpy(float) if "unique_tokens" in points.columns else None
    log_sd = points["log_sd"].to_numpy(float) if "log_sd" in points.columns else None  # predicted endpoints
    return form_data(points["params"], points["tokens"], points["loss"], unique, n0, d0, log_sd)


def _not_identified(form, params, theta, bounds, ci) -> dict:
    """parameter -> why it is not identified (on its bound, or an interval over 100x wide)."""
    out = {}
    for name in on_bound(form, theta, bounds):
        out[name] = (
            f"it sits on its bound ({params[name]:.3g}): {NOT_IDENTIFIED_WORDS.get(name, 'the data do not pin it')}"
        )
    for name in form.param_names:
        interval = ci.get(name)
        if name in out or not interval or interval[0] is None:
            continue
        low, high = interval
        if low <= 0 or high / low > SPAN_NOT_IDENTIFIED:
            out[name] = (
                f"its 95 % interval [{low:.3g}, {high:.3g}] spans more than {SPAN_NOT_IDENTIFIED:g}x: "
                f"{NOT_IDENTIFIED_WORDS.get(name, 'the data do not pin it')}"
            )
    return out


def samples_table(form, data, runs) -> pd.DataFrame:
    rows = []
    for objective, *theta in runs:
        if np.isfinite(objective):
            rows.append({**natural(form, theta, data), "objective": objective})
        else:
            rows.append({**dict.fromkeys(form.param_names, np.nan), "objective": np.nan})
    return pd.DataFrame(rows, columns=[*form.param_names, "objective"])


def _chinchilla_table(samples: pd.DataFrame) -> pd.DataFrame:
    out = samples[list(PARAM_NAMES[:5]) + ["objective"]].copy()
    with np.errstate(all="ignore"):
        out["a"] = out["beta"] / (out["alpha"] + out["beta"])
        out["b"] = out["alpha"] / (out["alpha"] + out["beta"])
    return out[[*PARAM_NAMES, "objective"]]


def measured_tests(checks, points: pd.DataFrame) -> list[Check]:
    """The checks with only measured runs to predict: a predicted endpoint (grid.trained_cooldowns) is
    fitted but never scored against, and a check left with nothing to predict is dropped."""
    checks = [c for c in checks if c is not None]
    if "predicted" not in points.columns:
        return checks
    measured = ~points["predicted"].to_numpy(bool)
    return [replace(c, test=c.test & measured) for c in checks if (c.test & measured).any()]


def fit_forms(points: pd.DataFrame, settings, workers: int, say) -> FormsResult:
    """Fit, bootstrap and check walk-forward every requested form; choose the point law (fit.form)."""
    sections, samples, residuals = {}, [], []
    result = FormsResult(
        {}, None, "", pd.DataFrame(columns=["form"]), pd.DataFrame(columns=[*PARAM_NAMES, "objective"]), pd.DataFrame()
    )
    result.ranges = data_range(points)
    result.checks = measured_tests(rolling_checks(points), points)
    result.holdout = next(iter(measured_tests([largest_size_check(points)], points)), None)
    if result.holdout is not None and all(c.name != result.holdout.name for c in result.checks):
        result.checks.append(result.holdout)
    for name in requested_forms(settings):
        form = FORMS[name]
        why = identifiable(points, form)
        if why:
            sections[name] = {"fitted": False, "why": why, "title": form.title}
            continue
        fitted = _fit_one(points, form, settings, workers, say)
        if fitted is None:
            sections[name] = {
                "fitted": False,
                "why": "L-BFGS-B failed from every start (non-finite objective)",
                "title": form.title,
            }
            continue
        sections[name], table, residual, data, theta = fitted
        result.data[name], result.thetas[name] = data, theta
        samples.append(table.assign(form=name))
        residuals.append(residual)
        _walk_forward(points, form, data, result, settings, say)
        checks = {c.name: result.misses[(name, c.name)] for c in result.checks if (name, c.name) in result.misses}
        errors = {c: float(np.mean(np.abs(np.expm1(-m[0])))) for c, m in checks.items()}
        sections[name]["validation"] = {
            c: {"mean_abs_rel_error": e, "n_test": len(checks[c][0])} for c, e in errors.items()
        }
        sections[name]["score"] = float(np.mean(list(errors.values()))) if errors else None
        sections[name]["extrapolation_sigma"] = extrapolation_sigma(list(checks.values()))
    _choose(sections, settings, result)
    result.sections = sections
    if samples:
        result.samples = pd.concat(samples, ignore_index=True)[["form", *_all_columns(samples)]]
        if "chinchilla" in result.data:
            chinchilla = result.samples[result.samples["form"] == "chinchilla"]
            result.chinchilla_samples = _chinchilla_table(chinchilla).reset_index(drop=True)
    result.residuals = (
        pd.concat(residuals, ignore_index=True)
        if residuals
        else pd.DataFrame(columns=["form", "run", "params", "tokens", "actual", "predicted", "rel_residual"])
    )
    return result


def _fit_one(points, form: LawForm, settings, workers, say):
    """The form on every point with its bootstrap: (section, resamples, residuals, data, theta), None on failure."""
    data = points_data(points)
    say(f"{form.name}: {len(data.x)} points, grid of {settings.grid_points}^{len(form.theta_names)} starts")
    started = time.perf_counter()
    best = fit_form(form, data, settings.grid_points)
    per_refit = (time.perf_counter() - started) / max(1, best["refined"])
    if not np.isfinite(best["objective"]):
        return None
    params = natural(form, best["theta"], data)
    table = pd.DataFrame(columns=[*form.param_names, "objective"])
    if settings.bootstrap:
        # A resample costs about (1 + BOOTSTRAP_STARTS) refits: say how long, so a big CSV is no surprise.
        estimate = settings.bootstrap * (1 + BOOTSTRAP_STARTS) * per_refit / workers
        say(
            f"{form.name}: {settings.bootstrap} bootstrap resamples"
            + (f", about {estimate / 60:.0f} min on {workers} worker(s)" if estimate > 60 else "")
        )
        runs = bootstrap_form(
            form, data, best["theta"], settings.bootstrap, settings.seed, settings.grid_points, workers, progress=say
        )
        table = samples_table(form, data, runs)
    ci = {k: percentile_ci(table[k]) if settings.bootstrap else None for k in form.param_names}
    predicted = np.exp(form.log_law(best["theta"], data.x, data.y, data.u))
    residual = pd.DataFrame(
        {
            "form": form.name,
            "run": points["run"].to_numpy(),
            "params": points["params"].to_numpy(),
            "tokens": points["tokens"].to_numpy(),
            "actual": points["loss"].to_numpy(),
            "predicted": predicted,
            "rel_residual": (points["loss"].to_numpy() - predicted) / predicted,
        }
    )
    section = {
        "fitted": True,
        "title": form.title,
        "params": params,
        "ci95": ci,
        "not_identified": _not_identified(form, params, best["theta"], best["bounds"], ci),
        "objective": best["objective"],
        "huber_delta": HUBER_DELTA,
        "converged": best["converged"],
        "optimizer_message": best["message"],
        "n_starts": best["n_starts"],
        "refined": best["refined"],
        "starts_at_optimum": best["starts_at_optimum"],
        "residual_sigma": residual_sigma(form, best["theta"], data),
        "bootstrap": settings.bootstrap,
        "bootstrap_failed": int(table[form.param_names[0]].isna().sum()),
        "theta_correlation": _correlation(form, table, data),
    }
    return section, table, residual, data, best["theta"]


def _correlation(form, table, data):
    if len(table.dropna()) <= 2:
        return None
    thetas = np.array(
        [form.theta({k: r[k] for k in form.param_names}, data.n0, data.d0) for r in table.dropna().to_dict("records")]
    )
    with np.errstate(all="ignore"):
        corr = np.corrcoef(thetas.T)
    return {
        "of": list(form.theta_names),
        "matrix": [[float(v) if np.isfinite(v) else None for v in row] for row in corr],
    }


def _walk_forward(points, form: LawForm, data: FormData, result: FormsResult, settings, say) -> None:
    """Refit the form on each rolling check's training runs and predict its larger runs: result.misses
    gets (log(actual/predicted), e-folds outside the training runs, the refit's residual scatter)."""
    for check in result.checks:
        rest = points[check.train]
        if identifiable(rest, form):
            continue
        rest_data = points_data(rest, data.n0, data.d0)
        refit = fit_form(form, rest_data, settings.grid_points)
        if not np.isfinite(refit["objective"]):
            continue
        test = points_data(points[check.test], data.n0, data.d0)
        with np.errstate(all="ignore"):
            pred = np.exp(form.log_law(refit["theta"], test.x, test.y, test.u))
        actual = points["loss"].to_numpy(float)[check.test]
        distance = log_distance(
            points["params"].to_numpy(float)[check.test], points["tokens"].to_numpy(float)[check.test], data_range(rest)
        )
        # The scatter the refit itself explains: its runs' noise and its parameters' uncertainty there.
        scatter = np.sqrt(
            residual_sigma(form, refit["theta"], rest_data) ** 2
            + prediction_variance(form, refit["theta"], rest_data, test)
        )
        result.misses[(form.name, check.name)] = (np.log(actual / pred), distance, scatter)
        result.validation_fits[(form.name, check.name)] = (refit["theta"], rest_data)
    say(f"{form.name}: {sum(1 for k in result.misses if k[0] == form.name)} rolling-origin checks")


def _all_columns(tables) -> list[str]:
    out = []
    for table in tables:
        out += [c for c in table.columns if c not in out and c != "form"]
    return [c for c in out if c != "objective"] + ["objective"]


def _choose(sections: dict, settings, result: FormsResult) -> None:
    fitted = [k for k, s in sections.items() if s.get("fitted")]
    densities, errors = {}, {}
    for name in fitted:
        k = sections[name].get("extrapolation_sigma") or 0.0
        mine = {check: m for (form, check), m in result.misses.items() if form == name}
        densities[name] = {check: log_density(m, k) for check, m in mine.items()}
        errors[name] = {check: float(np.mean(np.abs(m[0]))) for check, m in mine.items()}
    weights = evidence_weights(densities, settings.seed)
    for name in fitted:
        sections[name]["weight"] = weights.get(name, 0.0 if weights else 1 / len(fitted))
    if settings.form != "auto":
        if settings.form not in fitted:
            raise ScalelabError(
                f"fit.form: {settings.form} could not be fitted: "
                f"{sections.get(settings.form, {}).get('why', 'not requested')}"
            )
        result.chosen, result.why = settings.form, f"named by fit.form ({settings.form})"
        return
    result.chosen, result.why = choose_form(errors, fitted)


def validation_section(result: FormsResult) -> dict:
    """fit.json's `validation`: the rolling-origin checks and the rule that picks the point law."""
    checks = [
        {"name": c.name, "axis": c.axis, "origin": c.origin, "n_train": int(c.train.sum()), "n_test": int(c.test.sum())}
        for c in result.checks
    ]
    return {"rule": RULE, "margin_sds": MARGIN_SDS, "checks": checks}


def fitted_law(sections: dict, chosen: str, samples: pd.DataFrame, ranges: dict, where="fit") -> FittedLaw:
    """A FittedLaw (scalelab.laws.fitted) over fit.json's `forms`, the resamples and the fitted runs'
    ranges (`inputs.range`), as load_fit builds it."""
    return FittedLaw({"forms": sections, "chosen_form": chosen, "inputs": {"range": ranges}}, samples, where)


def approach3_section(result: FormsResult, settings):
    """fit.json's `approach3` (the Chinchilla form, the contract older readers use) and why not."""
    section = result.sections.get("chinchilla")
    if section is None:
        return None, "the chinchilla form is not in fit.forms"
    if not section.get("fitted"):
        return None, section["why"]
    params, samples = section["params"], result.chinchilla_samples
    with np.errstate(all="ignore"):
        a = params["beta"] / (params["alpha"] + params["beta"])
        b = params["alpha"] / (params["alpha"] + params["beta"])
    ci = {name: percentile_ci(samples[name]) if settings.bootstrap else None for name in PARAM_NAMES}
    return {
        **params,
        "objective": section["objective"],
        "huber_delta": HUBER_DELTA,
        "n_starts": section["n_starts"],
        "ci95": ci,
        "a": float(a),
        "b": float(b),
        "bootstrap": settings.bootstrap,
        "bootstrap_failed": section["bootstrap_failed"],
        "starts_at_optimum": section["starts_at_optimum"],
        "refined": section["refined"],
        "seed": settings.seed,
    }, None

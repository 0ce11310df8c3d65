"""Every law form fitted, scored by how well it extrapolates, and one chosen: fit.json's `forms`,
`chosen_form`, `chosen_form_why`, `holdout` and the tables `forms`, `forms_bootstrap`,
`bootstrap` (Chinchilla's, the `approach3` contract) and `residuals`.

Out-of-sample checks built from the study itself (`VALIDATION_CHECKS`): leave the largest model
out (all its token counts), leave the largest token count out (all its sizes), leave the top
compute group out; each refits the form on the rest and predicts what was left out. A form's
score is the mean over the checks of their mean |relative error|. `fit.form: auto` picks the
lowest score; each form's mixture weight in the prediction intervals is proportional to
score^-WEIGHT_POWER (scalelab.fitted explains the intervals).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from ..errors import ScalelabError
from ..fitted import FittedLaw, robust_sd, log_distance
from ..law import FORMS, LawForm
from .approach3 import HUBER_DELTA, PARAM_NAMES
from .common import FLOPS_TOLERANCE, SIZE_TOLERANCE, n_distinct, percentile_ci
from .forms import (BOOTSTRAP_STARTS, FormData, bootstrap_form, fit_form, form_data, natural, on_bound, residual_sigma)
from .inputs import data_range

VALIDATION_CHECKS = {
    "largest_model": "the largest model left out (all its token counts)",
    "largest_tokens": "the largest token count left out (all its model sizes)",
    "top_compute": "the top compute group left out",
}
# A form's weight in the intervals' mixture: (best score / its score)^6. A form whose out-of-sample
# error is within ~1.5x of the best keeps a share that moves the 95 % bounds toward it (0.5 at
# 1.12x, 0.08 at 1.5x); one 2x worse or more gets under the 2.5 % a tail holds (1/64), so a form
# that plainly misfits does not widen every interval. 1/score^2 over-covered: 99.7 % of new runs
# on simulated Kaplan-form ladders (bench/fit_coverage.py), where 90-98 % is right.
WEIGHT_POWER = 6
HOLDOUT_BOOTSTRAP = 50  # resamples of the held-out refit, for its prediction intervals
CHECK_BOOTSTRAP = 30  # resamples of each out-of-sample check's refit, for its spread at the runs left out
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
            raise ScalelabError(f"{key}: data_constrained needs a unique_tokens column in {source} "
                                "(unique tokens per run), and there is none")
        if not _repeats(points):
            raise ScalelabError(f"{key}: data_constrained needs runs that repeat their data (tokens > "
                                f"unique_tokens), and no run in {source} does")


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


def _data(points, n0=None, d0=None) -> FormData:
    unique = points["unique_tokens"].to_numpy(float) if "unique_tokens" in points.columns else None
    return form_data(points["params"], points["tokens"], points["loss"], unique, n0, d0)


def held_masks(points) -> dict[str, np.ndarray]:
    p, t, f = (points[c].to_numpy(float) for c in ("params", "tokens", "flops"))
    return {"largest_model": p >= p.max() / (1 + SIZE_TOLERANCE),
            "largest_tokens": t >= t.max() / (1 + SIZE_TOLERANCE),
            "top_compute": f >= f.max() / (1 + FLOPS_TOLERANCE)}


def _not_identified(form, params, theta, bounds, ci) -> dict:
    """parameter -> why it is not identified (on its bound, or an interval over 100x wide)."""
    out = {}
    for name in on_bound(form, theta, bounds):
        out[name] = f"it sits on its bound ({params[name]:.3g}): {NOT_IDENTIFIED_WORDS.get(name, 'the data do not pin it')}"
    for name in form.param_names:
        interval = ci.get(name)
        if name in out or not interval or interval[0] is None:
            continue
        low, high = interval
        if low <= 0 or high / low > SPAN_NOT_IDENTIFIED:
            out[name] = (f"its 95 % interval [{low:.3g}, {high:.3g}] spans more than {SPAN_NOT_IDENTIFIED:g}x: "
                         f"{NOT_IDENTIFIED_WORDS.get(name, 'the data do not pin it')}")
    return out


def _samples_table(form, data, runs) -> pd.DataFrame:
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


def fit_forms(points: pd.DataFrame, settings, workers: int, say) -> FormsResult:
    """Fit, bootstrap and validate every requested form; choose one (fit.form)."""
    sections, samples, residuals = {}, [], []
    result = FormsResult({}, None, "", pd.DataFrame(columns=["form"]), pd.DataFrame(columns=[*PARAM_NAMES, "objective"]),
                         pd.DataFrame())
    masks = held_masks(points) if len(points) else {}
    result.ranges = data_range(points)
    for name in requested_forms(settings):
        form = FORMS[name]
        why = identifiable(points, form)
        if why:
            sections[name] = {"fitted": False, "why": why, "title": form.title}
            continue
        data = _data(points)
        say(f"{name}: {len(data.x)} points, grid of {settings.grid_points}^{len(form.theta_names)} starts")
        started = time.perf_counter()
        best = fit_form(form, data, settings.grid_points)
        per_refit = (time.perf_counter() - started) / max(1, best["refined"])
        if not np.isfinite(best["objective"]):
            sections[name] = {"fitted": False, "why": "L-BFGS-B failed from every start (non-finite objective)",
                              "title": form.title}
            continue
        params = natural(form, best["theta"], data)
        table = pd.DataFrame(columns=[*form.param_names, "objective"])
        if settings.bootstrap:
            # A resample costs about (1 + BOOTSTRAP_STARTS) refits: say how long, so a big CSV is no surprise.
            estimate = settings.bootstrap * (1 + BOOTSTRAP_STARTS) * per_refit / workers
            say(f"{name}: {settings.bootstrap} bootstrap resamples"
                + (f", about {estimate / 60:.0f} min on {workers} worker(s)" if estimate > 60 else ""))
            runs = bootstrap_form(form, data, best["theta"], settings.bootstrap, settings.seed, settings.grid_points,
                                  workers, progress=say)
            table = _samples_table(form, data, runs)
        ci = {k: percentile_ci(table[k]) if settings.bootstrap else None for k in form.param_names}
        sigma = residual_sigma(form, best["theta"], data)
        predicted = np.exp(form.log_law(best["theta"], data.x, data.y, data.u))
        residuals.append(pd.DataFrame({"form": name, "run": points["run"].to_numpy(), "params": points["params"].to_numpy(),
                                       "tokens": points["tokens"].to_numpy(), "actual": points["loss"].to_numpy(),
                                       "predicted": predicted,
                                       "rel_residual": (points["loss"].to_numpy() - predicted) / predicted}))
        correlation = None
        if len(table.dropna()) > 2:
            thetas = np.array([form.theta({k: r[k] for k in form.param_names}, data.n0, data.d0)
                               for r in table.dropna().to_dict("records")])
            with np.errstate(all="ignore"):
                corr = np.corrcoef(thetas.T)
            correlation = {"of": list(form.theta_names),
                           "matrix": [[float(v) if np.isfinite(v) else None for v in row] for row in corr]}
        sections[name] = {
            "fitted": True, "title": form.title, "params": params, "ci95": ci,
            "not_identified": _not_identified(form, params, best["theta"], best["bounds"], ci),
            "objective": best["objective"], "huber_delta": HUBER_DELTA, "converged": best["converged"],
            "optimizer_message": best["message"], "n_starts": best["n_starts"], "refined": best["refined"],
            "starts_at_optimum": best["starts_at_optimum"], "residual_sigma": sigma,
            "bootstrap": settings.bootstrap, "bootstrap_failed": int(table[form.param_names[0]].isna().sum()),
            "theta_correlation": correlation,
        }
        result.data[name], result.thetas[name] = data, best["theta"]
        samples.append(table.assign(form=name))
        # The out-of-sample checks: refit on the rest, predict what was left out.
        checks = {}
        for check, held in masks.items():
            rest = points[~held]
            why_not = identifiable(rest, form)
            if why_not or held.all():
                checks[check] = {"why": f"without it the form cannot be fitted: {why_not or 'no rows left'}"}
                continue
            say(f"{name}: out-of-sample check {check}: refit on {len(rest)} points, predict {int(held.sum())}")
            rest_data = _data(rest, data.n0, data.d0)
            refit = fit_form(form, rest_data, settings.grid_points)
            test = _data(points[held], data.n0, data.d0)
            with np.errstate(all="ignore"):
                pred = np.exp(form.log_law(refit["theta"], test.x, test.y, test.u))
            actual = points["loss"].to_numpy(float)[held]
            rel = (pred - actual) / actual
            # What the refit's own interval would allow at the held-out runs: its residual scatter
            # and its bootstrap spread there; the extrapolation scatter is what they leave unexplained.
            spread = _check_spread(form, rest_data, refit["theta"], test, settings, workers)
            result.misses[(name, check)] = (
                np.log(actual / pred),
                log_distance(points["params"].to_numpy(float)[held], points["tokens"].to_numpy(float)[held],
                             data_range(rest)),
                np.sqrt(residual_sigma(form, refit["theta"], rest_data) ** 2 + spread**2))
            checks[check] = {"held_out": points["run"][held].tolist(), "predicted": pred.tolist(),
                             "rel_error": rel.tolist(), "mean_abs_rel_error": float(np.mean(np.abs(rel)))}
            result.validation_fits[(name, check)] = (refit["theta"], rest_data)
        scores = [c["mean_abs_rel_error"] for c in checks.values() if "mean_abs_rel_error" in c]
        sections[name]["validation"] = checks
        sections[name]["score"] = float(np.mean(scores)) if scores else None
        sections[name]["extrapolation_sigma"] = _extrapolation_sigma_of(result.misses, name)
    _choose(sections, settings, result)
    result.sections = sections
    if samples:
        result.samples = pd.concat(samples, ignore_index=True)[["form", *_all_columns(samples)]]
        if "chinchilla" in result.data:
            chinchilla = result.samples[result.samples["form"] == "chinchilla"]
            result.chinchilla_samples = _chinchilla_table(chinchilla).reset_index(drop=True)
    result.residuals = (pd.concat(residuals, ignore_index=True) if residuals else
                        pd.DataFrame(columns=["form", "run", "params", "tokens", "actual", "predicted", "rel_residual"]))
    return result


def _check_spread(form, rest: FormData, theta, test: FormData, settings, workers) -> np.ndarray:
    """The bootstrap spread (IQR / 1.349, as in the prediction intervals) of a check's refit at the
    runs it left out, from CHECK_BOOTSTRAP resamples; 0 without a bootstrap."""
    n_boot = min(settings.bootstrap, CHECK_BOOTSTRAP)
    if not n_boot:
        return np.zeros(len(test.x))
    runs = bootstrap_form(form, rest, theta, n_boot, settings.seed, settings.grid_points, workers)
    with np.errstate(all="ignore"):
        preds = np.array([form.log_law(run[1:], test.x, test.y, test.u) for run in runs if np.isfinite(run[0])])
    preds = preds[np.all(np.isfinite(preds), axis=1)] if len(preds) else preds
    return robust_sd(preds) if len(preds) else np.zeros(len(test.x))


def _extrapolation_sigma_of(misses: dict, name: str, without: str | None = None) -> float | None:
    parts = [v for (form, check), v in misses.items() if form == name and check != without]
    return extrapolation_sigma(*(np.concatenate(p) for p in zip(*parts))) if parts else None


def extrapolation_sigma(log_misses, distances, sigmas) -> float | None:
    """How much a prediction's scatter grows per e-fold outside the fitted runs, learnt from the
    form's own out-of-sample checks: the maximum-likelihood k >= 0 with log(actual/predicted)
    ~ Normal(0, sigma^2 + (k·d)^2), sigma the refit's residual scatter and d the held-out run's
    `log_distance` from the runs it was refitted on. 0 where the checks missed by no more than
    the runs' scatter explains; None without a held-out run outside its refit's runs."""
    keep = np.isfinite(log_misses) & np.isfinite(distances) & np.isfinite(sigmas)
    z, d, s = log_misses[keep], distances[keep], np.maximum(sigmas[keep], 1e-6)
    if not np.any(d > 1e-9):
        return None

    def negative_log_likelihood(k):
        variance = s**2 + (k * d) ** 2
        return float(np.sum(np.log(variance) + z**2 / variance))

    upper = 10 * float(np.max(np.abs(z) / np.maximum(d, 1e-9)))
    best = minimize_scalar(negative_log_likelihood, bounds=(0.0, max(upper, 1e-9)), method="bounded",
                           options={"xatol": 1e-6})
    k = float(best.x)
    return 0.0 if negative_log_likelihood(0.0) <= negative_log_likelihood(k) else k


def _all_columns(tables) -> list[str]:
    out = []
    for table in tables:
        out += [c for c in table.columns if c not in out and c != "form"]
    return [c for c in out if c != "objective"] + ["objective"]


def _choose(sections: dict, settings, result: FormsResult) -> None:
    fitted = {k: s for k, s in sections.items() if s.get("fitted")}
    scored = {k: s["score"] for k, s in fitted.items() if s.get("score") is not None and s["score"] > 0}
    for name, section in fitted.items():
        section["weight"] = 0.0
    if scored:
        inverse = {k: (min(scored.values()) / v) ** WEIGHT_POWER for k, v in scored.items()}
        total = sum(inverse.values())
        for name, value in inverse.items():
            fitted[name]["weight"] = value / total
    elif fitted:
        for section in fitted.values():
            section["weight"] = 1 / len(fitted)
    if not fitted:
        result.chosen, result.why = None, "no form could be fitted"
        return
    if settings.form != "auto":
        if settings.form not in fitted:
            raise ScalelabError(f"fit.form: {settings.form} could not be fitted: "
                                f"{sections.get(settings.form, {}).get('why', 'not requested')}")
        result.chosen, result.why = settings.form, f"named by fit.form ({settings.form})"
        return
    if scored:
        best = min(scored, key=lambda k: (scored[k], list(FORMS).index(k)))
        shown = ", ".join(f"{k} {100 * v:.2f} %" for k, v in sorted(scored.items(), key=lambda kv: kv[1]))
        result.chosen = best
        result.why = ("lowest mean |relative error| when predicting runs left out of the fit "
                      f"({', '.join(VALIDATION_CHECKS)}): {shown}")
        return
    best = min(fitted, key=lambda k: (fitted[k]["objective"], list(FORMS).index(k)))
    result.chosen = best
    result.why = "no out-of-sample check was possible on these runs; lowest in-sample objective"


def fitted_law(sections: dict, chosen: str, samples: pd.DataFrame, ranges: dict, where="fit") -> FittedLaw:
    """A FittedLaw (scalelab.fitted) over fit.json's `forms`, the resamples and the fitted runs'
    ranges (`inputs.range`), as load_fit builds it."""
    return FittedLaw({"forms": sections, "chosen_form": chosen, "inputs": {"range": ranges}}, samples, where)


def holdout_section(points, settings, result: FormsResult, workers, say):
    """fit.json's `holdout` (the top compute group predicted by the chosen form refitted without
    it, with prediction intervals), why not, and its table."""
    columns = ["run", "params", "tokens", "flops", "actual", "predicted", "rel_error", "low", "high", "inside"]
    empty = pd.DataFrame(columns=columns)
    if settings.holdout == "none":
        return None, "disabled (--holdout none)", empty
    if len(points) == 0:
        return None, "no usable rows", empty
    chosen = result.chosen
    if chosen is None:
        return None, "no law form was fitted", empty
    if (chosen, "top_compute") not in result.validation_fits:
        why = result.sections[chosen]["validation"]["top_compute"].get("why", "not possible")
        return None, f"without the top compute group the {chosen} form cannot be fitted: {why}", empty
    held = held_masks(points)["top_compute"]
    form = FORMS[chosen]
    theta, rest = result.validation_fits[(chosen, "top_compute")]
    say(f"held-out check: {chosen} refitted on {int((~held).sum())} points, predict {int(held.sum())}")
    # The refit's own prediction intervals: its bootstrap, its residual scatter, and the other
    # forms' refits (point predictions with their scatter), weighted as in the full fit.
    sections = {}
    tables = []
    for name, section in result.sections.items():
        if (name, "top_compute") not in result.validation_fits:
            continue
        theta_f, rest_f = result.validation_fits[(name, "top_compute")]
        # The extrapolation scatter learnt without this check, so that it does not see its answer.
        sections[name] = {"fitted": True, "params": natural(FORMS[name], theta_f, rest_f),
                          "residual_sigma": residual_sigma(FORMS[name], theta_f, rest_f),
                          "weight": section.get("weight", 0.0),
                          "extrapolation_sigma": _extrapolation_sigma_of(result.misses, name, without="top_compute")}
    n_boot = min(settings.bootstrap, HOLDOUT_BOOTSTRAP)
    if n_boot:
        runs = bootstrap_form(form, rest, theta, n_boot, settings.seed, settings.grid_points, workers)
        tables.append(_samples_table(form, rest, runs).assign(form=chosen))
    samples = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["form"])
    law = fitted_law(sections, chosen, samples, data_range(points[~held]))
    test = points[held]
    unique = test["unique_tokens"].to_numpy(float) if "unique_tokens" in test.columns else None
    pred = law.predict(test["params"].to_numpy(float), test["tokens"].to_numpy(float), U=unique)
    actual = test["loss"].to_numpy(float)
    predicted = pred["loss"].to_numpy()
    rel_error = (predicted - actual) / actual
    inside = (actual >= pred["low"].to_numpy()) & (actual <= pred["high"].to_numpy())
    section = {"form": chosen, "held_out": test["run"].tolist(), "predicted": predicted.tolist(),
               "actual": actual.tolist(), "rel_error": rel_error.tolist(), "low": pred["low"].tolist(),
               "high": pred["high"].tolist(), "inside": [bool(v) for v in inside],
               "max_abs_rel_error": float(np.max(np.abs(rel_error))), "flops_min": float(test["flops"].min()),
               "n_fit_points": int((~held).sum()), "bootstrap": n_boot, "fit": sections[chosen]["params"]}
    table = pd.DataFrame({"run": test["run"].tolist(), "params": test["params"].to_numpy(),
                          "tokens": test["tokens"].to_numpy(), "flops": test["flops"].to_numpy(), "actual": actual,
                          "predicted": predicted, "rel_error": rel_error, "low": pred["low"].to_numpy(),
                          "high": pred["high"].to_numpy(), "inside": inside})
    return section, None, table


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
    return {**params, "objective": section["objective"], "huber_delta": HUBER_DELTA,
            "n_starts": section["n_starts"], "ci95": ci, "a": float(a), "b": float(b),
            "bootstrap": settings.bootstrap, "bootstrap_failed": section["bootstrap_failed"],
            "starts_at_optimum": section["starts_at_optimum"], "refined": section["refined"],
            "seed": settings.seed}, None


def allocation_section(result: FormsResult, budgets):
    """fit.json's `allocation` from the chosen form: the optimum at each budget (C = 6·N·D) with
    the prediction interval of its loss and the bootstrap interval of N_opt and D_opt."""
    if result.chosen is None:
        return None, "no law form was fitted"
    form = FORMS[result.chosen]
    if form.needs:
        return None, f"the {form.name} form needs the unique tokens of a future run, so it gives no allocation"
    if not budgets:
        return None, "no budgets to predict at"
    law = fitted_law(result.sections, result.chosen, result.samples, result.ranges)
    try:
        table = law.allocate(budgets)
    except ScalelabError as exc:
        return None, str(exc).split(": ", 1)[-1]

    def ci(low, high):
        return None if not (np.isfinite(low) and np.isfinite(high)) else [float(low), float(high)]

    rows = [{"form": result.chosen, "flops": float(r.flops), "n_opt": float(r.params), "d_opt": float(r.tokens),
             "tokens_per_param": float(r.tokens_per_param), "loss_pred": float(r.loss), "loss_ci95": ci(r.low, r.high),
             "n_opt_ci95": ci(r.params_low, r.params_high), "d_opt_ci95": ci(r.tokens_low, r.tokens_high),
             "extrapolation": r.extrapolation}
            for r in table.itertuples()]
    return rows, None


def disagreement_section(result: FormsResult, allocation):
    """At each budget ahead (the chosen form's optimum): every form's prediction, their spread, and
    whether another form falls outside the chosen form's own interval (bootstrap and scatter)."""
    if not allocation or result.chosen is None:
        return None
    law = fitted_law(result.sections, result.chosen, result.samples, result.ranges)
    rows = []
    for row in allocation:
        n, d = np.array([row["n_opt"]]), np.array([row["d_opt"]])
        by_form = {k: float(v[0]) for k, v in law.forms_at(n, d).items() if np.isfinite(v[0])}
        chosen_only = [(1.0, *law.components(n, d)[result.chosen][1:])]
        from ..fitted import predictive_interval

        band = predictive_interval(chosen_only)
        low, high = (float(np.exp(band[0][0])), float(np.exp(band[1][0]))) if band else (None, None)
        values = list(by_form.values())
        spread = (max(values) - min(values)) / row["loss_pred"] if len(values) > 1 else 0.0
        outside = [k for k, v in by_form.items() if low is not None and not (low <= v <= high)]
        rows.append({"flops": row["flops"], "params": row["n_opt"], "tokens": row["d_opt"], "loss": by_form,
                     "rel_spread": spread, "chosen_interval": None if low is None else [low, high],
                     "outside_chosen_interval": outside, "disagree": bool(outside),
                     "weights": {k: float(w) for k, w in law.weights.items()}})
    return rows

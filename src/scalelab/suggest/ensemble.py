"""The one adapter between a fit folder and the design: each fitted form's bootstrap as an `Ensemble`,
through `scalelab.load_fit` (the form's `loss` and `optimal`, scalelab.laws.law), and the forms together
with their weights and drift as the design's `Uncertainty` (scalelab.suggest.uncertainty)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ScalelabError
from .design import Ensemble
from .uncertainty import Component, Uncertainty

MIN_RESAMPLES = 10
MIN_WEIGHT = 0.01  # a form with less evidence weight than this adds nothing the interval shows
GOLDEN = (np.sqrt(5.0) - 1) / 2


class NoDesign(ScalelabError):
    """The fit cannot support a design (no law, no bootstrap): `--or-explain` writes why instead."""


def _columns(names, theta, shape=None):
    return {name: (theta[:, [k]] if shape == "column" else theta[:, k]) for k, name in enumerate(names)}


def _search_optimum(form, names, theta, flops):
    """(N_opt, D_opt) of each row at C = 6·N·D for a form without a closed form: the best of a grid
    in log N, then golden-section steps inside its neighbours (vectorised over the rows)."""
    log_c6 = np.log(flops / 6)
    grid = np.linspace(0.05 * log_c6, 0.95 * log_c6, 801)
    params = _columns(names, theta, "column")

    def loss(log_n):  # log_n: (rows, k)
        with np.errstate(all="ignore"):
            value = form.loss(params, np.exp(log_n), np.exp(log_c6 - log_n))
        return np.where(np.isfinite(value), value, np.inf)

    values = loss(np.broadcast_to(grid, (len(theta), len(grid))))
    k = np.clip(np.argmin(values, axis=1), 1, len(grid) - 2)
    low, high = grid[k - 1], grid[k + 1]
    for _ in range(80):
        a, b = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
        fa, fb = loss(a[:, None])[:, 0], loss(b[:, None])[:, 0]
        high, low = np.where(fa < fb, b, high), np.where(fa < fb, low, a)
    log_n = (low + high) / 2
    bad = ~np.isfinite(values).any(axis=1)
    n_opt = np.where(bad, np.nan, np.exp(log_n))
    return n_opt, flops / (6 * n_opt)


def read_fit(folder):
    """fit.json, `load_fit`'s law and its finite bootstrap rows; NoDesign when the fit has no law
    or too few resamples."""
    from ..laws.fitted import load_fit

    folder = Path(folder)
    path = folder / "fit.json"
    try:
        fit = json.loads(path.read_text())
    except FileNotFoundError:
        raise ScalelabError(f"--fit {folder}: no fit.json (is it a folder `scalelab fit --out` wrote?)") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ScalelabError(f"--fit {path}: not a readable fit.json ({' '.join(str(exc).split())})") from None
    if not isinstance(fit, dict):
        raise ScalelabError(f"--fit {path}: not a fit.json (expected a JSON object)")
    if not fit.get("chosen_form"):
        why = fit.get("chosen_form_why") or "fit.json names no chosen law form"
        raise NoDesign(f"--fit {path}: the fit has no law to design with ({why})")
    fitted = load_fit(folder)
    if fitted.form.needs:
        raise NoDesign(
            f"--fit {path}: the chosen form {fitted.form.name} needs {', '.join(fitted.form.needs)} for "
            "new runs, which a design cannot know"
        )
    rows = fitted.bootstrap[list(fitted.form.param_names)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    rows = rows[np.all(np.isfinite(rows), axis=1)]
    if len(rows) < MIN_RESAMPLES:
        raise NoDesign(
            f"--fit {folder}: the fit has {len(rows)} usable bootstrap resamples of its law; the design "
            f"needs {MIN_RESAMPLES} or more (rerun `scalelab fit` with --bootstrap 100 or more)"
        )
    return fit, fitted, rows


def form_ensemble(form, rows, point=None) -> Ensemble:
    """An Ensemble of one law form (scalelab.laws.law.FORMS) from parameter rows (columns: its param_names)."""
    names = tuple(form.param_names)

    def loss(theta, params, tokens):
        return form.loss(
            _columns(names, theta, "column"), np.asarray(params, float)[None, :], np.asarray(tokens, float)[None, :]
        )

    def optimum(theta, flops):
        if form.optimal is not None:
            return form.optimal(_columns(names, theta), flops)
        return _search_optimum(form, names, theta, flops)

    return Ensemble(names, np.asarray(rows, float), loss, optimum, point)


def chinchilla_ensemble(samples: pd.DataFrame) -> Ensemble:
    """The Chinchilla form's Ensemble from bootstrap rows with columns E, A, B, alpha, beta."""
    from ..laws.law import FORMS

    form = FORMS["chinchilla"]
    rows = samples[list(form.param_names)].to_numpy(float)
    return form_ensemble(form, rows[np.all(np.isfinite(rows), axis=1)])


def uncertainty_from_fit_dir(folder, stated_width: float | None = None) -> tuple[dict, Uncertainty]:
    """fit.json and the design's Uncertainty: the chosen form first, then every other fitted form
    with weight MIN_WEIGHT or more, MIN_RESAMPLES resamples and an allocation without unique tokens,
    each with its `optimum_drift`; the largest fitted run's FLOPs from fit.json's inputs.range."""
    from ..laws.law import FORMS

    fit, fitted, rows = read_fit(folder)
    point = np.array([fitted.params[name] for name in fitted.form.param_names], float)
    chosen = fitted.form.name
    section = fitted.fitted[chosen]
    components = [
        Component(fitted.weights.get(chosen, 0.0), form_ensemble(fitted.form, rows, point), _drift(section), chosen)
    ]
    for name, section in fitted.fitted.items():
        form = FORMS[name]
        table = fitted.samples.get(name)
        if name == chosen or form.needs or fitted.weights.get(name, 0.0) < MIN_WEIGHT or table is None:
            continue
        others = table[list(form.param_names)].to_numpy(float)
        others = others[np.all(np.isfinite(others), axis=1)]
        if len(others) < MIN_RESAMPLES:
            continue
        params = section.get("params") or {}
        own = np.array([float(params.get(k, np.nan)) for k in form.param_names], float)
        components.append(
            Component(
                fitted.weights[name],
                form_ensemble(form, others, own if np.all(np.isfinite(own)) else None),
                _drift(section),
                name,
            )
        )
    if components[0].weight <= 0:  # a fit whose weights leave the point law out still designs with it
        components[0].weight = MIN_WEIGHT
    flops_range = ((fit.get("inputs") or {}).get("range") or {}).get("flops")
    top = float(flops_range[1]) if flops_range else None
    measured = any(section.get("optimum_drift") is not None for section in fitted.fitted.values())
    return fit, Uncertainty(components, top, stated_width, drift_measured=measured)


def _drift(section) -> float:
    value = section.get("optimum_drift")
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else 0.0

"""The decision at the budgets ahead: fit.json's `allocation` (N_opt, D_opt and the loss at the optimum,
with intervals that carry every form and the extrapolation scatter) and `disagreement`.

The interval of N_opt is a mixture over the fitted forms, weighted as the loss intervals are
(scalelab.fit.evidence): each form contributes Normal(its own log N_opt, its bootstrap spread^2 +
(drift x e)^2), e the e-folds of compute beyond the largest fitted run. `drift` (forms.<name>.
optimum_drift) measures misspecification directly: along the rolling origin (the form refitted on
the runs below each check's origin), how far log N_opt at the budgets ahead moves between that
refit and the full fit beyond what the refit's fewer runs explain (its delta-method variance of
log N_opt less the full fit's), per e-fold of compute the full fit added: the one-sided 75 % upper
bound of d in move ~ Normal(0, noise + (d · e-folds)^2) over the checks (the move the larger at
the 10x and 100x budgets), as for the loss's extrapolation scatter (scalelab.fit.evidence). Only
checks whose full fit reaches at least MIN_DRIFT_STEP (ln 2) e-folds of compute beyond the refit's are
read: a rate per e-fold read off a smaller step divides the move by nearly 0. A check leaving out runs
within 2 % of the top compute gave a drift of 29 per e-fold, and an N_opt interval at 10x the largest
run of 10^-48 to 10^65, on a 16-run ladder that `scalelab suggest` had built (docs/benchmarks.md).
A law that holds gives the same optimum whatever
the origin and a drift of about its noise; a law that is wrong moves as the ladder grows, and its
error at a budget far ahead is taken to grow in proportion to how far ahead it is.
"""

from __future__ import annotations

import numpy as np

from ..errors import ScalelabError
from ..laws.fitted import predictive_interval
from ..laws.law import FORMS, optimal_allocation
from .choose import FormsResult, fitted_law
from .evidence import extrapolation_sigma
from .forms import natural, residual_sigma

DRIFT_BUDGETS = (10.0, 100.0)  # budgets (x the largest run) the drift is measured at
MIN_DRIFT_STEP = float(np.log(2.0))  # e-folds of compute a check must add to be read for the drift


def log_n_opt_variance(form, theta, data, budgets, step=1e-4) -> np.ndarray:
    """The delta-method variance of log N_opt at each budget from a fit's parameter uncertainty
    (sigma^2 (J^T J)^+ in the fitted coordinates); infinite where it cannot be computed."""
    theta = np.asarray(theta, float)
    sigma = residual_sigma(form, theta, data)
    with np.errstate(all="ignore"):
        jac = form.log_law(theta, data.x, data.y, data.u, jac=True)[1].T
        grad = np.empty((len(theta), len(budgets)))
        for k in range(len(theta)):
            up, down = theta.copy(), theta.copy()
            up[k] += step
            down[k] -= step
            grad[k] = (
                np.log(optimal_allocation(form, natural(form, up, data), budgets)[0])
                - np.log(optimal_allocation(form, natural(form, down, data), budgets)[0])
            ) / (2 * step)
    if not (np.isfinite(sigma) and np.all(np.isfinite(jac)) and np.all(np.isfinite(grad))):
        return np.full(len(budgets), np.inf)
    cov = np.linalg.pinv(jac.T @ jac, rcond=1e-10) * sigma**2
    return np.einsum("kb,kl,lb->b", grad, cov, grad)


def optimum_drift(points, result: FormsResult) -> None:
    """Each fitted form's `optimum_drift` (see the module): None without a check below the top compute."""
    flops = points["flops"].to_numpy(float)
    top = flops.max() if len(flops) else 0.0
    budgets = np.array(DRIFT_BUDGETS) * top
    checks = {c.name: c for c in result.checks}
    for name, section in result.sections.items():
        if not section.get("fitted") or FORMS[name].needs:
            continue
        form = FORMS[name]
        with np.errstate(all="ignore"):
            full = np.log(optimal_allocation(form, section["params"], budgets)[0])
        full_variance = log_n_opt_variance(form, result.thetas[name], result.data[name], budgets)
        checks_seen = []
        for (form_name, check_name), (theta, rest) in result.validation_fits.items():
            if form_name != name:
                continue
            step = np.log(top / flops[checks[check_name].train].max())
            if step < MIN_DRIFT_STEP * (1 - 1e-9):  # a refit at half the top compute or below
                continue
            with np.errstate(all="ignore"):
                moved = np.log(optimal_allocation(form, natural(form, theta, rest), budgets)[0]) - full
            # The part of the move that fewer runs' noise explains: for nested fits, Var(refit − full)
            # = Var(refit) − Var(full), each by the delta method.
            noise = np.maximum(log_n_opt_variance(form, theta, rest, budgets) - full_variance, 0.0)
            if np.all(np.isfinite(moved)) and np.all(np.isfinite(noise)):
                worst = int(np.argmax(np.abs(moved)))
                checks_seen.append((moved[[worst]], np.array([step]), np.sqrt(noise[[worst]])))
        # The same upper bound as the loss's extrapolation scatter: move ~ Normal(0, noise + (drift·step)^2).
        section["optimum_drift"] = extrapolation_sigma(checks_seen) if checks_seen else None


def allocation_section(result: FormsResult, budgets):
    """fit.json's `allocation` at the point law's optimum of each budget (C = 6·N·D): the loss with its
    prediction interval, N_opt and D_opt with the mixture interval (every form, drift) and, for
    comparison, the point law's bootstrap alone."""
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
        own = law.allocate(budgets, forms_mixed=False)
    except ScalelabError as exc:
        return None, str(exc).split(": ", 1)[-1]

    def ci(low, high):
        return None if not (np.isfinite(low) and np.isfinite(high)) else [float(low), float(high)]

    rows = [
        {
            "form": result.chosen,
            "flops": float(r.flops),
            "n_opt": float(r.params),
            "d_opt": float(r.tokens),
            "tokens_per_param": float(r.tokens_per_param),
            "loss_pred": float(r.loss),
            "loss_ci95": ci(r.low, r.high),
            "n_opt_ci95": ci(r.params_low, r.params_high),
            "d_opt_ci95": ci(r.tokens_low, r.tokens_high),
            "n_opt_ci95_point_law_bootstrap": ci(o.params_low, o.params_high),
            "extrapolation": r.extrapolation,
        }
        for r, o in zip(table.itertuples(), own.itertuples())
    ]
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
        band = predictive_interval(chosen_only)
        low, high = (float(np.exp(band[0][0])), float(np.exp(band[1][0]))) if band else (None, None)
        values = list(by_form.values())
        spread = (max(values) - min(values)) / row["loss_pred"] if len(values) > 1 else 0.0
        outside = [k for k, v in by_form.items() if low is not None and not (low <= v <= high)]
        rows.append(
            {
                "flops": row["flops"],
                "params": row["n_opt"],
                "tokens": row["d_opt"],
                "loss": by_form,
                "rel_spread": spread,
                "chosen_interval": None if low is None else [low, high],
                "outside_chosen_interval": outside,
                "disagree": bool(outside),
                "weights": {k: float(w) for k, w in law.weights.items()},
            }
        )
    return rows

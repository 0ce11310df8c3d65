"""The scaling laws, numpy only: the one place where laws live, shared by fit, report and notebooks.

`FORMS` is the registry of law forms that `scalelab fit` can fit (`fit.forms`), each a `LawForm`:

- `chinchilla`: L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, Approach 3), additive in N and D.
- `kaplan`: L = E + [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, eq. 1.5, with
  an irreducible E): the N and D terms interact, so the gap between two sizes grows with D.
- `data_constrained`: Chinchilla's form on effective data D' = U + U·R*·(1 − exp(−R/R*)), with U
  unique tokens and R = D/U − 1 repetitions (Muennighoff et al. 2023, the data side; their
  excess-parameter term N' is left out). With one epoch D' = D and it is Chinchilla's form.

A form is fitted in log space on centred logs, x = log(N/N0) and y = log(D/D0) (N0, D0 the
geometric means of the fitted runs), in parameters `theta` (`theta_names`) that L-BFGS-B handles
well; `params(theta, N0, D0)` turns them into the natural parameters (`param_names`) that
fit.json, `loss` and `optimal` use. `log_law` is vectorised over rows of starts for screening
and gives the Jacobian for the gradient of the fit's objective.

The FLOPs convention of every allocation is C = 6·N·D (`FLOPS_CONVENTION`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

LAW_KEYS = ("E", "A", "B", "alpha", "beta")
FLOPS_CONVENTION = "6*N*D"  # compute C of an allocation, stated in fit.json and the report


def predict_loss(params, tokens, E, A, B, alpha, beta):
    """L = E + A / N^alpha + B / D^beta, vectorised over params N and tokens D."""
    params = np.asarray(params, dtype=float)
    tokens = np.asarray(tokens, dtype=float)
    return E + A / params**alpha + B / tokens**beta


def compute_optimal(flops, A, B, alpha, beta):
    """(N_opt, D_opt) minimising the law at compute C = 6·N·D (Hoffmann et al. 2022, eq. 4).

    NaN unless both exponents are positive (the law then has no finite optimum)."""
    flops, A, B, alpha, beta = (np.asarray(v, dtype=float) for v in (flops, A, B, alpha, beta))
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    return G * (flops / 6) ** a, (flops / 6) ** b / G


def _lse(*terms):
    """log(sum(exp(terms))) and the softmax weights, stable (subtract the largest term)."""
    top = terms[0]
    for t in terms[1:]:
        top = np.maximum(top, t)
    weights = [np.exp(t - top) for t in terms]
    total = sum(weights)
    return top + np.log(total), [w / total for w in weights]


# ------------------------------------------------------------------------------ chinchilla


def _chinchilla_log_law(theta, x, y, u=None, jac=False):
    a, b, e, alpha, beta = theta
    value, (w_n, w_d, w_e) = _lse(a - alpha * x, b - beta * y, e + 0 * x)
    if not jac:
        return value
    return value, np.array([w_n, w_d, w_e, -w_n * x, -w_d * y])


def _chinchilla_params(theta, n0, d0):
    a, b, e, alpha, beta = (np.asarray(v, float) for v in theta)
    with np.errstate(all="ignore"):
        return {
            "E": np.exp(e),
            "A": np.exp(a + alpha * np.log(n0)),
            "B": np.exp(b + beta * np.log(d0)),
            "alpha": alpha,
            "beta": beta,
        }


def _chinchilla_theta(p, n0, d0):
    return np.array(
        [
            np.log(p["A"]) - p["alpha"] * np.log(n0),
            np.log(p["B"]) - p["beta"] * np.log(d0),
            np.log(p["E"]),
            p["alpha"],
            p["beta"],
        ],
        dtype=float,
    )


def _chinchilla_loss(p, N, D, U=None):
    return predict_loss(N, D, p["E"], p["A"], p["B"], p["alpha"], p["beta"])


def _chinchilla_optimal(p, C):
    return compute_optimal(C, p["A"], p["B"], p["alpha"], p["beta"])


def _chinchilla_grid(points, log_lo, log_hi):
    """Each of the two terms at the centre of the data from 1/50 of the lowest loss to the highest."""
    lin = np.linspace
    return [
        lin(log_lo - 4, log_hi, points),
        lin(log_lo - 4, log_hi, points),
        lin(log_lo - 3, log_lo, points),
        lin(0.05, 1.5, points),
        lin(0.05, 1.5, points),
    ]


# ------------------------------------------------------------------------------ kaplan


def _kaplan_log_law(theta, x, y, u=None, jac=False):
    # theta: p, q, e, r = alpha_N/alpha_D, alpha_D; inner = LSE(p − r·x, q − y) = log[(Nc/N)^r + Dc/D]
    p, q, e, r, alpha_d = theta
    inner, (v_n, v_d) = _lse(p - r * x, q - y)
    value, (w_t, w_e) = _lse(alpha_d * inner, e + 0 * x)
    if not jac:
        return value
    g = w_t * alpha_d
    return value, np.array([g * v_n, g * v_d, w_e, -g * v_n * x, w_t * inner])


def _kaplan_params(theta, n0, d0):
    p, q, e, r, alpha_d = (np.asarray(v, float) for v in theta)
    with np.errstate(all="ignore"):
        return {
            "E": np.exp(e),
            "N_c": np.exp(np.log(n0) + p / r),
            "D_c": np.exp(np.log(d0) + q),
            "alpha_N": r * alpha_d,
            "alpha_D": alpha_d,
        }


def _kaplan_theta(p, n0, d0):
    r = p["alpha_N"] / p["alpha_D"]
    return np.array(
        [r * (np.log(p["N_c"]) - np.log(n0)), np.log(p["D_c"]) - np.log(d0), np.log(p["E"]), r, p["alpha_D"]],
        dtype=float,
    )


def _kaplan_loss(p, N, D, U=None):
    N, D = np.asarray(N, float), np.asarray(D, float)
    with np.errstate(all="ignore"):
        return p["E"] + ((p["N_c"] / N) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / D) ** p["alpha_D"]


def _kaplan_grid(points, log_lo, log_hi):
    # Screened in (log N-term, log D-term at the centre, e, r, alpha_D), mapped to theta by the caller.
    lin = np.linspace
    return [
        lin(log_lo - 4, log_hi, points),
        lin(log_lo - 4, log_hi, points),
        lin(log_lo - 3, log_lo, points),
        lin(0.3, 3.0, points),
        lin(0.05, 1.5, points),
    ]


def _kaplan_grid_to_theta(rows):
    t_n, t_d, e, r, alpha_d = rows.T
    return np.column_stack([t_n / alpha_d, t_d / alpha_d, e, r, alpha_d])


# ------------------------------------------------------------------------------ data-constrained


def effective_tokens(tokens, unique, r_star):
    """D' = U + U·R*·(1 − exp(−R/R*)), R = D/U − 1 repetitions (Muennighoff et al. 2023, eq. 5)."""
    tokens, unique = np.asarray(tokens, float), np.asarray(unique, float)
    repeats = np.maximum(tokens / unique - 1, 0)
    return unique * (1 + r_star * (1 - np.exp(-repeats / r_star)))


def _dc_log_effective(s, y, u):
    """log D' − log D0 and its derivative in s = log R*, from y = log(D/D0) and u = log(U/D0)."""
    repeats = np.maximum(np.exp(y - u) - 1, 0)
    r_star = np.exp(s)
    decay = np.exp(-repeats / r_star)
    g = 1 + r_star * (1 - decay)
    dg_ds = r_star * (1 - decay) - decay * repeats  # d g / d log R*
    return u + np.log(g), dg_ds / g


def _dc_log_law(theta, x, y, u=None, jac=False):
    a, b, e, alpha, beta, s = theta
    y_eff, dy_ds = _dc_log_effective(s, y, u)
    value, (w_n, w_d, w_e) = _lse(a - alpha * x, b - beta * y_eff, e + 0 * x)
    if not jac:
        return value
    return value, np.array([w_n, w_d, w_e, -w_n * x, -w_d * y_eff, -w_d * beta * dy_ds])


def _dc_params(theta, n0, d0):
    return {**_chinchilla_params(theta[:5], n0, d0), "R_star": np.exp(np.asarray(theta[5], float))}


def _dc_theta(p, n0, d0):
    return np.append(_chinchilla_theta(p, n0, d0), np.log(p["R_star"]))


def _dc_loss(p, N, D, U=None):
    if U is None:
        raise ValueError("the data-constrained law needs the unique tokens U")
    return predict_loss(N, effective_tokens(D, U, p["R_star"]), p["E"], p["A"], p["B"], p["alpha"], p["beta"])


def _dc_grid(points, log_lo, log_hi):
    return _chinchilla_grid(points, log_lo, log_hi) + [np.log([2.0, 8.0, 30.0, 100.0])]


# ------------------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class LawForm:
    """One law form: its loss, parameters, bounds, starting grid and compute-optimal allocation.

    name, title: the key (fit.forms) and the formula in words.
    param_names: the natural parameters (fit.json, `loss`, `optimal`); exponent_names, the
        exponents among them (fit.json's schema bounds them).
    theta_names, theta_bounds: the fitted parameters (centred log space) and their bounds; a
        bound is relative (added to the lowest or highest log loss) where `relative` says so.
    log_law(theta, x, y, u, jac): log L at centred logs (vectorised over rows of theta columns).
    params(theta, N0, D0) / theta(params, N0, D0): the natural parameters and back.
    loss(params, N, D, U=None): L, vectorised. optimal(params, C) -> (N_opt, D_opt) at C = 6·N·D,
        or None where the form has no closed form (then `allocate` minimises `loss` along C).
    grid(points, log_lo, log_hi): per-axis start values; grid_to_theta maps a grid row to theta.
    needs: the metrics columns besides params and tokens (data_constrained: unique_tokens).
    """

    name: str
    title: str
    param_names: tuple
    exponent_names: tuple
    theta_names: tuple
    theta_bounds: tuple
    log_law: Callable
    params: Callable
    theta: Callable
    loss: Callable
    grid: Callable
    optimal: Callable | None = None
    grid_to_theta: Callable | None = None
    needs: tuple = ()
    theta_params: tuple = ()  # the natural parameter each theta mainly sets (for "on its bound")


# Bounds in theta: (low, high, relative), where relative "lo"/"hi" adds the lowest/highest log loss.
# E may not exceed the highest loss; 20 e-folds below the lowest loss means "no floor reached".
_TERM = (-40.0, 10.0, "hi")
_E = (-20.0, 0.0, "lo_hi")
_EXPONENT = (0.0, 4.0, None)

FORMS: dict[str, LawForm] = {
    "chinchilla": LawForm(
        "chinchilla",
        "L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022)",
        LAW_KEYS,
        ("alpha", "beta"),
        ("a", "b", "e", "alpha", "beta"),
        (_TERM, _TERM, _E, _EXPONENT, _EXPONENT),
        _chinchilla_log_law,
        _chinchilla_params,
        _chinchilla_theta,
        _chinchilla_loss,
        _chinchilla_grid,
        optimal=_chinchilla_optimal,
        theta_params=("A", "B", "E", "alpha", "beta"),
    ),
    "kaplan": LawForm(
        "kaplan",
        "L = E + [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, eq. 1.5)",
        ("E", "N_c", "D_c", "alpha_N", "alpha_D"),
        ("alpha_N", "alpha_D"),
        ("p", "q", "e", "r", "alpha_D"),
        ((-400.0, 400.0, None), (-200.0, 200.0, None), _E, (0.02, 20.0, None), (0.01, 4.0, None)),
        _kaplan_log_law,
        _kaplan_params,
        _kaplan_theta,
        _kaplan_loss,
        _kaplan_grid,
        grid_to_theta=_kaplan_grid_to_theta,
        theta_params=("N_c", "D_c", "E", "alpha_N", "alpha_D"),
    ),
    "data_constrained": LawForm(
        "data_constrained",
        "L = E + A/N^alpha + B/D'^beta, D' = U + U·R*·(1 − exp(−R/R*)) (Muennighoff et al. 2023)",
        (*LAW_KEYS, "R_star"),
        ("alpha", "beta"),
        ("a", "b", "e", "alpha", "beta", "s"),
        (_TERM, _TERM, _E, _EXPONENT, _EXPONENT, (np.log(0.1), np.log(1e4), None)),
        _dc_log_law,
        _dc_params,
        _dc_theta,
        _dc_loss,
        _dc_grid,
        needs=("unique_tokens",),
        theta_params=("A", "B", "E", "alpha", "beta", "R_star"),
    ),
}


def bounds_for(form: LawForm, log_lo: float, log_hi: float) -> list[tuple[float, float]]:
    """The form's theta bounds for data whose log losses lie in [log_lo, log_hi]."""
    out = []
    for low, high, relative in form.theta_bounds:
        if relative == "hi":
            out.append((low + log_hi, high + log_hi))
        elif relative == "lo_hi":
            out.append((low + log_lo, high + log_hi))
        else:
            out.append((low, high))
    return out


def optimal_allocation(form: LawForm, params: dict, flops, unique=None):
    """(N_opt, D_opt) at each budget C = 6·N·D: the form's closed form, else a 1-D search over log N."""
    flops = np.atleast_1d(np.asarray(flops, float))
    if form.optimal is not None:
        return form.optimal(params, flops)
    # Golden search would need a loop per budget; a fine grid in log N then a parabola through the
    # best three points is vectorised and accurate to ~1e-4 in log N, far below any interval.
    n_opt, d_opt = np.full(flops.shape, np.nan), np.full(flops.shape, np.nan)
    for i, c in enumerate(flops):
        log_n = np.linspace(np.log(c / 6) * 0.05, np.log(c / 6) * 0.95, 2001)
        with np.errstate(all="ignore"):
            loss = form.loss(params, np.exp(log_n), c / (6 * np.exp(log_n)), unique)
        if not np.any(np.isfinite(loss)):
            continue
        k = int(np.nanargmin(loss))
        if 0 < k < len(log_n) - 1:
            y0, y1, y2 = loss[k - 1 : k + 2]
            denom = y0 - 2 * y1 + y2
            shift = 0.5 * (y0 - y2) / denom if denom > 0 else 0.0
            best = log_n[k] + shift * (log_n[1] - log_n[0])
            n_opt[i], d_opt[i] = np.exp(best), c / (6 * np.exp(best))
    return n_opt, d_opt

"""One law fitted to one model size's trajectories: scipy least squares on log loss.

How train and validation losses are tied: the law describes the fitted target (val_loss by
default). The val rows are few (a handful of evaluations per trunk segment and cooldown) but
precise; the train rows are dense but each is one batch's loss (noisy), and their distance to the
val loss drifts along training. By default a val_loss law is fitted to the val rows alone: on the
default study the train rows, tied by a fitted offset, made every law's held-out error worse
(docs/benchmarks.md, `bench/curves.py --train-rows`). With `train_rows=True` they enter as the law
plus a fitted offset (`train_offset`), each kind weighted by the inverse of its own residual spread
(a first pass with equal weights measures it). With the target train_loss only train rows are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..errors import ScalelabError
from .laws import Law

Z95 = 1.959963984540054


@dataclass
class LawFit:
    law: Law
    theta: np.ndarray  # the law's parameters, then train_offset when train rows tie to val
    cov: np.ndarray
    lr_ref: float
    weights: dict  # kind -> 1 / residual spread
    residual_sd: dict  # kind -> sd of the log residuals
    n_rows: dict
    cost: float

    @property
    def law_theta(self) -> np.ndarray:
        return self.theta[: len(self.law.params)]

    def log_predict(self, lrs: np.ndarray, steps) -> np.ndarray:
        pred = self.law.predict(self.law_theta, lrs / self.lr_ref, np.atleast_1d(steps))
        return np.log(np.maximum(pred, 1e-9))

    def log_sd(self, lrs: np.ndarray, step: int) -> float:
        """The delta-method sd of the log prediction at `step` from the parameters' covariance."""
        k = len(self.law.params)
        grad = np.zeros(len(self.theta))
        for i in range(k):
            h = 1e-5 * max(abs(self.theta[i]), 1e-3)
            up, down = self.theta.copy(), self.theta.copy()
            up[i] += h
            down[i] -= h
            grad[i] = (self._log_at(up, lrs, step) - self._log_at(down, lrs, step)) / (2 * h)
        return float(np.sqrt(max(grad @ self.cov @ grad, 0.0)))

    def _log_at(self, theta, lrs, step) -> float:
        pred = self.law.predict(theta[: len(self.law.params)], lrs / self.lr_ref, np.array([step]))
        return float(np.log(max(pred[0], 1e-9)))


def _stack(trajectories, kinds) -> list[tuple]:
    """(normalised-later lrs, steps, kind flags, log losses) of each trajectory's rows of `kinds`."""
    out = []
    for traj in trajectories:
        rows = traj.rows[traj.rows["kind"].isin(kinds)]
        if len(rows):
            out.append(
                (
                    traj.lrs,
                    rows["step"].to_numpy(int),
                    (rows["kind"] == "train").to_numpy(),
                    np.log(rows["loss"].to_numpy(float)),
                )
            )
    return out


def _residuals(theta, law: Law, data, lr_ref: float, weights: dict, offset: bool) -> np.ndarray:
    k = len(law.params)
    parts = []
    for lrs, steps, is_train, log_loss in data:
        pred = law.predict(theta[:k], lrs / lr_ref, steps)
        if offset:
            pred = pred + np.where(is_train, theta[k], 0.0)
        resid = log_loss - np.log(np.maximum(pred, 1e-9))
        parts.append(resid * np.where(is_train, weights["train"], weights["val"]))
    return np.concatenate(parts)


def _solve(law, data, lr_ref, weights, offset, starts, bounds, robust):
    best = None
    for start in starts:
        try:
            res = least_squares(
                _residuals,
                start,
                bounds=bounds,
                args=(law, data, lr_ref, weights, offset),
                loss="huber" if robust else "linear",
                f_scale=1.0,
                x_scale="jac",
                max_nfev=400,
            )
        except ValueError:
            continue
        if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
            best = res
    return best


def fit_law(
    law: Law, trajectories, target: str = "val", robust: bool = True, train_rows: bool = False, start=None
) -> LawFit:
    """Fit `law` to these trajectories' rows (see the module docstring for the train/val tie). `start`:
    one more starting point beside the law's own (a refit of the same size also starts from its fit)."""
    kinds = (("val", "train") if train_rows else ("val",)) if target == "val" else ("train",)
    data = _stack(trajectories, kinds)
    if not data:
        raise ScalelabError(f"curves: no {target} rows to fit the {law.name} law to")
    offset = target == "val" and any(d[2].any() for d in data) and any((~d[2]).any() for d in data)
    if target == "val" and not offset:
        data = [d for d in data if (~d[2]).any()]
    lr_ref = float(max(traj.lrs.max() for traj in trajectories))
    min_loss = float(np.exp(min(d[3].min() for d in data)))
    low, high = law.bounds(min_loss)
    starts = law.starts(min_loss)
    if offset:
        low, high, starts = low + [-1.0], high + [1.0], [s + [0.0] for s in starts]
    if start is not None and len(start) == len(low):
        starts = starts + [np.clip(np.asarray(start, dtype=float), low, high)]
    weights = {"val": 1.0, "train": 1.0}
    first = _solve(law, data, lr_ref, weights, offset, starts, (low, high), robust)
    if first is None:
        raise ScalelabError(f"curves: the {law.name} law could not be fitted (no start converged)")
    sd = _kind_sd(first.x, law, data, lr_ref, offset)
    weights = {kind: 1.0 / max(value, 1e-6) for kind, value in sd.items()}
    res = _solve(law, data, lr_ref, weights, offset, [first.x], (low, high), robust) or first
    n = {kind: int(sum((d[2] if kind == "train" else ~d[2]).sum() for d in data)) for kind in ("val", "train")}
    return LawFit(
        law, res.x, _covariance(res), lr_ref, weights, _kind_sd(res.x, law, data, lr_ref, offset), n, float(res.cost)
    )


def _kind_sd(theta, law, data, lr_ref, offset) -> dict:
    resid = _residuals(theta, law, data, lr_ref, {"val": 1.0, "train": 1.0}, offset)
    is_train = np.concatenate([d[2] for d in data])
    sd = {}
    for kind, mask in (("val", ~is_train), ("train", is_train)):
        sd[kind] = float(np.sqrt(np.mean(resid[mask] ** 2))) if mask.sum() else 1.0
    return sd


def _covariance(res) -> np.ndarray:
    """sigma^2 (J'J)^-1 of the weighted residuals over the free parameters. A parameter on its bound is
    held there (a Wald variance means nothing at a bound; the parameter table says which), and pinv
    gives a flat direction a wide, not a broken, interval."""
    free = np.flatnonzero(res.active_mask == 0)
    cov = np.zeros((len(res.x), len(res.x)))
    if len(free):
        jac = res.jac[:, free]
        dof = max(1, len(res.fun) - len(free))
        sigma2 = float(res.fun @ res.fun) / dof
        cov[np.ix_(free, free)] = np.linalg.pinv(jac.T @ jac) * sigma2
    return cov


def parameter_table(fit: LawFit) -> dict:
    """{name: {value, low, high, at_bound}} with 95 % Wald intervals; a parameter on its bound says so."""
    names = list(fit.law.params) + (["train_offset"] if len(fit.theta) > len(fit.law.params) else [])
    low, high = fit.law.bounds(np.inf)
    low, high = low + [-1.0], high + [1.0]
    sd = np.sqrt(np.clip(np.diag(fit.cov), 0, None))
    table = {}
    for i, name in enumerate(names):
        value = float(fit.theta[i])
        on_bound = abs(value - low[i]) <= 1e-6 * max(1.0, abs(low[i])) or (
            np.isfinite(high[i]) and name != "L0" and abs(value - high[i]) <= 1e-6 * max(1.0, abs(high[i]))
        )
        table[name] = {
            "value": value,
            "low": value - Z95 * float(sd[i]),
            "high": value + Z95 * float(sd[i]),
            "at_bound": bool(on_bound),
        }
    return table

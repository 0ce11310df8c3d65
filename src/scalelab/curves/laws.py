"""The schedule-aware loss laws: the loss after s optimizer steps as a function of the lr of every step.

Both laws see a run only through its learning rates eta_0 .. eta_{s-1} (normalised by a fixed
reference lr per model size, so the parameters are of order one) and are written here from the
papers' equations:

- `annealing` (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing"):
  L(s) = L0 + A * S1^-alpha - C * S2, with S1 = sum of the lr (the forward area) and
  S2 = sum_i m_i, m_i = lam * m_{i-1} + (eta_{i-1} - eta_i) (the annealing area: each lr drop keeps
  paying off with a momentum-like decay lam). Warmup's rises are not drops (the paper's S2 counts
  the annealing only).
- `multi-power` (Luo et al. 2025, ICLR, "A Multi-Power Law for Loss Curve Prediction Across Learning
  Rate Schedules"): L(s) = L0 + A * S1^-alpha - LD(s), LD(s) = B * sum_k (eta_{k-1} - eta_k) *
  G(eta_k^-gamma * S_k(s)), S_k(s) = eta_k + ... + eta_{s-1}, G(x) = 1 - (C x + 1)^-beta: every lr
  drop buys a loss reduction that grows as a power law in the lr area trained since it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter


@dataclass(frozen=True)
class Law:
    name: str
    params: tuple[str, ...]
    reference: str

    def bounds(self, min_loss: float) -> tuple[list[float], list[float]]:
        return BOUNDS[self.name](min_loss)

    def starts(self, min_loss: float) -> list[list[float]]:
        return STARTS[self.name](min_loss)

    def predict(self, theta, lrs: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """The loss after each of `steps` updates of a run whose normalised lrs are `lrs`."""
        return EVALUATE[self.name](np.asarray(theta, dtype=float), lrs, np.asarray(steps, dtype=int))


def _areas(lrs: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S1 at each step, the lr drops d_i = max(0, eta_{i-1} - eta_i) of every update)."""
    forward = np.concatenate([[0.0], np.cumsum(lrs)])
    drops = np.zeros_like(lrs)
    drops[1:] = np.maximum(0.0, lrs[:-1] - lrs[1:])
    return forward[steps], drops


def annealing_loss(theta: np.ndarray, lrs: np.ndarray, steps: np.ndarray) -> np.ndarray:
    L0, A, alpha, C, lam = theta
    s1, drops = _areas(lrs, steps)
    momentum = lfilter([1.0], [1.0, -lam], drops)
    s2 = np.concatenate([[0.0], np.cumsum(momentum)])[steps]
    return L0 + A * np.maximum(s1, 1e-12) ** -alpha - C * s2


def multi_power_loss(theta: np.ndarray, lrs: np.ndarray, steps: np.ndarray) -> np.ndarray:
    L0, A, alpha, B, C, beta, gamma = theta
    s1, drops = _areas(lrs, steps)
    forward = np.concatenate([[0.0], np.cumsum(lrs)])
    where = np.flatnonzero(drops)
    reduction = np.zeros(len(steps))
    if len(where):
        # area trained from drop k to step s: forward[s] - forward[k]; only drops before s count
        since = forward[steps][:, None] - forward[where][None, :]
        scaled = np.maximum(since, 0.0) * np.maximum(lrs[where], 1e-12)[None, :] ** -gamma
        gain = 1.0 - (C * scaled + 1.0) ** -beta
        gain[where[None, :] >= steps[:, None]] = 0.0
        reduction = B * gain @ drops[where]
    return L0 + A * np.maximum(s1, 1e-12) ** -alpha - reduction


INF = np.inf
BOUNDS = {
    "annealing": lambda low: ([0.0, 0.0, 0.01, 0.0, 0.0], [low, INF, 3.0, INF, 0.9999]),
    "multi-power": lambda low: ([0.0, 0.0, 0.01, 0.0, 0.0, 0.01, 0.0], [low, INF, 3.0, INF, INF, 5.0, 2.0]),
}
STARTS = {
    "annealing": lambda low: (
        [[0.6 * low, 1.0, 0.5, 0.5, lam] for lam in (0.9, 0.99)] + [[0.3 * low, 2.0, 0.3, 1.0, 0.95]]
    ),
    "multi-power": lambda low: (
        [[0.6 * low, 1.0, 0.5, 0.5, c, 0.5, 0.5] for c in (0.5, 5.0)] + [[0.3 * low, 2.0, 0.3, 1.0, 1.0, 1.0, 0.2]]
    ),
}
EVALUATE = {"annealing": annealing_loss, "multi-power": multi_power_loss}
LAWS = {
    "annealing": Law("annealing", ("L0", "A", "alpha", "C", "lam"), "Tissue et al. 2024, arXiv 2408.11029"),
    "multi-power": Law(
        "multi-power", ("L0", "A", "alpha", "B", "C", "beta", "gamma"), "Luo et al. 2025 (ICLR), arXiv 2503.12811"
    ),
}

"""The Chinchilla law, numpy only: the one copy that fit, report and notebooks share.

L(N, D) = E + A / N^alpha + B / D^beta, with N the (non-embedding) parameters and D the
training tokens, and its compute-optimal allocation at C = 6·N·D (Hoffmann et al. 2022, eq. 4).
"""
from __future__ import annotations

import numpy as np

LAW_KEYS = ("E", "A", "B", "alpha", "beta")


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

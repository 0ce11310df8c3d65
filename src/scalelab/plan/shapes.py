"""Model shapes without torch: the config dataclass, parameter counts and FLOPs per token.

Kept apart from model.py so the Snakefile can size jobs without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    context: int
    n_layer: int
    d_model: int
    n_head: int

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")

    def to_dict(self) -> dict:
        return asdict(self)


def non_embedding_params(n_layer: int, d_model: int) -> int:
    """Per block: qkv 3d^2+3d, proj d^2+d, fc 4d^2+4d, proj 4d^2+d, two LayerNorms 4d; final LayerNorm 2d."""
    return n_layer * (12 * d_model * d_model + 13 * d_model) + 2 * d_model


def param_counts(cfg: GPTConfig) -> tuple[int, int]:
    """(non-embedding, total) parameter counts from the shape alone, without building the model.

    Embeddings: vocab*d + context*d (the head is tied, so it adds nothing).
    """
    non_embedding = non_embedding_params(cfg.n_layer, cfg.d_model)
    total = non_embedding + cfg.vocab_size * cfg.d_model + cfg.context * cfg.d_model
    return non_embedding, total


def flops_per_token(cfg: GPTConfig) -> tuple[int, int]:
    """Training FLOPs per token: (non-embedding, total) conventions, each 6*N plus the attention term.

    N is the non-embedding parameter count (Kaplan et al. 2020) or the total count (Hoffmann et
    al. 2022, which counts the tied output head that dominates small models). The attention
    term, 6 * n_layer * context * d_model, is Kaplan's forward 2 * n_layer * n_ctx * d_attn
    times 3 for forward plus backward.
    """
    non_embedding, total = param_counts(cfg)
    attention = 6 * cfg.n_layer * cfg.context * cfg.d_model
    return 6 * non_embedding + attention, 6 * total + attention

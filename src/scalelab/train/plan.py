"""A run's plan, resolved once from its spec: steps, warmup, the WSD branch point and family,
tokens per step and FLOPs. The module, the data, resume and the metrics read it; the spec dict
stays the run's identity, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..plan import wsd
from ..plan.shapes import GPTConfig, flops_per_token
from .schedule import total_steps, warmup_steps_for


@dataclass(frozen=True)
class RunPlan:
    steps: int  # optimizer steps to train to
    warmup_steps: int
    tokens_per_step: int  # batch_size x context
    flops_per_token: int  # training FLOPs per token, non-embedding 6N + attention (metrics' `flops`)
    flops_per_token_total: int  # the same with the embeddings (metrics' `flops_total`)
    family: str | None = None  # the WSD family (results/trunks/<family>); None outside WSD
    branch_step: int | None = None  # the WSD trunk step the cooldown starts from; a trunk: `steps`

    @property
    def tokens(self) -> int:
        """The tokens trained: whole steps, so at least the tokens requested."""
        return self.steps * self.tokens_per_step

    @property
    def flops(self) -> int:
        return self.tokens * self.flops_per_token


def model_shape(spec: dict, vocab_size: int) -> GPTConfig:
    """The network of a run or trunk spec, for a vocabulary of `vocab_size` (meta.json's)."""
    return GPTConfig(
        vocab_size=vocab_size,
        context=spec["context"],
        n_layer=spec["n_layer"],
        d_model=spec["d_model"],
        n_head=spec["n_head"],
    )


def plan_run(spec: dict, model_config: GPTConfig) -> RunPlan:
    """The plan of a grid point's run (a cosine/linear/constant run, or a WSD run's cooldown branch)."""
    tokens_per_step = spec["batch_size"] * spec["context"]
    steps = total_steps(spec["tokens"], spec["batch_size"], spec["context"])
    per_token, per_token_total = flops_per_token(model_config)
    if not wsd.is_wsd(spec):
        return RunPlan(steps, warmup_steps_for(spec, steps), tokens_per_step, per_token, per_token_total)
    return RunPlan(
        steps,
        wsd.warmup_steps(spec),
        tokens_per_step,
        per_token,
        per_token_total,
        wsd.family_id(spec),
        wsd.branch_step(spec),
    )


def plan_trunk(family: dict, step: int, model_config: GPTConfig) -> RunPlan:
    """The plan of a WSD trunk segment that ends at `step` (a trunk branches at its own end)."""
    per_token, per_token_total = flops_per_token(model_config)
    return RunPlan(
        step,
        wsd.warmup_steps(family),
        family["batch_size"] * family["context"],
        per_token,
        per_token_total,
        wsd.family_id(family),
        step,
    )

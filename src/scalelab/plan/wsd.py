"""Warmup-stable-decay (WSD): one trunk per family, one cooldown branch per run.

Under `train.schedule: wsd` the lr warms up over an absolute number of tokens, stays at the
peak, and decays over the last `train.cooldown` fraction of each run's steps (`1-sqrt` or
`linear`, to `min_lr_ratio` of the peak). Before its cooldown a run is exactly the constant-lr
*trunk* that every run of its family shares, so the trunk is trained once:

- a **family** is the runs that agree on everything but D (shape, seed, train settings after
  overrides, data): their spec without `run`, `tokens`, `isoflop_budget`, `cooldown` and
  `cooldown_shape`, none of which changes a trunk step;
- a run of S = ceil(D / (batch_size * context)) steps branches from the trunk at step
  b = S - max(1, floor(cooldown * S + 1/2)) (the cooldown rounded half up to whole steps, at
  least one) and decays over its last S - b steps;
- the trunk is cut into segments between a family's consecutive branch points; the state at
  step k is decided by the family spec, the code and k alone (not by how the trunk was cut), so
  it is kept in a store under that key (see `trunk_key`) and restored, not retrained;
- **FLOPs attribution** (`flops_spent` in metrics.json): each trunk segment is charged to the
  run that branches at its end, and each run pays its own cooldown. So a family's `flops_spent`
  sum to exactly the FLOPs its trunk and cooldowns cost, and a run's charge depends only on its
  own branch point and the previous one: adding a larger D changes no existing run's number.
  Two runs of a family may therefore not branch at the same step (a config error).

Imported at DAG-build time: standard library only (no torch).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from ..errors import ScalelabError

SCHEDULE = "wsd"
DEFAULTS = {"cooldown": 0.2, "cooldown_shape": "1-sqrt"}  # also the schema's defaults
NOT_FAMILY = ("run", "tokens", "isoflop_budget", "cooldown", "cooldown_shape")


def is_wsd(spec: dict) -> bool:
    return spec.get("schedule") == SCHEDULE


def run_settings(settings: dict) -> dict:
    """A model's train settings as they enter its runs' specs: the WSD keys only under WSD, so a
    non-WSD run's spec (its identity) is what it was before WSD existed."""
    if settings.get("schedule") != SCHEDULE:
        return {k: v for k, v in settings.items() if k not in DEFAULTS}
    return {**DEFAULTS, **settings}


# ----------------------------------------------------------------------------- the schedule


def total_steps(spec: dict) -> int:
    return max(1, math.ceil(spec["tokens"] / (spec["batch_size"] * spec["context"])))


def warmup_steps(spec: dict) -> int:
    """Absolute under WSD: the same for every D of a family."""
    tokens = spec["warmup_tokens"]
    return math.ceil(tokens / (spec["batch_size"] * spec["context"])) if tokens > 0 else 0


def branch_step(spec: dict) -> int:
    """The trunk step this run's cooldown starts from (see the module docstring for the rounding)."""
    steps = total_steps(spec)
    return steps - max(1, math.floor(spec["cooldown"] * steps + 0.5))


def lr_factor(step: int, steps: int, warmup: int, branch: int, shape: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step`: linear warmup, the peak until `branch`, then a
    `1-sqrt` or `linear` decay towards min_ratio at `steps` (the trunk is branch == steps)."""
    if step < warmup:
        return (step + 1) / warmup
    if step < branch:
        return 1.0
    progress = min(1.0, (step - branch) / max(1, steps - branch))
    decay = 1 - progress if shape == "linear" else 1 - math.sqrt(progress)
    return min_ratio + (1 - min_ratio) * decay


# ----------------------------------------------------------------------------- families


def family_spec(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in NOT_FAMILY}


def family_id(spec: dict) -> str:
    """`{model}-s{seed}-{hash of the family spec}`: a folder name under results/trunks/."""
    fam = family_spec(spec)
    digest = hashlib.sha256(json.dumps(fam, sort_keys=True).encode()).hexdigest()[:10]
    return f"{fam['model']}-s{fam['seed']}-{digest}"


def trunk_key(fam: dict, step: int, code: str) -> str:
    """The trunk store key of the state after `step` steps: family spec, code and step."""
    text = json.dumps({"trunk": fam, "step": step, "code": code}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Family:
    id: str
    spec: dict
    tokens_per_step: int
    branches: dict[int, str] = field(default_factory=dict)  # branch step -> run id

    @property
    def points(self) -> list[int]:
        return sorted(self.branches)

    def previous(self, step: int) -> int:
        """The branch point before `step` (0: the segment starts from scratch)."""
        earlier = [p for p in self.points if p < step]
        return earlier[-1] if earlier else 0


def _key(config: dict | None, model: str, key: str) -> str:
    """The config key a model's setting comes from: overrides.{model}.{key} or train.{key}."""
    overridden = config is not None and key in (config.get("overrides") or {}).get(model, {})
    return f"overrides.{model}.{key}" if overridden else f"train.{key}"


def plan_families(runs, config: dict | None = None) -> dict[str, Family]:
    """The WSD families of these runs (grid.Run objects or specs), checked: one line naming the
    key to change when a run cannot branch from its trunk (`config` only names the keys)."""
    families: dict[str, Family] = {}
    for run in runs:
        spec = getattr(run, "spec", run)
        if not is_wsd(spec):
            continue
        model = spec["model"]
        if 0 < spec["warmup_tokens"] <= 1:
            raise ScalelabError(
                f"config: {_key(config, model, 'warmup_tokens')}: {spec['warmup_tokens']} is a fraction of D; "
                f"schedule wsd needs absolute tokens (> 1, e.g. 2K) so that every D of model "
                f"{spec['model']} shares one trunk"
            )
        if not 0 < spec["cooldown"] < 1:
            raise ScalelabError(
                f"config: {_key(config, model, 'cooldown')}: {spec['cooldown']} is not strictly between 0 and 1"
            )
        branch, warmup = branch_step(spec), warmup_steps(spec)
        if branch <= warmup:
            raise ScalelabError(
                f"config: {_key(config, model, 'cooldown')}: run {spec['run']} would branch at step {branch} of "
                f"{total_steps(spec)}, not after its warmup ({warmup} steps); lower the cooldown "
                f"or warmup_tokens, or raise its D"
            )
        fid = family_id(spec)
        family = families.setdefault(fid, Family(fid, family_spec(spec), spec["batch_size"] * spec["context"]))
        if branch in family.branches:
            raise ScalelabError(
                f"config: grid.tokens: runs {family.branches[branch]} and {spec['run']} both branch "
                f"from the trunk at step {branch}; make their token counts further apart"
            )
        family.branches[branch] = spec["run"]
    return families


def run_flops(spec: dict, flops_per_token: int, previous: int) -> tuple[float, float]:
    """(flops_spent, flops as an independent run) of one WSD run branching after `previous`."""
    tokens_per_step = spec["batch_size"] * spec["context"]
    steps, branch = total_steps(spec), branch_step(spec)
    spent = ((branch - previous) + (steps - branch)) * tokens_per_step * flops_per_token
    return float(spent), float(steps * tokens_per_step * flops_per_token)


def study_flops(runs, flops_per_token) -> tuple[float, float]:
    """(FLOPs the study spends, FLOPs of the same grid as independent runs); `flops_per_token`
    maps a spec to its training FLOPs per token."""
    runs = [getattr(r, "spec", r) for r in runs]
    families = plan_families(runs)
    spent = independent = 0.0
    for spec in runs:
        fpt = flops_per_token(spec)
        own = total_steps(spec) * spec["batch_size"] * spec["context"] * fpt
        independent += own
        if is_wsd(spec):
            spent += run_flops(spec, fpt, families[family_id(spec)].previous(branch_step(spec)))[0]
        else:
            spent += own
    return spent, independent


def config_flops(config: dict, runs) -> tuple[float, float]:
    """`study_flops` of a config's runs, per token as metrics.json's `flops` counts them
    (non-embedding 6N + attention)."""
    from .shapes import GPTConfig, flops_per_token

    vocab = config["data"]["tokenizer"]["vocab_size"]

    def per_token(spec: dict) -> int:
        shape = GPTConfig(
            vocab_size=vocab,
            context=spec["context"],
            n_layer=spec["n_layer"],
            d_model=spec["d_model"],
            n_head=spec["n_head"],
        )
        return flops_per_token(shape)[0]

    return study_flops(runs, per_token)


def flops_line(config: dict, runs) -> str:
    """`scalelab check`'s line: the FLOPs the study will spend against the same grid as
    independent runs."""
    spent, independent = config_flops(config, runs)
    families = len(plan_families(runs))
    shared = f", {families} WSD trunk(s) shared" if families else ""
    return (
        f"  compute: {spent:.4g} FLOPs to spend{shared}; {independent:.4g} as independent runs "
        f"(ratio {spent / independent:.3f})"
    )

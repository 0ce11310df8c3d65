"""Typed settings, parsed once: each stage's settings with the one default of each value.

The config schema (schemas/config.schema.yaml) keeps defaults too, because Snakemake's
`validate` fills them in; tests/test_settings.py checks that the two agree. Stages receive their
settings as one JSON object (`--spec`), so no config value ever reaches a shell as text.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import ScalelabError

EVAL_TASKS = ("continuation", "pairs")
BLEU_TOKENIZERS = ("13a", "intl", "char", "zh", "none")  # sacrebleu's, less those that download models
DEVICES = ("auto", "cpu", "cuda")


def _from_dict(cls, values: dict | None, what: str):
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ScalelabError(f"{what}: unknown keys {unknown}; known keys are {sorted(known)}")
    return values


@dataclass(frozen=True)
class EvalSettings:
    """The `eval:` block of the config. The defaults cost about 10 % of the smallest default run's
    training and ~1 % of the largest's (mostly fixed costs); the test loss of 16K tokens is paired
    across runs."""

    test_tokens: int | None = 16384  # None: the whole test split
    task: str = "continuation"
    prompts: int = 32  # K
    prompt_tokens: int = 32  # P (continuation only; pairs prompts are the sources)
    max_new_tokens: int = 32  # R
    batch_size: int = 32
    bleu_tokenize: str = "13a"
    device: str = "auto"  # the workflow passes the run's own accelerator (cpu runs evaluate on the CPU)

    @classmethod
    def from_dict(cls, values: dict | None) -> "EvalSettings":
        """From the config's `eval:` block (counts may be written as 16K, as everywhere in the config)."""
        values = _from_dict(cls, values, "eval settings")
        if values.get("test_tokens") is not None:
            from .config import parse_count

            values["test_tokens"] = parse_count(values["test_tokens"], "eval.test_tokens")
        settings = cls(**{k: v for k, v in values.items() if v is not None or k == "test_tokens"})
        settings.check()
        return settings

    def check(self) -> None:
        for name, allowed in (("task", EVAL_TASKS), ("bleu_tokenize", BLEU_TOKENIZERS), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise ScalelabError(f"eval settings: {name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.test_tokens is not None and (not isinstance(self.test_tokens, int) or self.test_tokens < 1):
            raise ScalelabError(f"eval settings: test_tokens must be a positive count or null, got {self.test_tokens!r}")
        for name in ("prompts", "prompt_tokens", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScalelabError(f"eval settings: {name} must be an integer of at least 1, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

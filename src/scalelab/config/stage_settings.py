"""Typed settings, parsed once: each stage's settings with the one default of each value.

    EvalSettings    the config's `eval:` block (`scalelab evaluate --spec`)
    FitSettings     every setting of `scalelab fit` (its flags and `--spec`; the config's `fit:`)
    ReportSettings  the config's `report:` block (`scalelab report --spec`)

The config schema (schemas/config.schema.yaml) keeps defaults too, because Snakemake's
`validate` fills them in; tests/test_settings.py checks that the two agree. Stages receive their
settings as one JSON object (`--spec`), so no config value ever reaches a shell as text.

Standard library and the package's errors only (config helpers are imported when called): the
Snakefile imports this module on every dry run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields

from ..errors import ScalelabError

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
            from .counts import parse_count

            values["test_tokens"] = parse_count(values["test_tokens"], "eval.test_tokens")
        settings = cls(**{k: v for k, v in values.items() if v is not None or k == "test_tokens"})
        settings.check()
        return settings

    def check(self) -> None:
        for name, allowed in (("task", EVAL_TASKS), ("bleu_tokenize", BLEU_TOKENIZERS), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise ScalelabError(f"eval settings: {name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.test_tokens is not None and (not isinstance(self.test_tokens, int) or self.test_tokens < 1):
            raise ScalelabError(
                f"eval settings: test_tokens must be a positive count or null, got {self.test_tokens!r}"
            )
        for name in ("prompts", "prompt_tokens", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScalelabError(f"eval settings: {name} must be an integer of at least 1, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Fit: `scalelab fit` (scalelab.fit)

GRID_POINTS = 4  # values per parameter of Approach 3's start grid: 4**5 = 1024 L-BFGS-B starts
MAX_BOOTSTRAP = 100_000  # resamples: minutes of bootstrap on 2 cores (docs/benchmarks.md, Approach 3 bootstrap)
MAX_GRID_POINTS = 8  # 8**5 = 32768 L-BFGS-B starts; 9**5 would be 59049


@dataclass(frozen=True)
class FitSettings:
    """Every setting of `scalelab fit`; the CLI flags and `--spec` keys both land here.

    target: the loss column ('val_loss', the default, falls back to 'loss' in a CSV without it).
    params: 'non_embedding' (columns params/flops) or 'total' (params_total/flops_total).
    bootstrap: resamples for the Approach 3 and Approach 2 intervals (0: none; at most MAX_BOOTSTRAP).
    seed: seed of every resample (an integer >= 0).
    holdout: 'top' (refit without the top compute group and predict it) or 'none'.
    predict_flops: budgets for the allocation and the hyperparameter recommendation, numbers or
        counts as the config writes them ('1e21', '10T'); None: 10x and 100x the largest run.
    budgets: IsoFLOP budgets to group runs by when the CSV has no isoflop_budget column.
    select: 'best' (fit the best run of each sweep) or 'all' (every usable run).
    sweep_keys: the swept hyperparameter columns (e.g. ['lr']): they get hyperparameter laws, and
        without a best_in_sweep column they decide which runs share a sweep.
    grid_points: start values per parameter of each law form's start grid (grid_points**k
        starts for k parameters; all are scored at once and the best few refined).
    workers: processes (None: the CPU count).
    forms: the law forms to fit (scalelab.laws.law.FORMS; None: every built-in form).
    form: the form used for predictions: 'auto' (the best at predicting left-out runs) or a name.
    allow_any_loss: fit losses outside the plausible range LOSS_RANGE too.
    """

    target: str = "val_loss"
    params: str = "non_embedding"
    bootstrap: int = 1000
    seed: int = 0
    holdout: str = "top"
    predict_flops: tuple | None = None
    budgets: tuple | None = None
    select: str = "best"
    sweep_keys: tuple = ()
    grid_points: int = GRID_POINTS
    workers: int | None = None
    forms: tuple | None = None
    form: str = "auto"
    allow_any_loss: bool = False

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, check_fit_setting(f.name, getattr(self, f.name), f.name))
        if self.form != "auto" and self.forms is not None and self.form not in self.forms:
            raise ScalelabError(
                f"form: {self.form!r} is not among the forms to fit ({', '.join(self.forms)}); "
                "add it to forms or set form: auto"
            )

    @classmethod
    def from_dict(cls, d, where="--spec") -> "FitSettings":
        """Settings from a dict of field values (e.g. the --spec JSON); one ScalelabError line
        naming the key for an unknown key or a bad value."""
        if not isinstance(d, dict):
            raise ScalelabError(f"{where}: expected a JSON object of fit settings, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise ScalelabError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        return cls(**{key: check_fit_setting(key, value, f"{where}: {key}") for key, value in d.items()})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


FIT_CHOICES = {"params": ("non_embedding", "total"), "holdout": ("top", "none"), "select": ("best", "all")}


def count_value(item) -> float:
    """A number, or a count written as in the config ('1e21', '250_000', '2.5K', '10T'); NaN if neither."""
    if isinstance(item, bool):
        return math.nan
    if isinstance(item, (int, float)):
        return float(item)
    match = re.fullmatch(r"\s*([0-9_.eE+-]+?)\s*([KkMmGgTt]?)\s*", str(item))
    try:
        scale = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[match.group(2).upper()]
        return float(match.group(1).replace("_", "")) * scale
    except (AttributeError, ValueError):
        return math.nan


def _integer(value, label, low, high=None, note=""):
    """An integer setting (a whole float counts) from `low` to `high`, or a ScalelabError naming `label`."""
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ScalelabError(f"{label}: expected an integer, got {value!r}")
    if number < low or (high is not None and number > high):
        bound = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ScalelabError(f"{label}: must be {bound}{note}, got {number}")
    return number


def _positive_numbers(value, label):
    """None, or a tuple of positive numbers from one number or count or a list of them."""
    if value is None:
        return None
    items = [value] if isinstance(value, (int, float, str)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ScalelabError(f"{label}: expected a list of positive numbers (e.g. [1e21]), got {value!r}")
    out = []
    for item in items:
        number = count_value(item)
        if not (math.isfinite(number) and number > 0):
            raise ScalelabError(f"{label}: must be positive numbers, got {item!r}")
        out.append(number)
    return tuple(out)


def _law_forms(key, value, label):
    """`form` (one law form or auto) or `forms` (a tuple of distinct law forms, or None)."""
    if (key, value) in (("forms", None), ("form", "auto")):
        return value  # the defaults, without importing numpy (the Snakefile builds FitSettings)
    from ..laws.law import FORMS  # numpy only

    items = [value] if key == "form" or isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ScalelabError(f"{label}: expected a list of law forms ({', '.join(FORMS)}), got {value!r}")
    known = (("auto",) if key == "form" else ()) + tuple(FORMS)
    for item in items:
        if item not in known:
            raise ScalelabError(f"{label}: unknown law form {item!r} (known: {', '.join(known)})")
    if len(set(items)) != len(items):
        raise ScalelabError(f"{label}: a form is named twice in {list(items)}")
    return value if key == "form" else tuple(items)


def _column_names(value, label):
    """A tuple of distinct, non-blank column names from one name or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(k, str) and k.strip() for k in items):
        raise ScalelabError(f"{label}: expected a list of column names, got {value!r}")
    if len(set(items)) != len(items):
        raise ScalelabError(f"{label}: a column is named twice in {list(items)}")
    return tuple(items)


def check_fit_setting(key, value, label):
    """The value of setting `key` normalised (lists become tuples), or a ScalelabError naming `label`."""
    if key in FIT_CHOICES:
        if value not in FIT_CHOICES[key]:
            raise ScalelabError(f"{label}: must be one of {', '.join(FIT_CHOICES[key])}, got {value!r}")
        return value
    if key == "target":
        if not isinstance(value, str) or not value.strip():
            raise ScalelabError(f"{label}: expected a column name, got {value!r}")
        return value
    if key == "bootstrap":
        return _integer(value, label, 0, MAX_BOOTSTRAP, " resamples (the cap keeps a run finite)")
    if key == "seed":
        return _integer(value, label, 0)
    if key == "grid_points":
        return _integer(
            value, label, 2, MAX_GRID_POINTS, f" ({MAX_GRID_POINTS}**5 = {MAX_GRID_POINTS**5} L-BFGS-B starts)"
        )
    if key == "workers":
        return None if value is None else _integer(value, label, 1, 4096)
    if key in ("predict_flops", "budgets"):
        return _positive_numbers(value, label)
    if key in ("forms", "form"):
        return _law_forms(key, value, label)
    if key == "allow_any_loss":
        if not isinstance(value, bool):
            raise ScalelabError(f"{label}: expected true or false, got {value!r}")
        return value
    if key == "sweep_keys":
        return _column_names(value, label)
    raise ScalelabError(f"{label}: unknown fit setting")


# --------------------------------------------------------------------------------------------
# Suggest: `scalelab suggest` (scalelab.suggest) and the config's `fit.suggest:`

SUGGEST_CONFIG_KEYS = ("target_flops", "budget_flops", "max_runs", "sizes")  # fit.suggest's keys
MAX_SUGGESTED_RUNS = 100  # every run has fixed costs; a design of hundreds of tiny runs is no answer


@dataclass(frozen=True)
class SuggestSettings:
    """Every setting of `scalelab suggest` (its flags and `--spec`); the first four are the config's
    `fit.suggest:` keys, the rest the workflow derives from the config.

    target_flops: the compute C whose N_opt the runs should pin down (None: 100x the largest run).
    budget_flops: what the new runs may cost together (None: the FLOPs the study has spent).
    max_runs: at most this many new runs.
    sizes: more candidate sizes N (non-embedding parameters).
    cooldown: under `schedule: wsd`, the cooldown fraction: runs of one size then share a trunk.
    models: the study's shapes {name: {n_layer, d_model, n_head}}, for the YAML snippet.
    tokens_per_step: batch_size x context: a new token count is at least one step.
    max_tokens: the most tokens a run may train (`--data-meta`'s train split, unless allow_repeat).
    allow_repeat: the config's data.allow_repeat (runs may then train past the train split).
    frontier_band: at least half the suggested FLOPs keep N within this factor (or the fit's own spread of
        the frontier where wider) of the compute-optimal N for their own FLOPs in 80 % of the fit's draws of
        it (and no size below the smallest trained): where the law has been checked.
    """

    target_flops: float | None = None
    budget_flops: float | None = None
    max_runs: int = 8
    sizes: tuple = ()
    cooldown: float | None = None
    models: dict | None = None
    tokens_per_step: int | None = None
    max_tokens: int | None = None
    allow_repeat: bool = False
    frontier_band: float = 2.0

    @classmethod
    def from_dict(cls, values, where="--spec") -> "SuggestSettings":
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise ScalelabError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        out = {}
        for key, value in values.items():
            label = f"--{key.replace('_', '-')}" if where == "suggest" else f"{where}: {key}"
            out[key] = _suggest_value(key, value, label)
        return cls(**out)


def _suggest_value(key, value, label):
    def positive(item):
        number = count_value(item)
        if not (math.isfinite(number) and number > 0):
            raise ScalelabError(f"{label}: must be a positive, finite number, got {item!r}")
        return number

    if value is None and key in ("target_flops", "budget_flops", "cooldown", "models", "tokens_per_step", "max_tokens"):
        return None
    if key in ("target_flops", "budget_flops"):
        return positive(value)
    if key == "frontier_band":
        band = positive(value)
        if band <= 1:
            raise ScalelabError(f"{label}: must be a factor above 1, got {value!r}")
        return band
    if key == "max_runs":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SUGGESTED_RUNS:
            raise ScalelabError(f"{label}: must be an integer from 1 to {MAX_SUGGESTED_RUNS}, got {value!r}")
        return value
    if key in ("tokens_per_step", "max_tokens"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScalelabError(f"{label}: must be a positive integer, got {value!r}")
        return value
    if key == "sizes":
        items = [value] if isinstance(value, (int, float, str)) else value
        if not isinstance(items, (list, tuple)):
            raise ScalelabError(f"{label}: expected a list of positive sizes, got {value!r}")
        return tuple(positive(item) for item in items)
    if key == "allow_repeat":
        if not isinstance(value, bool):
            raise ScalelabError(f"{label}: expected true or false, got {value!r}")
        return value
    if key == "cooldown":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ScalelabError(f"{label}: must be a number strictly between 0 and 1, got {value!r}")
        return float(value)
    if key == "models":
        if not isinstance(value, dict) or not all(
            isinstance(shape, dict)
            and all(isinstance(shape.get(k), int) and shape[k] > 0 for k in ("n_layer", "d_model", "n_head"))
            for shape in value.values()
        ):
            raise ScalelabError(f"{label}: expected {{name: {{n_layer, d_model, n_head}}}}, got {value!r}")
        return value
    raise ScalelabError(f"{label}: unknown suggest setting")


# --------------------------------------------------------------------------------------------
# Report: `scalelab report --spec JSON` (scalelab.report)


@dataclass(frozen=True)
class ReportSettings:
    """The report's settings, parsed from `scalelab report --spec JSON`: the config's `report:`
    section as one JSON object (workflow/rules/report.smk passes it as a single param, so a changed
    setting reruns the report). An unknown key or a value of the wrong type is one line naming the
    key. The input and output paths are not settings: they are flags of their own."""

    title: str = "scalelab study"  # the page title and the first line of the summary (config: report.title)

    @classmethod
    def from_spec(cls, text: str | None, what: str = "--spec") -> "ReportSettings":
        """Parse a JSON object of settings; absent keys keep their defaults."""
        if text is None or not text.strip():
            return cls()
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScalelabError(f"{what}: not valid JSON ({exc})") from None
        if not isinstance(spec, dict):
            raise ScalelabError(f"{what}: should be a JSON object of report settings, got {type(spec).__name__}")
        known = {f.name: f for f in fields(cls)}
        for key, value in spec.items():
            if key not in known:
                raise ScalelabError(f"{what}: unknown report setting '{key}' (known: {', '.join(known)})")
            expected = type(known[key].default)
            if type(value) is not expected:
                raise ScalelabError(
                    f"{what}: report setting '{key}' should be a {expected.__name__}, got {json.dumps(value)}"
                )
        return cls(**spec)

    def to_spec(self) -> str:
        """The canonical JSON of these settings (what --spec takes)."""
        return json.dumps(asdict(self), sort_keys=True)

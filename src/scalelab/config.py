"""The study config: validation against the schema, size spellings, grid expansion, run ids.

Used by the Snakefile (at DAG-build time, so it must stay fast and import no torch) and by
`scalelab check CONFIG`, which validates a config file and lists its runs.
"""
from __future__ import annotations

import copy
import functools
import glob
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from . import wsd
from .errors import ScalelabError

# Package data, so an installed (non-editable) scalelab finds it; workflow/schemas/ links here.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"
_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
# train.* keys that decide nothing about a run's numbers: kept out of its spec, so changing them reruns nothing
NOT_IDENTITY = ("logger",)
MAX_MESSAGE = 300  # characters of a config value quoted in an error message
MAX_CONFIG_VALUES = 100_000  # values in the config once YAML aliases are expanded


def parse_count(value: Any, key: str) -> int:
    """Read a count written as 250000, 2.5e5, '2.5e5', '250_000', '250K' or '2M'."""
    if isinstance(value, bool):
        raise ScalelabError(f"config: {key}: expected a count, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9_.eE+-]+?)\s*([KkMmGgTt]?)\s*", str(value))
        try:
            number = float(match.group(1).replace("_", "")) * _SUFFIX[match.group(2).upper()]
        except (AttributeError, ValueError):
            raise ScalelabError(f"config: {key}: {value!r} is not a count (e.g. 250000, 2.5e5, 250K, 2M)") from None
    if not math.isfinite(number) or number <= 0:
        raise ScalelabError(f"config: {key}: must be positive, got {value!r}")
    if round(number) < 1:
        raise ScalelabError(f"config: {key}: must be at least 1, got {value!r}")
    return int(round(number))


def compact_count(n: int) -> str:
    """250000 -> '250K', 2000000 -> '2M', 1500000 -> '1.5M'; lossless, so ids never collide."""
    for suffix, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale and (n * 1000) % scale == 0:
            text = f"{n / scale:.3f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return str(n)


def run_id(model: str, tokens: int, seed: int) -> str:
    return f"{model}-{compact_count(tokens)}-s{seed}"


@dataclass(frozen=True)
class Run:
    """One grid point. `spec` holds exactly the values that decide the run (plain JSON types)."""

    id: str
    model: str
    tokens: int
    seed: int
    spec: dict
    sweep: dict = field(default_factory=dict)  # the swept keys' values of this run ({} outside a sweep)

    @property
    def group(self) -> str:
        """Its sweep group: the grid point (model, requested tokens, seed), i.e. the id without the suffix."""
        return run_id(self.model, self.tokens, self.seed)

    @property
    def spec_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True)


# ----------------------------------------------------------------------------- validation

@functools.lru_cache(maxsize=1)
def _load_schema() -> dict:
    """The parsed schema (cached: the Snakefile's parse time is every dry run's time; read-only)."""
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=None)
def _validator(part: str | None = None):
    """A Draft 2020-12 validator whose `integer` is an int: jsonschema counts 1.0 as an integer,
    which later crashes `range()` and the seeding. Non-finite numbers are caught before this."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    schema = _load_schema()
    if part:
        schema = {**schema["properties"][part], "$defs": schema["$defs"]}
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + f"... ({len(text):,} characters)"


def _where(error) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return path or "(top level)"


def _schema_message(error, prefix: str = "config: ") -> str:
    # oneOf failures are unreadable as they come; name the best sub-error instead.
    from jsonschema.exceptions import best_match

    if error.context:
        error = best_match(error.context)
    where, instance = _where(error), _short(error.instance)
    if error.validator == "pattern":
        if error.schema.get("description"):
            return f"{prefix}{where}: {instance} is not allowed ({error.schema['description']})"
        return f"{prefix}{where}: {instance} is not a count (e.g. 250000, 2.5e5, 250K, 2M)"
    if error.validator == "additionalProperties":
        return f"{prefix}{where}: {error.message.replace('Additional properties are not allowed', 'unknown key')}"
    if error.validator == "enum":
        return f"{prefix}{where}: {instance} is not one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "type":
        return f"{prefix}{where}: {instance} is not of type {error.validator_value!r}"
    message = error.message if len(error.message) <= 2 * MAX_MESSAGE else error.message[:2 * MAX_MESSAGE] + "..."
    return f"{prefix}{where}: {message}"


def _values(value: Any, path: str, seen: dict, stack: set) -> int:
    """How many values `value` holds with YAML aliases expanded (shared nodes counted each time
    they are used); rejects non-finite numbers and recursive aliases on the way."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ScalelabError(f"config: {path or '(top level)'}: {value} is not a finite number")
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in seen:
        return seen[key]
    if key in stack:
        raise ScalelabError(f"config: {path or '(top level)'}: a YAML alias refers to itself")
    stack.add(key)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    total = 1
    for k, v in items:
        total += _values(v, f"{path}.{k}".lstrip(".") if isinstance(value, dict) else f"{path}[{k}]", seen, stack)
        if total > MAX_CONFIG_VALUES:
            raise ScalelabError(f"config: {path or '(top level)'}: more than {MAX_CONFIG_VALUES:,} values once "
                                f"YAML aliases are expanded; write the list out or shorten it")
    stack.discard(key)
    seen[key] = total
    return total


def validate(config: dict) -> dict:
    """Validate against the schema and fill every default (Snakemake's own `validate`)."""
    from jsonschema.exceptions import best_match

    if not isinstance(config, dict):
        raise ScalelabError("config: the file must hold a mapping of keys (data, models, grid, train, ...)")
    _values(config, "", {}, set())
    error = best_match(_validator().iter_errors(config))
    if error is not None:
        raise ScalelabError(_schema_message(error))
    from snakemake.utils import validate as snakemake_validate

    try:
        snakemake_validate(config, str(SCHEMA_PATH), set_default=True)
    except Exception as exc:  # already validated above; this only fills defaults
        raise ScalelabError(f"config: {str(exc).splitlines()[0][:MAX_MESSAGE]}") from None
    _fill_source_defaults(config["data"])
    _check_semantics(config)
    _parse_counts(config)
    return config


def _check_run_settings(settings: dict, where) -> None:
    """What one model's train settings must satisfy together; `where(key)` names the key."""
    if settings["batch_size"] % settings["devices"]:
        raise ScalelabError(f"config: {where('batch_size')}: batch_size {settings['batch_size']} is not divisible "
                            f"by devices ({settings['devices']}), so the batch cannot be split across them")
    if settings["val_tokens"] < settings["context"]:
        raise ScalelabError(f"config: {where('val_tokens')}: val_tokens {settings['val_tokens']:,} is smaller than "
                            f"one context window ({settings['context']} tokens), so no val loss could be measured")


def _parse_counts(config: dict) -> None:
    """Counts written as "250K" or 2.5e5 become ints, once: every later reader gets numbers.
    (Idempotent, so validating a validated config changes nothing.)"""
    grid = config["grid"]
    grid["tokens"] = [parse_count(v, f"grid.tokens[{i}]") for i, v in enumerate(grid["tokens"])]
    if grid.get("isoflop"):
        budgets = grid["isoflop"]["budgets"]
        grid["isoflop"]["budgets"] = [parse_count(v, f"grid.isoflop.budgets[{i}]") for i, v in enumerate(budgets)]
    config["train"]["val_tokens"] = parse_count(config["train"]["val_tokens"], "train.val_tokens")
    for name, settings in config["overrides"].items():
        if "val_tokens" in settings:
            settings["val_tokens"] = parse_count(settings["val_tokens"], f"overrides.{name}.val_tokens")
    if config["eval"]["test_tokens"] is not None:
        config["eval"]["test_tokens"] = parse_count(config["eval"]["test_tokens"], "eval.test_tokens")
    if config["fit"]["predict_flops"]:
        config["fit"]["predict_flops"] = [parse_count(v, f"fit.predict_flops[{i}]")
                                          for i, v in enumerate(config["fit"]["predict_flops"])]


def _fill_source_defaults(data: dict) -> None:
    # Defaults inside oneOf branches would be applied to every branch, so they live here.
    source = data["source"]
    if isinstance(source, dict) and "files" in source:
        data["source"] = {"text_field": "text", "sample_by": "document", **source}
    elif isinstance(source, dict):
        data["source"] = {"name": None, "split": "train", "revision": None, "text_field": "text",
                          "max_documents": None, **source}
    if data["pairs"] is not None:
        data["pairs"] = {"source_field": "source", "target_field": "target", **data["pairs"]}


def _check_semantics(config: dict) -> None:
    models = config["models"]
    for name, shape in models.items():
        if shape["d_model"] % shape["n_head"]:
            raise ScalelabError(
                f"config: models.{name}: d_model {shape['d_model']} is not divisible by n_head {shape['n_head']}"
            )
    grid = config["grid"]
    isoflop_models = (grid.get("isoflop") or {}).get("models") or []
    for key, names in (("grid.models", grid["models"]), ("grid.isoflop.models", isoflop_models)):
        for i, name in enumerate(names):
            if name not in models:
                raise ScalelabError(f"config: {key}[{i}]: unknown model {name!r} (known: {', '.join(models)})")
    for i, value in enumerate(grid["tokens"]):
        parse_count(value, f"grid.tokens[{i}]")
    if grid.get("isoflop"):
        for i, value in enumerate(grid["isoflop"]["budgets"]):
            parse_count(value, f"grid.isoflop.budgets[{i}]")
    if not grid["tokens"] and not grid.get("isoflop"):
        raise ScalelabError("config: grid: no runs (grid.tokens is empty and there is no grid.isoflop)")
    if not grid["models"] and not isoflop_models:
        raise ScalelabError("config: grid.models: empty, and no grid.isoflop.models either: the grid has no runs")
    if grid["models"] and not grid["tokens"] and not grid.get("isoflop"):
        raise ScalelabError("config: grid.tokens: empty: the grid has no runs")
    train_schema = _load_schema()["properties"]["train"]["properties"]
    for name, settings in config["overrides"].items():
        if name not in models:
            raise ScalelabError(f"config: overrides.{name}: unknown model (known: {', '.join(models)})")
        for key in settings:
            if key not in train_schema and key != "sweep":
                raise ScalelabError(f"config: overrides.{name}.{key}: unknown train setting")
            if key in NOT_IDENTITY:
                raise ScalelabError(f"config: overrides.{name}.{key}: set once for the study, in train.{key}")
    for name in models:
        where = f"overrides.{name}" if name in config["overrides"] else "train"
        _check_run_settings(train_settings(config, name), lambda key: f"{where}.{key}")
    if config["eval"]["test_tokens"] is not None:
        parse_count(config["eval"]["test_tokens"], "eval.test_tokens")
    for i, value in enumerate(config["fit"]["predict_flops"] or []):
        parse_count(value, f"fit.predict_flops[{i}]")
    evaluation = config["eval"]
    if evaluation["task"] == "continuation":
        for name in models:
            context = config["overrides"].get(name, {}).get("context", config["train"]["context"])
            if evaluation["prompt_tokens"] + evaluation["max_new_tokens"] > context:
                raise ScalelabError(
                    f"config: eval.prompt_tokens + eval.max_new_tokens ({evaluation['prompt_tokens']} + "
                    f"{evaluation['max_new_tokens']}) exceed model {name}'s context of {context}")
    if evaluation["task"] == "pairs" and not config["data"]["pairs"]:
        raise ScalelabError("config: eval.task: 'pairs' needs data.pairs (source_field/target_field)")
    check_sweeps(config)


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML that refuses duplicate keys (YAML lets the last one win, silently)."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (dict, list)):
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value",
                                                        key_node.start_mark)
            if key in keys:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_short(key)}",
                                                        key_node.start_mark)
            keys.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    """A config file's contents, or one line naming the file and what is wrong with it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ScalelabError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ScalelabError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ScalelabError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a YAML text file") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None)
        raise ScalelabError(f"{path}: not valid YAML{where}{': ' + problem[:MAX_MESSAGE] if problem else ''}") from None


def load(path: str | Path) -> dict:
    return validate(read_yaml(path) or {})


# ----------------------------------------------------------------------------- the grid

def train_settings(config: dict, model: str) -> dict:
    """train.* after the model's overrides, validated again so an override gets the same checks."""
    settings = copy.deepcopy(config["train"])
    settings.update({k: v for k, v in config["overrides"].get(model, {}).items() if k != "sweep"})
    from jsonschema.exceptions import best_match

    error = best_match(_validator("train").iter_errors(settings))
    if error is not None:
        raise ScalelabError(_schema_message(error, f"config: overrides.{model}."))
    settings["val_tokens"] = parse_count(settings["val_tokens"], f"overrides.{model}.val_tokens")
    return settings


# ----------------------------------------------------------------------------- sweeps
#
# grid.sweep (every model) and overrides.<model>.sweep (that model; each key it names replaces
# grid.sweep's values for that key) map train keys to a list of values, or to {times: [...]}:
# factors of the model's own setting (after its overrides). Every combination of the swept values
# is one run at each grid point. A run id gets one `-{key}{value}` part per swept key, keys in
# alphabetical order, the value written by `sweep_value_text`; a study without sweeps keeps its
# ids and specs exactly.

# Keys that decide what a run learns. The other keys of a run's spec decide where it trains
# (accelerator, devices), how fast (compile) or what is measured and when (val_tokens, val_evals,
# checkpoint_every): swept, they would compare nothing, or compare runs measured differently.
SWEEPABLE = ("batch_size", "beta2", "context", "grad_clip", "lr", "min_lr_ratio", "precision", "schedule",
             "warmup_tokens", "weight_decay")
NOT_SWEEPABLE = {
    "accelerator": "it decides where a run trains, not what it learns",
    "devices": "it decides how a run is split across devices, not what it learns",
    "compile": "it decides how fast a run trains, not what it learns",
    "val_tokens": "it decides what the val loss is measured on, so the swept runs would not compare",
    "val_evals": "it decides how often the val loss is measured, not what a run learns",
    "checkpoint_every": "it decides how often a run checkpoints, not what it learns",
}
MAX_SWEEP_RUNS = 10_000  # swept combinations per model and grid point
TIMES_DIGITS = 12  # significant digits of a `times` product: 3e-3 x 3 is 0.009, not 0.009000000000000001


def sweep_value_text(value) -> str:
    """A swept value as its run id writes it: lossless, letters, digits, `.` and `-` only.

    Strings (schedule, precision: closed sets) as they are; integers in decimal; other numbers
    from their shortest round-trip digits, plain when 0.1 <= |x| < 10^4 (`0.1`, `0.95`, `2.5`,
    `10`) and otherwise `{mantissa}e{exponent}` (`3e-3`, `1.5e-3`, `1e-5`, `1.2345e4`). So
    1e-3, 0.001 and '1e-3' are one value with one text, and two values never share a text."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value == 0:
        return "0"
    number = Decimal(repr(float(value))).normalize()
    sign, digits, exponent = number.as_tuple()
    power = len(digits) - 1 + exponent  # value = d.ddd x 10^power
    if -1 <= power <= 3:
        return format(number, "f")
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{power}"


def sweep_suffix(values: dict) -> str:
    """`-{key}{value}` for each swept key, keys in alphabetical order ('' outside a sweep)."""
    return "".join(f"-{key}{sweep_value_text(values[key])}" for key in sorted(values))


def _number(value, where: str) -> float:
    """A finite number; YAML 1.1 reads `1e-3` as a string, so numeric strings count too."""
    if isinstance(value, bool):
        raise ScalelabError(f"config: {where}: expected a number, got {_short(value)}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip()) if isinstance(value, str) else math.nan
        except ValueError:
            raise ScalelabError(f"config: {where}: {_short(value)} is not a number") from None
    if not math.isfinite(number):
        raise ScalelabError(f"config: {where}: {_short(value)} is not a finite number")
    return number


def _sweep_key_schema(key: str, where: str) -> dict:
    train_schema = _load_schema()["properties"]["train"]["properties"]
    if key in NOT_SWEEPABLE:
        raise ScalelabError(f"config: {where}: {key} cannot be swept: {NOT_SWEEPABLE[key]} "
                            f"(sweepable: {', '.join(SWEEPABLE)})")
    if key not in train_schema or key not in SWEEPABLE:
        raise ScalelabError(f"config: {where}: unknown train setting (sweepable: {', '.join(SWEEPABLE)})")
    return train_schema[key]


def _sweep_value(raw, key: str, kind: str, where: str):
    """One listed value, parsed for the key's type and checked against train.<key>'s schema."""
    if kind == "string":
        if not isinstance(raw, str):
            raise ScalelabError(f"config: {where}: expected one of the train.{key} choices, got {_short(raw)}")
        value = raw
    else:
        number = _number(raw, where)
        if number <= 0 and (number < 0 or key in ("lr", "beta2", "batch_size", "context")):
            raise ScalelabError(f"config: {where}: must be positive, got {_short(raw)}")
        if kind == "integer":
            if not number.is_integer():
                raise ScalelabError(f"config: {where}: train.{key} takes whole numbers, got {_short(raw)}")
            value = int(number)
        else:
            value = number
    error = next(iter(_validator("train").iter_errors({key: value})), None)
    if error is not None:
        raise ScalelabError(f"config: {where}: {_short(value)} is not a valid train.{key} ({error.message[:MAX_MESSAGE]})")
    return value


def _sweep_values(spec, key: str, base, where: str, model: str) -> list:
    """The values of one swept key for `model`, whose own setting of it is `base`."""
    kind = _sweep_key_schema(key, where).get("type")
    if isinstance(spec, dict):
        if set(spec) != {"times"}:
            raise ScalelabError(f"config: {where}: expected a list of values or {{times: [factors]}}, got keys "
                                f"{', '.join(map(str, spec))}")
        if kind not in ("number", "integer"):
            raise ScalelabError(f"config: {where}.times: train.{key} is not a number, so it has no multiples")
        factors, where = spec["times"], f"{where}.times"
    else:
        factors = None
    items = factors if factors is not None else spec
    if not isinstance(items, list):
        raise ScalelabError(f"config: {where}: expected a list of values, got {_short(items)}")
    if not items:
        raise ScalelabError(f"config: {where}: the list of values is empty")
    values, first = [], {}
    for i, raw in enumerate(items):
        at = f"{where}[{i}]"
        if factors is not None:
            factor = _number(raw, at)
            if factor <= 0:
                raise ScalelabError(f"config: {at}: a factor must be positive, got {_short(raw)}")
            product = float(f"{base * factor:.{TIMES_DIGITS}g}")
            if kind == "integer" and not product.is_integer():
                raise ScalelabError(f"config: {at}: model {model}'s {key} {base} x {factor:g} = {product:g} is "
                                    f"not a whole number")
            if key == "warmup_tokens" and (base <= 1) != (product <= 1):
                raise ScalelabError(f"config: {at}: model {model}'s warmup_tokens {base} x {factor:g} = {product:g} "
                                    f"crosses 1, where a fraction of D becomes a count of tokens")
            value = _sweep_value(int(product) if kind == "integer" else product, key, kind, at)
        else:
            value = _sweep_value(raw, key, kind, at)
        if value in first:
            raise ScalelabError(f"config: {where}: {_short(items[first[value]])} and {_short(raw)} are the same "
                                f"value ({sweep_value_text(value)}); list each value once")
        first[value] = i
        values.append(value)
    return values


def model_sweep(config: dict, model: str) -> dict[str, tuple[str, list]]:
    """key -> (where it is set, values) swept for `model`, keys in alphabetical order: grid.sweep,
    each key replaced by overrides.<model>.sweep's. {} when the model's runs are not swept."""
    base = train_settings(config, model)
    own = config["overrides"].get(model, {}).get("sweep")
    if own is not None and not isinstance(own, dict):
        raise ScalelabError(f"config: overrides.{model}.sweep: expected a mapping of train settings to lists of "
                            f"values, got {_short(own)}")
    sweep = {}
    for source, entries in (("grid.sweep", config["grid"].get("sweep") or {}),
                            (f"overrides.{model}.sweep", own or {})):
        for key, spec in entries.items():
            where = f"{source}.{key}"
            sweep[key] = (where, _sweep_values(spec, key, base.get(key), where, model))
    return dict(sorted(sweep.items()))


def sweep_combos(config: dict, model: str) -> list[tuple[dict, dict]]:
    """(swept values, train settings) of each run `model` has at one grid point: every combination
    of its swept values, or [({}, its settings)] when nothing is swept."""
    base = train_settings(config, model)
    sweep = model_sweep(config, model)
    if not sweep:
        return [({}, base)]
    if math.prod(len(values) for _, values in sweep.values()) > MAX_SWEEP_RUNS:
        raise ScalelabError(f"config: {next(iter(sweep.values()))[0]}: model {model}'s sweep has more than "
                            f"{MAX_SWEEP_RUNS:,} combinations per grid point")
    combos = []
    for values in itertools.product(*(values for _, values in sweep.values())):
        combo = dict(zip(sweep, values))
        combos.append((combo, {**base, **combo}))
    return combos


def check_sweeps(config: dict) -> None:
    """Every swept value of every model, and each combination's settings together (called at load)."""
    evaluation = config["eval"]
    for model in config["models"]:
        sweep = model_sweep(config, model)
        if not sweep:
            continue
        for combo, settings in sweep_combos(config, model):
            def where(key):
                return sweep[key][0] if key in sweep else f"overrides.{model}.{key}"

            label = ", ".join(f"{k} {sweep_value_text(v)}" for k, v in combo.items())
            _check_run_settings(settings, lambda key: f"{where(key)}: model {model} at {label}")
            if (evaluation["task"] == "continuation"
                    and evaluation["prompt_tokens"] + evaluation["max_new_tokens"] > settings["context"]):
                raise ScalelabError(f"config: {where('context')}: model {model} at {label}: eval.prompt_tokens + "
                                    f"eval.max_new_tokens exceed the context of {settings['context']}")


def sweep_keys(runs) -> list[str]:
    """Every key swept in these runs, in alphabetical order ([] for a study without sweeps)."""
    return sorted({key for run in runs for key in run.sweep})


def spec_settings(settings: dict) -> dict:
    """The train settings that enter a run's spec: none of NOT_IDENTITY, and the cooldown keys only
    under schedule: wsd (wsd.run_settings), so other specs stay as they were."""
    return wsd.run_settings({k: v for k, v in settings.items() if k not in NOT_IDENTITY})


def isoflop_tokens(budget: int, params: int, batch_size: int, context: int) -> int:
    """D = C / (6 N), rounded to whole optimizer steps (at least one)."""
    tokens_per_step = batch_size * context
    steps = max(1, round(budget / (6 * params) / tokens_per_step))
    return steps * tokens_per_step


def expand_grid(config: dict, vocab_size: int | None = None) -> list[Run]:
    """Every run of the study: models x tokens x seeds, plus the IsoFLOP runs, de-duplicated."""
    from .shapes import non_embedding_params

    grid, models = config["grid"], config["models"]
    vocab_size = vocab_size or config["data"]["tokenizer"]["vocab_size"]
    settings = {name: spec_settings(train_settings(config, name)) for name in models}
    # (model, trained tokens, seed) -> [requested tokens, isoflop budget]: two requests that train
    # the same number of whole steps are one run (the first one's id), never two identical runs.
    points: dict[tuple[str, int, int], list] = {}

    def trained(model: str, tokens: int) -> int:
        step = settings[model]["batch_size"] * settings[model]["context"]
        return math.ceil(tokens / step) * step

    for model in grid["models"]:
        for i, value in enumerate(grid["tokens"]):
            tokens = parse_count(value, f"grid.tokens[{i}]")
            for seed in grid["seeds"]:
                points.setdefault((model, trained(model, tokens), seed), [tokens, None])
    if grid.get("isoflop"):
        for i, value in enumerate(grid["isoflop"]["budgets"]):
            budget = parse_count(value, f"grid.isoflop.budgets[{i}]")
            for model in grid["isoflop"].get("models") or grid["models"]:
                params = non_embedding_params(models[model]["n_layer"], models[model]["d_model"])
                tokens = isoflop_tokens(budget, params, settings[model]["batch_size"], settings[model]["context"])
                for seed in grid["seeds"]:
                    points.setdefault((model, trained(model, tokens), seed), [tokens, None])[1] = budget
    # Each grid point, once per combination of the model's swept values (once when none are); a
    # combination that trains the same whole steps for two requests is again one run.
    combos = {name: sweep_combos(config, name) for name in {model for model, _, _ in points}}
    expanded: dict[tuple, list] = {}
    for (model, _, seed), (tokens, budget) in points.items():
        for combo, combo_settings in combos[model]:
            step = combo_settings["batch_size"] * combo_settings["context"]
            key = (model, tuple(sorted(combo.items())), math.ceil(tokens / step) * step, seed)
            entry = expanded.setdefault(key, [tokens, None, combo, combo_settings])
            if budget is not None:
                entry[1] = budget
    fingerprint = data_fingerprint(config)
    runs = []
    for (model, _, _, seed), (tokens, budget, combo, combo_settings) in expanded.items():
        shape = models[model]
        spec = {
            "run": run_id(model, tokens, seed) + sweep_suffix(combo),
            "model": model,
            "n_layer": shape["n_layer"],
            "d_model": shape["d_model"],
            "n_head": shape["n_head"],
            "tokens": tokens,
            "seed": seed,
            "isoflop_budget": budget,
            "data": fingerprint,
            **spec_settings(combo_settings),
        }
        runs.append(Run(spec["run"], model, tokens, seed, spec, dict(combo)))
    check_unique_ids(runs)
    wsd.plan(runs, config)  # WSD runs must be able to branch from their trunks: checked now, one line
    return runs


def check_unique_ids(runs) -> None:
    """Two different runs under one id would share a folder: refused, naming both (lossless ids make
    this unreachable today; the guard keeps the invariant if the id rule ever changes)."""
    seen: dict[str, Run] = {}
    for run in runs:
        other = seen.setdefault(run.id, run)
        if other is not run:
            where = "grid.sweep" if run.sweep or other.sweep else "grid"
            raise ScalelabError(f"config: {where}: two runs would share the id {run.id!r} "
                                f"({json.dumps(other.sweep or other.tokens)} and {json.dumps(run.sweep or run.tokens)})")


def data_settings(config: dict) -> dict:
    """The data section as the tokenize stage sees it (plain JSON types). `allow_repeat` is left
    out: it permits runs longer than the corpus but changes no token, so it decides nothing."""
    return json.loads(json.dumps({k: v for k, v in config["data"].items() if k != "allow_repeat"}))


def data_fingerprint(config: dict) -> str:
    """Hash of the settings that decide the tokens; a changed corpus or tokenizer reruns all."""
    return hashlib.sha256(json.dumps(data_settings(config), sort_keys=True).encode()).hexdigest()[:16]


def source_files(config: dict, base: Path = Path(".")) -> list[Path]:
    """Resolve `data.source.files` globs; a glob that matches nothing is an error."""
    source = config["data"]["source"]
    if not isinstance(source, dict) or "files" not in source:
        return []
    files: list[Path] = []
    for i, pattern in enumerate(source["files"]):
        matches = sorted(glob.glob(str(base / pattern), recursive=True))
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise ScalelabError(f"config: data.source.files[{i}]: {pattern!r} matches no file")
        files.extend(Path(m) for m in matches)
    if sum(f.stat().st_size for f in files) == 0:
        raise ScalelabError(f"config: data.source.files: the corpus is empty ({len(files)} empty file(s))")
    return files


def data_requirements(runs, allow_repeat: bool) -> dict[str, int]:
    """Tokens each split must hold for these runs: the train split every run's D (unless data may
    repeat) and a window of context + 1 tokens; val and test one such window each."""
    runs = list(runs)
    window = max(r.spec["context"] for r in runs) + 1
    train = window if allow_repeat else max(window, max(r.tokens for r in runs))
    return {"train": train, "val": window, "test": window}


def check_splits(required: dict[str, int], split_tokens: dict[str, int], where: str) -> None:
    """The one token-budget check (DAG build, tokenize and train all call it): one line naming
    the setting to change."""
    for split in ("train", "val", "test"):
        need, have = required.get(split, 0), split_tokens.get(split, 0)
        if need <= have:
            continue
        if split == "train":
            fix = ("lower grid.tokens or set data.allow_repeat: true" if need > required.get("val", 0)
                   else "lower train.context")
            raise ScalelabError(f"{where}: the train split has {have:,} tokens but the grid needs {need:,}; "
                                f"add data or {fix}")
        raise ScalelabError(f"{where}: the {split} split has {have:,} tokens but one context window needs "
                            f"{need:,}; raise data.split.{split} or add documents")


def corpus_fingerprint(config: dict, base: Path = Path(".")) -> str:
    """A cheap fingerprint of the corpus files (names, sizes, mtimes), so that changed files
    rerun `tokenize` even when the config did not change. Hub sources are named by the config."""
    source = config["data"]["source"]
    if source == "python-stdlib":
        from .data import stdlib_files

        files = stdlib_files()
    elif "files" in source:
        files = source_files(config, base)
    else:
        return "hub"
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def read_meta(meta_path: str | Path) -> dict | None:
    """results/data/meta.json if it is whole and agrees with the token files beside it, else None
    (missing or damaged: the workflow then retokenizes)."""
    meta_path = Path(meta_path)
    try:
        meta = json.loads(meta_path.read_text())
        itemsize = 2 if meta["dtype"] == "uint16" else 4
        for split in ("train", "val", "test"):
            if (meta_path.parent / f"{split}.bin").stat().st_size != meta["splits"][split]["tokens"] * itemsize:
                return None
        if not isinstance(meta["tokenizer"]["fingerprint"], str) or not isinstance(meta["settings"], dict):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_corpus_budget(config: dict, runs, meta: dict | None) -> None:
    """Once the corpus is tokenized, reject a grid that its splits cannot feed."""
    if meta is None or meta.get("settings") != data_settings(config):
        return  # the data will be (re)tokenized; `tokenize` checks the new splits itself
    split_tokens = {split: meta["splits"][split]["tokens"] for split in ("train", "val", "test")}
    check_splits(data_requirements(runs, config["data"]["allow_repeat"]), split_tokens, "results/data/meta.json")


# ----------------------------------------------------------------------------- `scalelab check`

def add_arguments(parser) -> None:
    parser.add_argument("config", help="a study config (YAML)")


def run(args) -> None:
    config = load(args.config)
    source_files(config, Path(args.config).resolve().parent)
    runs = expand_grid(config)
    print(f"{args.config}: valid, {len(runs)} runs")
    for r in runs:
        budget = f"  isoflop budget {r.spec['isoflop_budget']:.3g}" if r.spec["isoflop_budget"] else ""
        print(f"  {r.id}: {r.model} ({r.spec['n_layer']}x{r.spec['d_model']}), {r.tokens:,} tokens, seed {r.seed}{budget}")
    print(wsd.flops_line(config, runs))


def logger_names(config: dict) -> list[str]:
    """train.logger as a list of names (a string is one name)."""
    names = config["train"]["logger"]
    return [names] if isinstance(names, str) else list(names)


def job_environment(config: dict, runs) -> dict[str, str]:
    """What the workflow's shell commands read from the environment rather than from params: checks
    and logging, which decide nothing about a run, so changing them reruns nothing. (Shell commands
    cannot read a Snakefile's globals when the workflow is used as a module, snakemake#2499.)"""
    return {
        "SCALELAB_REQUIRE": json.dumps(data_requirements(runs, config["data"]["allow_repeat"])),
        "SCALELAB_ALLOW_REPEAT": "--allow-repeat" if config["data"]["allow_repeat"] else "",
        "SCALELAB_LOGGERS": ",".join(logger_names(config)),
        "SCALELAB_STUDY": config["report"]["title"],  # the MLflow experiment, a tag of every run
    }

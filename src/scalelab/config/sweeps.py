"""A model's train settings: train.* after its overrides, and every rule of sweeps.

A new sweep rule goes here; a new train setting goes in the schema (schemas/config.schema.yaml),
with its checks across settings in `check_run_settings`.
"""

from __future__ import annotations

import copy
import itertools
import math
from decimal import Decimal

from .counts import parse_count
from ..errors import ScalelabError
from .schema import MAX_MESSAGE, load_schema, schema_message, short, validator

# train.* keys that decide nothing about a run's numbers: kept out of its spec, so changing them reruns nothing
NOT_IDENTITY = ("logger",)


def train_settings(config: dict, model: str) -> dict:
    """train.* after the model's overrides, validated again so an override gets the same checks."""
    settings = copy.deepcopy(config["train"])
    settings.update({k: v for k, v in config["overrides"].get(model, {}).items() if k != "sweep"})
    from jsonschema.exceptions import best_match

    error = best_match(validator("train").iter_errors(settings))
    if error is not None:
        raise ScalelabError(schema_message(error, f"config: overrides.{model}."))
    settings["val_tokens"] = parse_count(settings["val_tokens"], f"overrides.{model}.val_tokens")
    return settings


def check_run_settings(settings: dict, where) -> None:
    """What one model's train settings must satisfy together; `where(key)` names the key."""
    if settings["batch_size"] % settings["devices"]:
        raise ScalelabError(
            f"config: {where('batch_size')}: batch_size {settings['batch_size']} is not divisible "
            f"by devices ({settings['devices']}), so the batch cannot be split across them"
        )
    if settings["val_tokens"] < settings["context"]:
        raise ScalelabError(
            f"config: {where('val_tokens')}: val_tokens {settings['val_tokens']:,} is smaller than "
            f"one context window ({settings['context']} tokens), so no val loss could be measured"
        )


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
SWEEPABLE = (
    "batch_size",
    "beta2",
    "context",
    "grad_clip",
    "lr",
    "min_lr_ratio",
    "precision",
    "schedule",
    "warmup_tokens",
    "weight_decay",
)
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
        raise ScalelabError(f"config: {where}: expected a number, got {short(value)}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip()) if isinstance(value, str) else math.nan
        except ValueError:
            raise ScalelabError(f"config: {where}: {short(value)} is not a number") from None
    if not math.isfinite(number):
        raise ScalelabError(f"config: {where}: {short(value)} is not a finite number")
    return number


def _sweep_key_schema(key: str, where: str) -> dict:
    train_schema = load_schema()["properties"]["train"]["properties"]
    if key in NOT_SWEEPABLE:
        raise ScalelabError(
            f"config: {where}: {key} cannot be swept: {NOT_SWEEPABLE[key]} (sweepable: {', '.join(SWEEPABLE)})"
        )
    if key not in train_schema or key not in SWEEPABLE:
        raise ScalelabError(f"config: {where}: unknown train setting (sweepable: {', '.join(SWEEPABLE)})")
    return train_schema[key]


def _sweep_value(raw, key: str, kind: str, where: str):
    """One listed value, parsed for the key's type and checked against train.<key>'s schema."""
    if kind == "string":
        if not isinstance(raw, str):
            raise ScalelabError(f"config: {where}: expected one of the train.{key} choices, got {short(raw)}")
        value = raw
    else:
        number = _number(raw, where)
        if number <= 0 and (number < 0 or key in ("lr", "beta2", "batch_size", "context")):
            raise ScalelabError(f"config: {where}: must be positive, got {short(raw)}")
        if kind == "integer":
            if not number.is_integer():
                raise ScalelabError(f"config: {where}: train.{key} takes whole numbers, got {short(raw)}")
            value = int(number)
        else:
            value = number
    error = next(iter(validator("train").iter_errors({key: value})), None)
    if error is not None:
        raise ScalelabError(
            f"config: {where}: {short(value)} is not a valid train.{key} ({error.message[:MAX_MESSAGE]})"
        )
    return value


def _sweep_values(spec, key: str, base, where: str, model: str) -> list:
    """The values of one swept key for `model`, whose own setting of it is `base`."""
    kind = _sweep_key_schema(key, where).get("type")
    if isinstance(spec, dict):
        if set(spec) != {"times"}:
            raise ScalelabError(
                f"config: {where}: expected a list of values or {{times: [factors]}}, got keys "
                f"{', '.join(map(str, spec))}"
            )
        if kind not in ("number", "integer"):
            raise ScalelabError(f"config: {where}.times: train.{key} is not a number, so it has no multiples")
        factors, where = spec["times"], f"{where}.times"
    else:
        factors = None
    items = factors if factors is not None else spec
    if not isinstance(items, list):
        raise ScalelabError(f"config: {where}: expected a list of values, got {short(items)}")
    if not items:
        raise ScalelabError(f"config: {where}: the list of values is empty")
    values, first = [], {}
    for i, raw in enumerate(items):
        at = f"{where}[{i}]"
        if factors is not None:
            factor = _number(raw, at)
            if factor <= 0:
                raise ScalelabError(f"config: {at}: a factor must be positive, got {short(raw)}")
            product = float(f"{base * factor:.{TIMES_DIGITS}g}")
            if kind == "integer" and not product.is_integer():
                raise ScalelabError(
                    f"config: {at}: model {model}'s {key} {base} x {factor:g} = {product:g} is not a whole number"
                )
            if key == "warmup_tokens" and (base <= 1) != (product <= 1):
                raise ScalelabError(
                    f"config: {at}: model {model}'s warmup_tokens {base} x {factor:g} = {product:g} "
                    f"crosses 1, where a fraction of D becomes a count of tokens"
                )
            value = _sweep_value(int(product) if kind == "integer" else product, key, kind, at)
        else:
            value = _sweep_value(raw, key, kind, at)
        if value in first:
            raise ScalelabError(
                f"config: {where}: {short(items[first[value]])} and {short(raw)} are the same "
                f"value ({sweep_value_text(value)}); list each value once"
            )
        first[value] = i
        values.append(value)
    return values


def model_sweep(config: dict, model: str) -> dict[str, tuple[str, list]]:
    """key -> (where it is set, values) swept for `model`, keys in alphabetical order: grid.sweep,
    each key replaced by overrides.<model>.sweep's. {} when the model's runs are not swept."""
    base = train_settings(config, model)
    own = config["overrides"].get(model, {}).get("sweep")
    if own is not None and not isinstance(own, dict):
        raise ScalelabError(
            f"config: overrides.{model}.sweep: expected a mapping of train settings to lists of "
            f"values, got {short(own)}"
        )
    sweep = {}
    for source, entries in (("grid.sweep", config["grid"].get("sweep") or {}), (f"overrides.{model}.sweep", own or {})):
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
        raise ScalelabError(
            f"config: {next(iter(sweep.values()))[0]}: model {model}'s sweep has more than "
            f"{MAX_SWEEP_RUNS:,} combinations per grid point"
        )
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
            check_run_settings(settings, lambda key: f"{where(key)}: model {model} at {label}")
            if (
                evaluation["task"] == "continuation"
                and evaluation["prompt_tokens"] + evaluation["max_new_tokens"] > settings["context"]
            ):
                raise ScalelabError(
                    f"config: {where('context')}: model {model} at {label}: eval.prompt_tokens + "
                    f"eval.max_new_tokens exceed the context of {settings['context']}"
                )

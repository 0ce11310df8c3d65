"""The fit.json contract: `check_fit_json(data, path)` against schemas/fit.schema.yaml.

The schema (JSON Schema written in YAML, shipped as package data) describes what `scalelab fit`
writes; the report checks fit.json with it when reading, the fit stage when writing. A
fit.json that breaks the contract gets one ScalelabError line naming the file and the first
failing key (`approach3.alpha`, `approach2.budgets.0.flops`), never a traceback. Light on
purpose: yaml and jsonschema only, no numpy or pandas.
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ScalelabError

SCHEMA = "fit.schema.yaml"
_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "true/false",
    int: "a number",
    float: "a number",
    type(None): "null",
}


@functools.lru_cache(maxsize=1)
def fit_schema() -> dict:
    """The schema as a dict (read once from the package's schemas folder)."""
    import yaml

    return yaml.safe_load(resources.files("scalelab").joinpath("schemas", SCHEMA).read_text())


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = fit_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _key(parts) -> str:
    return ".".join(str(p) for p in parts)


def _describe(error) -> tuple[str, str]:
    """(dotted key, reason) for one jsonschema error, in words a reader of fit.json follows."""
    where = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next((k for k in error.validator_value if k not in error.instance), "?")
        return _key(where + [missing]), "is missing"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        names = {
            "object": "an object",
            "array": "a list",
            "string": "a string",
            "number": "a number",
            "integer": "an integer",
            "boolean": "true/false",
            "null": "null",
        }
        got = _JSON_TYPES.get(type(error.instance), type(error.instance).__name__)
        return _key(where), f"should be {' or '.join(names.get(w, w) for w in wanted)}, not {got}"
    message = " ".join(str(error.message).split())
    return _key(where), message if len(message) <= 160 else message[:157] + "..."


def _non_finite(value, where=()) -> tuple | None:
    """The path of the first NaN or infinity (fit writes null for those; JSON has no such number)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, (*where, key))
        if found is not None:
            return found
    return None


def _reversed_interval(value, where=()) -> tuple | None:
    """The path of the first interval ([low, high] under a key ending in ci95 or named
    chosen_interval, or holdout's low/high lists) whose low end exceeds its high end."""
    if isinstance(value, dict):
        if isinstance(value.get("low"), list) and isinstance(value.get("high"), list):
            for i, (low, high) in enumerate(zip(value["low"], value["high"])):
                if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
                    return (*where, "low", i)
        for key, item in value.items():
            if (str(key).endswith("ci95") or key == "chosen_interval") and isinstance(item, list) and len(item) == 2:
                low, high = item
                if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
                    return (*where, key)
            found = _reversed_interval(item, (*where, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _reversed_interval(item, (*where, i))
            if found is not None:
                return found
    return None


def check_fit_json(data: Any, path: str | Path = "fit.json") -> None:
    """Raise a one-line ScalelabError naming `path` and the failing key unless `data` keeps the
    fit.json contract (the schema, finite numbers, and holdout lists of one length)."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    if error is not None:
        key, reason = _describe(error)
        raise ScalelabError(f"{path}: {key} {reason}" if key else f"{path}: fit results {reason}")
    bad = _non_finite(data)
    if bad is not None:
        raise ScalelabError(f"{path}: {_key(bad)} is not a finite number (fit.json writes null for NaN)")
    bad = _reversed_interval(data)
    if bad is not None:
        raise ScalelabError(f"{path}: {_key(bad)} is an interval whose low end lies above its high end")
    hold = data.get("holdout")
    if isinstance(hold, dict):
        lengths = {
            k: len(hold[k])
            for k in ("held_out", "predicted", "actual", "rel_error", "low", "high", "inside")
            if k in hold
        }
        if len(set(lengths.values())) != 1:
            shown = ", ".join(f"{k} {n}" for k, n in lengths.items())
            raise ScalelabError(f"{path}: holdout lists should have one length, got {shown}")


def read_fit_json(path: str | Path) -> dict:
    """Read fit.json and check it (one line naming the file on any problem)."""
    from ..files import read_json

    data = read_json(path, "fit results")
    check_fit_json(data, path)
    return data


if __name__ == "__main__":  # python -m scalelab.laws.fitjson results/fit/fit.json
    import sys

    for name in sys.argv[1:]:
        try:
            read_fit_json(name)
        except ScalelabError as exc:
            sys.exit(f"error: {exc}")
        print(f"{name}: ok")

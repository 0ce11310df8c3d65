"""The config schema and its messages: one line naming the key, for every schema error.

The schema (schemas/config.schema.yaml) is the one place where a setting and its default are
declared; `validator` checks a config (or one section of it) against it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

# Package data, so an installed (non-editable) scalelab finds it; workflow/schemas/ links here.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
MAX_MESSAGE = 300  # characters of a config value quoted in an error message


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The parsed schema (cached: the Snakefile's parse time is every dry run's time; read-only)."""
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=None)
def validator(part: str | None = None):
    """A Draft 2020-12 validator whose `integer` is an int: jsonschema counts 1.0 as an integer,
    which later crashes `range()` and the seeding. Non-finite numbers are caught before this."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    schema = load_schema()
    if part:
        schema = {**schema["properties"][part], "$defs": schema["$defs"]}
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + f"... ({len(text):,} characters)"


def _where(error) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return path or "(top level)"


def schema_message(error, prefix: str = "config: ") -> str:
    # oneOf failures are unreadable as they come; name the best sub-error instead.
    from jsonschema.exceptions import best_match

    if error.context:
        error = best_match(error.context)
    where, instance = _where(error), short(error.instance)
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
    message = error.message if len(error.message) <= 2 * MAX_MESSAGE else error.message[: 2 * MAX_MESSAGE] + "..."
    return f"{prefix}{where}: {message}"

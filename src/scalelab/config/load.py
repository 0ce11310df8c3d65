"""The study config: read the YAML file, validate it against the schema, fill the defaults.

`load(path)` gives a validated config with every default filled and every count an int. Bad
input is one line naming the file or key. Used by the Snakefile (at DAG-build time, so it must
stay fast and import no torch) and by `scalelab check`. What a config's settings mean for a run
lives above it: per-model settings and sweeps in `sweeps`, the runs in `grid`, the corpus in `corpus`.
"""

from __future__ import annotations

import glob
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .counts import parse_count
from ..errors import ScalelabError
from .extra_metrics import extra_columns
from .schema import MAX_MESSAGE, SCHEMA_PATH, load_schema, schema_message, short, validator
from .sweeps import NOT_IDENTITY, check_run_settings, check_sweeps, train_settings

MAX_CONFIG_VALUES = 100_000  # values in the config once YAML aliases are expanded


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
            raise ScalelabError(
                f"config: {path or '(top level)'}: more than {MAX_CONFIG_VALUES:,} values once "
                f"YAML aliases are expanded; write the list out or shorten it"
            )
    stack.discard(key)
    seen[key] = total
    return total


def validate(config: dict) -> dict:
    """Validate against the schema and fill every default (Snakemake's own `validate`)."""
    from jsonschema.exceptions import best_match

    if not isinstance(config, dict):
        raise ScalelabError("config: the file must hold a mapping of keys (data, models, grid, train, ...)")
    _values(config, "", {}, set())
    _floats_as_written(config)
    error = best_match(validator().iter_errors(config))
    if error is not None:
        raise ScalelabError(schema_message(error))
    from snakemake.utils import validate as snakemake_validate

    try:
        snakemake_validate(config, str(SCHEMA_PATH), set_default=True)
    except Exception as exc:  # already validated above; this only fills defaults
        raise ScalelabError(f"config: {str(exc).splitlines()[0][:MAX_MESSAGE]}") from None
    _fill_source_defaults(config["data"])
    _check_semantics(config)
    _parse_counts(config)
    return config


_FLOAT_TEXT = re.compile(r"^\s*[+-]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")


def _floats_as_written(config: dict) -> None:
    """A float setting written `3e-3` is a float, as in a sweep: YAML 1.1 (PyYAML, and so
    Snakemake's --configfile) reads it as a string. Only keys whose schema type is exactly
    number change, and only text that is a plain decimal number; anything else meets the schema
    as written. (A config that holds such text was refused before, so no run id changes.)"""
    properties = load_schema()["properties"]

    def convert(section: dict, schema: dict) -> None:
        for key, value in section.items():
            spec = (schema.get("properties") or {}).get(key)
            if not isinstance(spec, dict):
                continue
            if spec.get("type") == "number" and isinstance(value, str) and _FLOAT_TEXT.match(value):
                section[key] = float(value.replace("_", ""))
            elif spec.get("type") == "object" and isinstance(value, dict):
                convert(value, spec)

    for name, schema in properties.items():
        if isinstance(config.get(name), dict):
            convert(config[name], schema)
    for settings in (config.get("overrides") or {}).values():  # an override is checked as a train setting
        if isinstance(settings, dict):
            convert(settings, properties["train"])


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
    for i, item in enumerate(grid.get("extra") or []):
        item["tokens"] = parse_count(item["tokens"], f"grid.extra[{i}].tokens")
    suggest = config["fit"].get("suggest") or {}
    for key in ("target_flops", "budget_flops"):
        if suggest.get(key) is not None:
            suggest[key] = parse_count(suggest[key], f"fit.suggest.{key}")
    if suggest.get("sizes"):
        suggest["sizes"] = [parse_count(v, f"fit.suggest.sizes[{i}]") for i, v in enumerate(suggest["sizes"])]
    if config["fit"]["predict_flops"]:
        config["fit"]["predict_flops"] = [
            parse_count(v, f"fit.predict_flops[{i}]") for i, v in enumerate(config["fit"]["predict_flops"])
        ]


def _fill_source_defaults(data: dict) -> None:
    # Defaults inside oneOf branches would be applied to every branch, so they live here.
    source = data["source"]
    if isinstance(source, dict) and "files" in source:
        data["source"] = {"text_field": "text", "sample_by": "document", **source}
    elif isinstance(source, dict):
        data["source"] = {
            "name": None,
            "split": "train",
            "revision": None,
            "text_field": "text",
            "max_documents": None,
            **source,
        }
    if data["pairs"] is not None:
        data["pairs"] = {"source_field": "source", "target_field": "target", **data["pairs"]}


# metrics.csv's own columns, which an `eval.extra` CSV may not repeat (scalelab.aggregate.FIRST_COLUMNS)
RESERVED_COLUMNS = (
    "status",
    "model",
    "params",
    "params_total",
    "tokens",
    "flops",
    "flops_total",
    "seed",
    "train_loss",
    "val_loss",
    "test_loss",
    "test_ppl",
    "test_bpb",
    "bleu",
    "rouge1",
    "rouge2",
    "rougeL",
)


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
    for i, item in enumerate(grid.get("extra") or []):
        if item["model"] not in models:
            raise ScalelabError(
                f"config: grid.extra[{i}].model: unknown model {item['model']!r} (known: {', '.join(models)})"
            )
        parse_count(item["tokens"], f"grid.extra[{i}].tokens")
    if grid.get("isoflop"):
        for i, value in enumerate(grid["isoflop"]["budgets"]):
            parse_count(value, f"grid.isoflop.budgets[{i}]")
    if not grid["tokens"] and not grid.get("isoflop") and not grid.get("extra"):
        raise ScalelabError("config: grid: no runs (grid.tokens is empty and there is no grid.isoflop)")
    if not grid["models"] and not isoflop_models:
        raise ScalelabError("config: grid.models: empty, and no grid.isoflop.models either: the grid has no runs")
    if grid["models"] and not grid["tokens"] and not grid.get("isoflop"):
        raise ScalelabError("config: grid.tokens: empty: the grid has no runs")
    train_schema = load_schema()["properties"]["train"]["properties"]
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
        check_run_settings(train_settings(config, name), lambda key: f"{where}.{key}")
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
                    f"{evaluation['max_new_tokens']}) exceed model {name}'s context of {context}"
                )
    extra_columns(evaluation.get("extra"), reserved=RESERVED_COLUMNS)
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
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                )
            if key in keys:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {short(key)}", key_node.start_mark)
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


STUDY_OUTPUTS = ("results", "logs", ".snakemake")  # a study's own folders: never read as corpus


def study_output(path: Path, base: Path, studies: dict | None = None) -> bool:
    """Whether `path` lies in a study's own outputs: under `base`'s results/, logs/ or .snakemake/
    (compared by real path, so a results/ that links to a scratch disk counts too), or in a folder
    below `base` that is itself a study (holds .snakemake/, results/ or a config.yaml). A glob such
    as `**/*.txt` would otherwise feed the models their own reports, and each run would change the
    corpus. `studies`: a cache of that answer per folder."""
    real, base = Path(path).resolve(), Path(base)
    for name in STUDY_OUTPUTS:
        if real.is_relative_to((base / name).resolve()):
            return True
    try:
        relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(base))
    except ValueError:
        return False
    if relative.parts and relative.parts[0] in STUDY_OUTPUTS:
        return True
    folder = Path(os.path.abspath(base))
    for part in relative.parts[:-1]:
        folder = folder / part
        if studies is None or folder not in studies:
            is_study = any((folder / marker).exists() for marker in (*STUDY_OUTPUTS, "config.yaml"))
            if studies is None:
                if is_study:
                    return True
                continue
            studies[folder] = is_study
        if studies[folder]:
            return True
    return False


def source_files(config: dict, base: Path = Path(".")) -> list[Path]:
    """Resolve `data.source.files` globs, without the study's own outputs (STUDY_OUTPUTS); a glob that
    matches nothing, or only those, is an error."""
    source = config["data"]["source"]
    if not isinstance(source, dict) or "files" not in source:
        from ..data.hfdisk import check_folder

        check_folder(source)  # a local hf folder: a saved dataset or data files, else refused now
        return []
    files: list[Path] = []
    studies: dict = {}
    for i, pattern in enumerate(source["files"]):
        matches = sorted(glob.glob(str(base / pattern), recursive=True))
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise ScalelabError(f"config: data.source.files[{i}]: {pattern!r} matches no file")
        corpus = [m for m in matches if not study_output(Path(m), base, studies)]
        if not corpus:
            raise ScalelabError(
                f"config: data.source.files[{i}]: {pattern!r} matches only the study's own outputs "
                f"({', '.join(STUDY_OUTPUTS)}, or another study's folder), which are never corpus; "
                "point it at the corpus"
            )
        files.extend(Path(m) for m in corpus)
    if sum(f.stat().st_size for f in files) == 0:
        raise ScalelabError(f"config: data.source.files: the corpus is empty ({len(files)} empty file(s))")
    return files

"""The command line of `scalelab fit CSV --out DIR [--spec JSON] [flags]`.

Every setting has its one default, in `scalelab.config.stage_settings.FitSettings`: the --spec JSON is read
into FitSettings, and each flag given overrides it (a setting flag's argparse default is None,
"not given"). Then the fit runs (scalelab.fit.pipeline) and its outputs are written
(scalelab.fit.outputs). Columns (--params-col and the like) are flags only, not settings.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields, replace

from ..errors import ScalelabError
from ..files import check_out_dir, loads_json
from ..config.stage_settings import FIT_CHOICES, MAX_BOOTSTRAP, MAX_GRID_POINTS, FitSettings, check_fit_setting
from ..laws.law import FORMS
from .inputs import LOSS_RANGE, read_metrics
from .outputs import write_outputs
from .pipeline import fit_all


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


# Flags that set a FitSettings field: (flag, field). Their argparse default is None ("not given"):
# the default lives in FitSettings alone, and a flag given overrides the --spec value.
SETTING_FLAGS = (
    ("--loss-col", "target"),
    ("--bootstrap", "bootstrap"),
    ("--seed", "seed"),
    ("--predict-flops", "predict_flops"),
    ("--budgets", "budgets"),
    ("--holdout", "holdout"),
    ("--select", "select"),
    ("--select-best-by", "sweep_keys"),
    ("--workers", "workers"),
    ("--grid-points", "grid_points"),
    ("--forms", "forms"),
    ("--form", "form"),
    ("--allow-any-loss", "allow_any_loss"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = FitSettings()
    parser.add_argument("metrics", help="metrics CSV (one row per run)")
    parser.add_argument("--out", required=True, help="output folder for fit.json, *.csv and fit.txt")
    parser.add_argument(
        "--spec",
        metavar="JSON",
        help="fit settings as a JSON object with any of the keys "
        f"{', '.join(f.name for f in fields(FitSettings))}; flags given as well override it",
    )
    parser.add_argument("--loss-col", help=f"target column (default: {d.target}, else loss)")
    parser.add_argument(
        "--params-col", help="model size N (default: params, or params_total when the spec says params: total)"
    )
    parser.add_argument("--tokens-col", default="tokens", help="training tokens D (default: tokens)")
    parser.add_argument(
        "--flops-col",
        help="compute C (default: flops_<x> for --params-col params_<x>, else flops, else 6*params*tokens)",
    )
    parser.add_argument(
        "--bootstrap", type=int, help=f"bootstrap resamples (default: {d.bootstrap}; 0: none; at most {MAX_BOOTSTRAP})"
    )
    parser.add_argument("--seed", type=int, help=f"seed of the bootstrap resamples (default: {d.seed})")
    parser.add_argument(
        "--predict-flops",
        type=_positive_number,
        nargs="+",
        metavar="C",
        help="budgets for the compute-optimal allocation and the hyperparameter recommendation, "
        "e.g. 1e19 (default: 10x and 100x the largest run)",
    )
    parser.add_argument(
        "--budgets",
        type=_positive_number,
        nargs="+",
        metavar="C",
        help="IsoFLOP budgets to group runs by when the CSV has no isoflop_budget column",
    )
    _add_choice_arguments(parser, d)
    _add_metric_arguments(parser)
    parser.add_argument(
        "--grid-points",
        type=int,
        help=f"start values per parameter; the grid has this^5 starts (default: {d.grid_points}, "
        f"at most {MAX_GRID_POINTS})",
    )


def _add_choice_arguments(parser: argparse.ArgumentParser, d: FitSettings) -> None:
    """Which runs and forms are fitted, and how."""
    parser.add_argument(
        "--holdout",
        choices=FIT_CHOICES["holdout"],
        help=f"held-out check: refit without the top compute group, or skip it (default: {d.holdout})",
    )
    parser.add_argument(
        "--select",
        choices=FIT_CHOICES["select"],
        help=f"fit the best run of each sweep or every run (default: {d.select})",
    )
    parser.add_argument(
        "--select-best-by",
        nargs="+",
        metavar="COLUMN",
        help="swept hyperparameter columns (e.g. lr): without a best_in_sweep column, keep the "
        "lowest-loss run per (params, tokens, seed); and fit the hyperparameters' laws",
    )
    parser.add_argument(
        "--data-meta",
        metavar="META_JSON",
        help="the corpus's meta.json (results/data/meta.json): without a unique_tokens column, each "
        "run's unique tokens are then min(tokens, the train split's tokens), so that the "
        "data-constrained form can be fitted to runs that repeat their data",
    )
    parser.add_argument("--workers", type=int, help="processes (default: CPU count)")
    parser.add_argument(
        "--forms", nargs="+", metavar="FORM", help=f"law forms to fit (default: all of {', '.join(FORMS)})"
    )
    parser.add_argument(
        "--form",
        help="the form for predictions: auto (the best at predicting runs left out of "
        "the fit) or a form's name (default: auto)",
    )
    parser.add_argument(
        "--allow-any-loss",
        action="store_const",
        const=True,
        help=f"fit losses outside the plausible range {LOSS_RANGE[0]:g}..{LOSS_RANGE[1]:g} too",
    )


def _add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    """The laws of the evaluation metrics, beside the loss law."""
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="COL",
        default=[],
        dest="metrics_cols",
        help="evaluation metric columns to fit a law to each, beside the loss law (e.g. test_bpb "
        "bleu rougeL, or task accuracies): fit.json's `metrics`, metrics.csv",
    )
    parser.add_argument(
        "--metric-spec",
        metavar="JSON",
        help='facts of the metrics, e.g. {"arc": {"higher_is_better": true, "chance": 0.25, '
        '"ceiling": null, "via": "arc_loss"}} (via: a per-task loss column for the two-step method)',
    )


def settings_from_args(args: argparse.Namespace) -> FitSettings:
    """FitSettings defaults, then --spec, then the flags given; errors name the key or flag."""
    settings = FitSettings()
    if args.spec is not None:
        settings = FitSettings.from_dict(loads_json(args.spec, "--spec"), where="--spec")
    given = {}
    for flag, name in SETTING_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            given[name] = check_fit_setting(name, value, flag)
    return replace(settings, **given)


def with_unique_tokens(df, data_meta: str, tokens_col: str):
    """df with `unique_tokens` = min(tokens, the train split's tokens): every run of a study draws
    from the one train split, so a run longer than it repeats data (Muennighoff et al.'s U)."""
    import numpy as np
    import pandas as pd

    from ..files import read_json

    meta = read_json(data_meta)
    try:
        train_tokens = float(meta["splits"]["train"]["tokens"])
    except (KeyError, TypeError, ValueError):
        raise ScalelabError(f"--data-meta {data_meta}: no splits.train.tokens (not a data meta.json)") from None
    if not (math.isfinite(train_tokens) and train_tokens > 0):
        raise ScalelabError(f"--data-meta {data_meta}: splits.train.tokens is {train_tokens:g}, not a positive count")
    if tokens_col not in df.columns:
        return df  # read_metrics' caller names the missing column
    tokens = pd.to_numeric(df[tokens_col], errors="coerce").to_numpy(float)
    return df.assign(unique_tokens=np.minimum(tokens, train_tokens))


def run(args: argparse.Namespace) -> None:
    settings = settings_from_args(args)
    out = check_out_dir(args.out)
    df = read_metrics(args.metrics)
    if args.data_meta and "unique_tokens" not in df.columns:
        df = with_unique_tokens(df, args.data_meta, args.tokens_col)
    fit = fit_all(
        df,
        settings,
        loss_col=args.loss_col,
        params_col=args.params_col,
        tokens_col=args.tokens_col,
        flops_col=args.flops_col,
        source=str(args.metrics),
        metrics=args.metrics_cols,
        metric_spec=loads_json(args.metric_spec, "--metric-spec") if args.metric_spec else None,
        progress=lambda message: print(f"scalelab fit: {message}", flush=True),
    )
    try:
        write_outputs(fit, out)
    except OSError as exc:
        raise ScalelabError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    chosen = fit.result["chosen_form"]
    if chosen:
        section = fit.result["forms"][chosen]
        shown = ", ".join(f"{k} {v:.4g}" for k, v in section["params"].items())
        print(f"scalelab fit: {chosen} form: {shown} ({fit.result['n_points']} points)")
        for warning in fit.result.get("warnings", []):
            print(f"scalelab fit: warning: {warning}")
    else:
        print(
            f"scalelab fit: no law form fitted: {fit.result['chosen_form_why']}; "
            f"Approach 3: {fit.result.get('approach3_why', 'fitted')}"
        )
    for name, entry in (fit.result.get("metrics") or {}).items():
        print(f"scalelab fit: metric {name}: {entry['verdict']}")
    print(f"scalelab fit: wrote {out}/fit.json")

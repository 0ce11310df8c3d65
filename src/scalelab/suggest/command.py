"""The command line: `scalelab suggest METRICS_CSV --fit FIT_DIR --target-flops C --budget-flops B
--out DIR [--max-runs K] [--sizes N ...] [--spec JSON]`.

Every input is checked before any work: the numbers, that the fit folder is the fit of this CSV (its
row fingerprint) and has bootstrap resamples, and that the target lies past the largest run.
Then the design runs (scalelab.suggest.design) and DIR/suggestions.csv, DIR/suggest.txt and
DIR/suggest.json are written atomically; with the study's shapes in --spec, DIR/snippet.yaml too.
"""

from __future__ import annotations

import argparse
import math


from ..errors import ScalelabError
from ..files import check_out_dir, loads_json
from ..config.stage_settings import SuggestSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SuggestSettings()
    parser.add_argument("metrics", metavar="METRICS_CSV", help="metrics CSV (the one `scalelab fit` read)")
    parser.add_argument("--fit", required=True, metavar="FIT_DIR", help="the folder `scalelab fit --out` wrote for it")
    parser.add_argument(
        "--target-flops", metavar="C", help="the compute budget whose N_opt to pin down (default: 100x the largest run)"
    )
    parser.add_argument(
        "--budget-flops",
        metavar="B",
        help="FLOPs the new runs may cost together (default: the FLOPs the study has spent)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--max-runs", metavar="K", help=f"at most this many new runs (default: {d.max_runs})")
    parser.add_argument("--sizes", nargs="+", metavar="N", help="more candidate model sizes (parameters)")
    parser.add_argument(
        "--frontier-band",
        metavar="F",
        help="at least half the FLOPs go to runs whose N is within this factor of the compute-optimal "
        f"N for their own FLOPs (default: {d.frontier_band:g})",
    )
    parser.add_argument(
        "--spec",
        metavar="JSON",
        help="settings as a JSON object: target_flops, budget_flops, max_runs, sizes, cooldown "
        "(WSD: runs of a size share a trunk), models and tokens_per_step (the study's shapes and "
        "step, for the YAML snippet), allow_repeat (no --data-meta bound); flags given override it",
    )
    _study_arguments(parser)
    parser.add_argument(
        "--or-explain",
        action="store_true",
        help="when the fit cannot support a design (no law, no bootstrap resamples), write the "
        "outputs with the reason and exit 0 instead of failing (the workflow's rule uses this)",
    )


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's own files (the corpus bound, the config's shapes, predicted endpoints) and --metric."""
    parser.add_argument(
        "--data-meta",
        metavar="META_JSON",
        help="the corpus's meta.json (results/data/meta.json): new runs then train at most its train "
        "split's tokens, as a config without data.allow_repeat requires",
    )
    parser.add_argument(
        "--config",
        metavar="CONFIG_YAML",
        help="the study's config, for its model shapes, step and WSD cooldown (default: config/config.yaml "
        "or config.yaml beside the results folder holding METRICS_CSV; not needed with models in --spec)",
    )
    parser.add_argument(
        "--ideal-sizes",
        action="store_true",
        help="design without the study's shapes: sizes as real numbers, no snippet (a CSV from elsewhere)",
    )
    parser.add_argument(
        "--metric",
        metavar="COL",
        help="narrow this evaluation metric's interval at the target budget instead of N_opt's "
        "(a metric with a law in the fit: scalelab fit --metrics)",
    )
    parser.add_argument(
        "--curves",
        metavar="CURVES_JSON",
        help="WSD with predicted endpoints (config grid.trained_cooldowns): the curves.json of `scalelab curves`; "
        "a new D of a size the study ran is then priced at its trunk extension alone and counted as one "
        "observation with the chosen curve law's held-out error",
    )


def _number(text, flag) -> float:
    from ..config.stage_settings import count_value

    value = count_value(text)
    if not math.isfinite(value):
        raise ScalelabError(f"{flag}: not a number: {text!r}")
    return value


def settings_from_args(args) -> SuggestSettings:
    values = {}
    if args.spec is not None:
        spec = loads_json(args.spec, "--spec")
        if not isinstance(spec, dict):
            raise ScalelabError(f"--spec: expected a JSON object of suggest settings, got {type(spec).__name__}")
        values.update(spec)
    if args.target_flops is not None:
        values["target_flops"] = _number(args.target_flops, "--target-flops")
    if args.budget_flops is not None:
        values["budget_flops"] = _number(args.budget_flops, "--budget-flops")
    if args.max_runs is not None:
        try:
            values["max_runs"] = int(args.max_runs)
        except ValueError:
            raise ScalelabError(f"--max-runs: expected an integer, got {args.max_runs!r}") from None
    if args.frontier_band is not None:
        values["frontier_band"] = _number(args.frontier_band, "--frontier-band")
    if args.sizes is not None:
        values["sizes"] = [_number(text, "--sizes") for text in args.sizes]
    if not getattr(args, "ideal_sizes", False):
        from .study_files import find_meta, study_values

        values, config_path = study_values(values, args.metrics, getattr(args, "config", None))
        if config_path is not None and args.data_meta is None:
            args.data_meta = find_meta(args.metrics)
    if args.data_meta and not values.get("allow_repeat"):
        from ..files import read_json

        meta = read_json(args.data_meta)
        try:
            values["max_tokens"] = int(meta["splits"]["train"]["tokens"])
        except (KeyError, TypeError, ValueError):
            raise ScalelabError(
                f"--data-meta {args.data_meta}: no splits.train.tokens (not a data meta.json)"
            ) from None
    return SuggestSettings.from_dict(values, "--spec" if args.spec is not None else "suggest")


def curves_sd(path, settings: SuggestSettings) -> float | None:
    """The chosen curve law's sd of a predicted final log loss (its pooled held-out rms log error), for
    --curves; None without it. A study without a WSD cooldown cannot have predicted endpoints."""
    if not path:
        return None
    if settings.cooldown is None:
        raise ScalelabError("--curves: predicted endpoints need a WSD study (a cooldown in --spec or the config)")
    from ..files import read_json

    data = read_json(path, "curves.json")  # read as a file: suggest and curves are independent packages
    try:
        chosen = data["chosen"]
        sd = data["laws"][chosen]["heldout"]["rms_log_error"]
        if sd is None:  # no held-out check was possible: the largest residual sd, as Curves.predict falls back to
            sd = max((size["fits"][chosen]["residual_sd"] for size in data["sizes"].values()), default=None)
    except (KeyError, TypeError):
        raise ScalelabError(f"--curves {path}: not a curves.json written by scalelab curves") from None
    if not isinstance(sd, (int, float)):
        raise ScalelabError(f"--curves {path}: the {chosen} law has no held-out error to price predicted endpoints by")
    return float(sd)


def run(args: argparse.Namespace) -> None:
    from .ensemble import NoDesign
    from .outputs import write_outputs, write_unavailable
    from .study import plan

    settings = settings_from_args(args)
    out = check_out_dir(args.out)
    if args.metric:
        from .metric import run_metric

        return run_metric(args, settings, out)
    try:
        result = plan(args.metrics, args.fit, settings, curves_sd(args.curves, settings))
    except NoDesign as exc:
        if not args.or_explain:
            raise
        write_unavailable(out, str(exc))
        print(f"scalelab suggest: no design: {exc}")
        return
    write_outputs(result, out)
    table = result["table"]
    if len(table):
        first = table.iloc[0]
        print(
            f"scalelab suggest: {len(table)} runs, {result['design'].cost:.3g} FLOPs; 95 % width of log N_opt "
            f"{result['design'].width_now:.3g} now, {table['expected_width_after'].iloc[-1]:.3g} expected; "
            f"first N {first['params']:.4g}, D {first['tokens']:.4g}"
        )
    else:
        print(f"scalelab suggest: no runs suggested: {result['design'].why_none}")
    print(f"scalelab suggest: wrote {out}/suggestions.csv")

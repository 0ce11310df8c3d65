"""`scalelab report` on the command line: the input and output paths as flags, the settings as
one JSON object (`--spec`). Light: the drawing code is imported only when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .settings import ReportSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics", type=Path, default=Path("results/metrics.csv"), help="metrics CSV (one row per run)"
    )
    parser.add_argument("--fit", type=Path, default=Path("results/fit/fit.json"), help="fit.json from `scalelab fit`")
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="folder of run folders with curve.csv")
    parser.add_argument(
        "--data-meta",
        type=Path,
        default=Path("results/data/meta.json"),
        help="corpus and tokenizer description (optional: the report says when it is absent)",
    )
    parser.add_argument(
        "--suggest",
        type=Path,
        default=None,
        help="suggest.json from `scalelab suggest` for the What to run next section (optional)",
    )
    parser.add_argument(
        "--curves",
        type=Path,
        default=None,
        help="curves.json from `scalelab curves` for the curve laws' forecast figure (optional)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/report"), help="output folder")
    parser.add_argument(
        "--settings",
        default=None,
        metavar="JSON",
        help="the study's resolved settings as a JSON object (scalelab.resolved.study_settings; "
        "the workflow passes them), shown as the Study settings table",
    )
    parser.add_argument(
        "--trunk-segments",
        default=None,
        metavar="JSON",
        help="WSD: a JSON object run -> the info file of the trunk segment charged to it "
        "(results/trunks/<family>/step<k>.json; the workflow passes it), for the runs' trunk share "
        "of wall time",
    )
    parser.add_argument(
        "--spec",
        default=None,
        metavar="JSON",
        help='report settings as a JSON object, e.g. \'{"title": "my study"}\' '
        f"(default: {ReportSettings().to_spec()}; config: report)",
    )


def run(args: argparse.Namespace) -> None:
    from .build import build_report

    import json

    from ..errors import ScalelabError

    settings = ReportSettings.from_spec(args.spec)
    objects = {}
    for flag, text in (("--settings", args.settings), ("--trunk-segments", args.trunk_segments)):
        if text is None:
            continue
        try:
            objects[flag] = json.loads(text)
        except ValueError as exc:
            raise ScalelabError(f"{flag}: not valid JSON ({exc})") from None
        if not isinstance(objects[flag], dict):
            raise ScalelabError(f"{flag}: expected a JSON object")
    summary = build_report(
        args.metrics,
        args.fit,
        args.runs,
        args.data_meta,
        args.out,
        settings,
        args.suggest,
        objects.get("--settings"),
        objects.get("--trunk-segments"),
        args.curves,
    )
    print(summary, end="", flush=True)

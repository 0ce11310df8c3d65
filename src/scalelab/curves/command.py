"""`scalelab curves STUDY_DIR --out DIR`: fit the schedule-aware laws to a study's curves, choose one
by its held-out predictions, write curves.json and curves.txt, and with --predict predictions.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import ScalelabError
from ..files import atomic_path, write_json, write_text
from .data import TARGETS
from .forecast import grid_forecast, law_curves
from .inputs import by_model, fit_target, read_trajectories, study_config, study_specs
from .laws import LAWS
from .model import Curves, choose, fit_size, size_record


def fit_study(
    study_dir: Path,
    use=None,
    config_path=None,
    train_rows: bool = False,
    checks: bool = True,
    trunk_checkpoints: bool = True,
    specs: dict | None = None,
    target: str | None = None,
) -> tuple[dict, dict]:
    """(curves.json's content, the study's specs by run id); `specs` (run id -> spec, as the
    workflow passes them) and `target` instead of reading them from the config file."""
    if specs is None:
        config = study_config(study_dir, config_path)
        specs, target = study_specs(config), fit_target(config)
    target = fit_target({"fit": {"target": target or "val_loss"}})
    kind = TARGETS[target]
    used, trajectories = read_trajectories(Path(study_dir) / "results", specs, use, trunk_checkpoints)
    groups = {m: ts for m, ts in by_model(trajectories).items() if any(t.is_run for t in ts)}
    per_size = {model: fit_size(ts, kind, train_rows, checks) for model, ts in sorted(groups.items())}
    chosen, why, pooled = choose(per_size)
    data = {
        "target": target,
        "train_rows": train_rows,
        "runs_used": used,
        "chosen": chosen,
        "why": why,
        "laws": {
            name: {"reference": LAWS[name].reference, "parameters": list(LAWS[name].params), "heldout": pooled[name]}
            for name in LAWS
        },
        "sizes": {model: size_record(per_size[model], groups[model], kind) for model in per_size},
    }
    curves = Curves(data)
    data["grid"] = grid_forecast(curves, specs, Path(study_dir) / "results", used)
    data["law_curves"] = law_curves(curves, specs)
    return data, specs


def predictions(curves: Curves, specs: dict, names: list[str]) -> pd.DataFrame:
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ScalelabError(f"--predict: {unknown[0]} is not a run of the study's config")
    rows = []
    for name in names:
        if specs[name]["model"] in curves.data["sizes"]:
            rows.append(curves.predict(specs[name]))
        else:  # a size with no finished curve: said, not guessed
            rows.append({"run": name, "law": curves.chosen, "note": f"no curve law for model {specs[name]['model']}"})
    return pd.DataFrame(rows, columns=["run", "loss", "low", "high", "law", "note", "param_sd"])


def text_summary(data: dict) -> str:
    lines = [
        f"curve laws fitted to {data['target']} of {len(data['runs_used'])} run(s)",
        f"chosen: {data['chosen']} ({data['why']})",
        "",
    ]
    for name, law in data["laws"].items():
        h = law["heldout"]
        figures = (
            "no held-out check"
            if not h["n"]
            else (
                f"held-out mean |rel err| {h['mean_abs_rel_error']:.4f}, max {h['max_abs_rel_error']:.4f} over {h['n']}"
            )
        )
        lines.append(f"{name} ({law['reference']}): {figures}")
    for model, size in data["sizes"].items():
        lines.append(
            f"\nmodel {model}: fitted from step {size['first_step']}, {len(size['trajectories'])} trajectories"
        )
        for name, fit in size["fits"].items():
            params = ", ".join(
                f"{p}={v['value']:.4g} [{v['low']:.3g}, {v['high']:.3g}]" + (" (on its bound)" if v["at_bound"] else "")
                for p, v in fit["parameters"].items()
            )
            h = fit["heldout"]
            err = "" if not h["n"] else f"; held-out mean |rel err| {h['mean_abs_rel_error']:.4f} ({h['n']})"
            lines.append(f"  {name}: {params}{err}")
    return "\n".join(lines) + "\n"


def add_arguments(parser) -> None:
    parser.add_argument("study", type=Path, help="the study folder (config/config.yaml and results/)")
    parser.add_argument("--out", required=True, type=Path, help="where curves.json, curves.txt, predictions.csv go")
    parser.add_argument(
        "--use", nargs="+", default=None, metavar="RUN", help="fit these runs' curves (default: every finished run)"
    )
    parser.add_argument(
        "--predict", nargs="+", default=None, metavar="RUN", help="runs of the study's config to predict"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="the study's config (default STUDY/config/config.yaml)"
    )
    parser.add_argument(
        "--specs",
        default=None,
        metavar="JSON",
        help="the runs' specs as a JSON object, run id -> spec (the workflow passes them) instead of --config",
    )
    parser.add_argument("--target", default=None, help="with --specs: the fit target (default val_loss)")
    parser.add_argument(
        "--train-rows", action="store_true", help="also fit the train rows, tied to val by a fitted offset"
    )
    parser.add_argument(
        "--no-trunk-checkpoints",
        action="store_true",
        help="take the trunk rows from the runs' curves only (reading the checkpoints needs torch)",
    )


def run(args) -> None:
    if not Path(args.study).is_dir():
        raise ScalelabError(f"{args.study}: not a study folder")
    specs = None
    if args.specs is not None:
        from ..files import loads_json

        specs = loads_json(args.specs, "--specs")
        if not isinstance(specs, dict) or not all(isinstance(v, dict) for v in specs.values()):
            raise ScalelabError("--specs: expected the runs' specs as a JSON object, run id -> spec")
    data, specs = fit_study(
        args.study,
        args.use,
        args.config,
        args.train_rows,
        trunk_checkpoints=not args.no_trunk_checkpoints,
        specs=specs,
        target=args.target,
    )
    table = predictions(Curves(data), specs, args.predict) if args.predict else None
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "curves.json", data)
    write_text(args.out / "curves.txt", text_summary(data))
    if table is not None:
        with atomic_path(args.out / "predictions.csv") as tmp:
            table.to_csv(tmp, index=False)
    print(text_summary(data), end="")

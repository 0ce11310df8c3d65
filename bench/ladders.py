"""Benchmark: fit the smaller models of a published scaling ladder, predict the larger ones.

    python bench/ladders.py LADDER.csv [LADDER2.jsonl ...] --split-params P [--bootstrap 200]
        [--params-col N] [--tokens-col D] [--loss-col loss] [--run-col run] [--workers 2] [--details]

A ladder file is a CSV (or JSON-lines, by its suffix) with one row per finished run and at least
three columns: the model size (non-embedding or active parameters, as the ladder counts them),
the training tokens and the final loss. By default they are named `N`, `D` and `loss`; map
others with --params-col/--tokens-col/--loss-col (e.g. Gemstones' `params_active_precise`,
`tokens`, `final_loss`). An optional run-name column (--run-col) is carried along.

The runs with N <= --split-params are written as the CSV `scalelab fit` reads (run, params,
tokens, flops = 6·N·D, loss) and fitted with default settings except the number of resamples;
the runs above the split are then predicted through `scalelab.load_fit(folder).predict(N, D)`.
The same is done with the Chinchilla form alone (forms = form = chinchilla: today's additive
law, no mixture), so "not worse than the additive law" can be read off. Per ladder and fit it
prints the chosen form, mean and max |relative error| of the predicted loss, the fraction of
actual losses inside the 95 % prediction interval, and the mean interval width (high − low) /
loss, and the same for the predicted runs whose tokens per parameter lie inside the fitted runs'
range (the others extrapolate in D/N as well as in N). The last line is a JSON object with every
figure. The ladder data are not part of the project; docs/benchmarks.md names where each one comes
from.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from scalelab import fit  # first: it pins OpenBLAS to one thread before numpy and scipy load

import numpy as np
import pandas as pd

import scalelab

FITS = {"default": {}, "chinchilla_only": {"forms": ("chinchilla",), "form": "chinchilla"}}


def read_ladder(path: Path, params_col: str, tokens_col: str, loss_col: str, run_col: str | None) -> pd.DataFrame:
    """The ladder as the columns `scalelab fit` reads, rows with a missing value dropped."""
    raw = pd.read_json(path, lines=True) if path.suffix in (".jsonl", ".ndjson") else pd.read_csv(path)
    missing = [c for c in (params_col, tokens_col, loss_col) if c not in raw.columns]
    if missing:
        raise SystemExit(f"{path}: no column(s) {', '.join(missing)}; columns are {', '.join(map(str, raw.columns))}")
    params, tokens, loss = (
        pd.to_numeric(raw[c], errors="coerce").to_numpy(float) for c in (params_col, tokens_col, loss_col)
    )
    runs = (
        raw[run_col].astype(str) + "@" + pd.Series(tokens).map("{:.0f}".format)
        if run_col
        else pd.Series([f"r{i}" for i in range(len(raw))])
    )
    frame = pd.DataFrame(
        {"run": runs.to_numpy(), "params": params, "tokens": tokens, "flops": 6 * params * tokens, "loss": loss}
    )
    return frame[np.isfinite(frame[["params", "tokens", "loss"]]).all(axis=1)].reset_index(drop=True)


def details(fitted, small: pd.DataFrame, large: pd.DataFrame, pred: pd.DataFrame) -> None:
    """Each predicted run, each form's share of the interval, and the fitted runs' log residuals
    about the chosen form by tokens/param."""
    table = large[["run", "params", "tokens", "loss"]].assign(
        tokens_per_param=large["tokens"] / large["params"],
        predicted=pred["mean"].to_numpy(),
        low=pred["obs_ci_lower"].to_numpy(),
        high=pred["obs_ci_upper"].to_numpy(),
        rel_error=pred["mean"].to_numpy() / large["loss"].to_numpy() - 1,
    )
    print(table.sort_values(["params", "tokens"]).to_string(index=False, float_format="{:.4g}".format))
    components = fitted.components(large["params"].to_numpy(), large["tokens"].to_numpy())
    for name, (weight, log_preds, sigma, _) in components.items():
        log_preds = log_preds[np.all(np.isfinite(log_preds), axis=1)]
        q1, q3 = np.percentile(log_preds, [25, 75], axis=0) if len(log_preds) else (np.nan, np.nan)
        print(
            f"  form {name}: weight {weight:.3f}, residual sigma {fitted.fitted[name]['residual_sigma']:.4f}, "
            f"extrapolation sigma {fitted.fitted[name].get('extrapolation_sigma') or 0:.4f} per e-fold; "
            f"mean over the predicted runs: scatter {np.mean(sigma):.4f}, bootstrap spread of the predictions "
            f"(IQR / 1.349) {np.mean((q3 - q1) / 1.349):.4f}"
        )
    residual = np.log(
        small["loss"].to_numpy()
        / fitted.predict(small["params"].to_numpy(), small["tokens"].to_numpy())["mean"].to_numpy()
    )
    ratio = (small["tokens"] / small["params"]).to_numpy()
    for low, high in ((0, 1), (1, 3), (3, 10), (10, np.inf)):
        inside = (ratio >= low) & (ratio < high)
        if inside.any():
            print(
                f"  fitted runs with {low} <= tokens/param < {high}: {int(inside.sum())}, log residual mean "
                f"{residual[inside].mean():+.3f}, RMS {np.sqrt(np.mean(residual[inside] ** 2)):.3f}"
            )


def check(frame: pd.DataFrame, split: float, bootstrap: int, workers: int, overrides: dict, show=False) -> dict:
    small, large = frame[frame["params"] <= split], frame[frame["params"] > split]
    with tempfile.TemporaryDirectory() as out:
        result = fit.fit_all(small, bootstrap=bootstrap, workers=workers, **overrides)
        fit.write_outputs(result, out)
        fitted = scalelab.load_fit(out)
        pred = fitted.predict(large["params"].to_numpy(), large["tokens"].to_numpy())
        if show:
            details(fitted, small, large, pred)
    actual = large["loss"].to_numpy()
    error = np.abs(pred["mean"].to_numpy() / actual - 1)
    inside = (actual >= pred["obs_ci_lower"].to_numpy()) & (actual <= pred["obs_ci_upper"].to_numpy())
    width = (pred["obs_ci_upper"].to_numpy() - pred["obs_ci_lower"].to_numpy()) / pred["mean"].to_numpy()
    below = actual < pred["obs_ci_lower"].to_numpy()
    # Runs whose tokens per parameter lie outside the fitted runs' range extrapolate in a second
    # direction (e.g. far-undertrained large models of an IsoFLOP grid); their share is reported apart.
    ratio, fitted_ratio = large["tokens"] / large["params"], small["tokens"] / small["params"]
    within = ((ratio >= fitted_ratio.min()) & (ratio <= fitted_ratio.max())).to_numpy()
    return {
        "chosen_form": fitted.form.name,
        "fitted_runs": len(small),
        "predicted_runs": len(large),
        "mean_abs_rel_error": float(error.mean()),
        "max_abs_rel_error": float(error.max()),
        "coverage_95": float(inside.mean()),
        "below_interval": int(below.sum()),
        "above_interval": int((~inside & ~below).sum()),
        "mean_rel_width": float(width.mean()),
        "mean_signed_rel_error": float((pred["mean"].to_numpy() / actual - 1).mean()),
        "predicted_runs_within_fitted_tokens_per_param": int(within.sum()),
        "mean_abs_rel_error_within": float(error[within].mean()) if within.any() else None,
        "coverage_95_within": float(inside[within].mean()) if within.any() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ladders", nargs="+", type=Path)
    parser.add_argument(
        "--split-params",
        type=float,
        nargs="+",
        required=True,
        help="fit the runs with N <= this; one value, or one per ladder",
    )
    parser.add_argument("--params-col", default="N")
    parser.add_argument("--tokens-col", default="D")
    parser.add_argument("--loss-col", default="loss")
    parser.add_argument("--run-col", default=None)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--details",
        action="store_true",
        help="also print each predicted run and the fitted runs' residuals by tokens/param",
    )
    args = parser.parse_args()
    splits = args.split_params * len(args.ladders) if len(args.split_params) == 1 else args.split_params
    if len(splits) != len(args.ladders):
        raise SystemExit("--split-params: give one value, or one per ladder")
    results = []
    for path, split in zip(args.ladders, splits):
        frame = read_ladder(path, args.params_col, args.tokens_col, args.loss_col, args.run_col)
        for name, overrides in FITS.items():
            t0 = time.perf_counter()
            row = {
                "ladder": path.name,
                "split_params": split,
                "fit": name,
                **check(frame, split, args.bootstrap, args.workers, overrides, args.details),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            results.append(row)
            print(
                f"{path.name} [{name}] chosen {row['chosen_form']}: {row['fitted_runs']} runs fitted, "
                f"{row['predicted_runs']} predicted; |error| mean {row['mean_abs_rel_error']:.2%} "
                f"max {row['max_abs_rel_error']:.2%}; inside 95 % interval {row['coverage_95']:.0%} "
                f"({row['below_interval']} below, {row['above_interval']} above); "
                f"mean width {row['mean_rel_width']:.2%}",
                flush=True,
            )
            if row["predicted_runs_within_fitted_tokens_per_param"] < row["predicted_runs"]:
                print(
                    f"  of which {row['predicted_runs_within_fitted_tokens_per_param']} within the fitted runs' "
                    f"tokens/param range: |error| mean {row['mean_abs_rel_error_within']:.2%}, "
                    f"inside {row['coverage_95_within']:.0%}",
                    flush=True,
                )
    print(json.dumps({"bootstrap": args.bootstrap, "results": results}))


if __name__ == "__main__":
    main()

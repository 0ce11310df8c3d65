"""The default study's figures (issue 10's targets), read from a finished study's files.

    make run && python bench/default_study.py                 # the default study in results/
    python bench/default_study.py --study studies/candidate   # any finished study folder
    make run && python bench/default_study.py --write-docs    # and refresh the docs from it

Nothing is refitted: the law, its intervals and the held-out check are fit.json's; the losses,
FLOPs and times are metrics.csv's, the runs' eval.json and the trunks' segment records. The
last line printed is a JSON object.

--write-docs rewrites what docs/benchmarks.md shows of the study (the part between its
`default-study` markers: the law against the targets, the loss table, the training and
evaluation times and the FLOPs ratio) and copies the report's Figure 1 and frontier figure to
docs/loss_vs_params.png and docs/frontier.png, the README's figures: so the docs are the
finished study's, in one command.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd


# The fit works in log E, so an E that wants to be 0 slides towards exp(-inf) and stops wherever
# L-BFGS-B does (1e-10, 1e-12, ...). An interval whose lower end is below a thousandth of a nat
# has not excluded 0.
E_AT_ZERO = 1e-3


def strictly_falling(table: pd.DataFrame, axis: int) -> bool:
    """Every row (axis=1: along D) or every column (axis=0: along N) strictly decreasing."""
    return bool((np.diff(table.to_numpy(), axis=axis) < 0).all())


REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- default-study:begin (bench/default_study.py --write-docs) -->", "<!-- default-study:end -->"
README_FIGURES = ("loss_vs_params", "frontier")


def _interval(values) -> str:
    return f"[{_g(values[0])}, {_g(values[1])}]"


def _g(value) -> str:
    return "–" if value is None else f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2g}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def docs_section(figures: dict, losses: pd.DataFrame, models: dict) -> str:
    """The generated part of docs/benchmarks.md's default-study section, as Markdown."""
    held = figures["heldout_max_abs_rel_error"]
    lines = [
        BEGIN,
        "",
        "From the finished study (`python bench/default_study.py`; the report prints the same law):",
        "",
        "| what | figure |",
        "| --- | --- |",
        f"| training: trunk segments' and runs' `wall_s`, summed | {figures['train_s']:,.0f} s |",
        f"| evaluation: the runs' `eval_s`, summed | {figures['eval_s']:,.1f} s, "
        f"**{100 * figures['eval_share_of_train']:.1f} %** of training |",
        f"| training FLOPs spent against the same runs trained independently | {figures['flops_spent']:.3g} "
        f"against {figures['flops_independent']:.3g}: **{figures['flops_ratio']:.3f}** |",
        "",
        "| figure | value | target (issue 10) | met |",
        "| --- | --- | --- | --- |",
        f"| alpha [95 %] | {_g(figures['alpha'])} {_interval(figures['alpha_ci'])}, width "
        f"**{figures['alpha_ci_width']:.3f}** | width < 0.3 | {_yes(figures['alpha_ci_width'] < 0.3)} |",
        f"| beta [95 %] | {_g(figures['beta'])} {_interval(figures['beta_ci'])}, width "
        f"**{figures['beta_ci_width']:.3f}** | width < 0.3 | {_yes(figures['beta_ci_width'] < 0.3)} |",
        f"| E [95 %] | {_g(figures['E'])} {_interval(figures['E_ci'])} | interval excludes 0 | "
        f"{_yes(figures['E_ci_excludes_0'])}{'' if figures['E_ci_excludes_0'] else ': E pinned at 0'} |",
        f"| held-out max relative error | **{'–' if held is None else f'{100 * held:.2f} %'}** | ≤ 3 % | "
        f"{'–' if held is None else _yes(held <= 0.03)} |",
        f"| loss falls with N at every D from the 2nd; with D at every N | "
        f"{_yes(figures['monotone_in_N_from_2nd_D'])}; {_yes(figures['monotone_in_D'])} | strictly | "
        f"{_yes(figures['monotone_in_N_from_2nd_D'] and figures['monotone_in_D'])} |",
        f"| sizes, N span; token counts, D span (trained tokens) | {figures['sizes']}, {figures['N_span']:.1f}×; "
        f"{figures['token_counts']}, {figures['D_span']:.1f}× | ≥ 4, ≥ 16×; ≥ 5, ≥ 16× | "
        f"{_yes(figures['sizes'] >= 4 and figures['N_span'] >= 16 and figures['token_counts'] >= 5 and figures['D_span'] >= 16)} |",  # noqa: E501
        "",
        f"{figures['target']} (rows: non-embedding parameters; columns: trained tokens):",
        "",
        "| N \\ D | " + " | ".join(f"{int(d):,}" for d in losses.columns) + " |",
        "| --- |" + " --- |" * len(losses.columns),
    ]
    for n, row in losses.iterrows():
        name = f" ({models[n]})" if n in models else ""
        lines.append(f"| {int(n):,}{name} | " + " | ".join("–" if v != v else f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines + ["", END])


def write_docs(results: Path, figures: dict, losses: pd.DataFrame, models: dict, repo: Path = REPO) -> list[Path]:
    """Replace the marked section of docs/benchmarks.md and copy the README's figures; returns
    the files written. Refuses (SystemExit) when a marker or a figure is missing."""
    bench = repo / "docs" / "benchmarks.md"
    text = bench.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if len(pattern.findall(text)) != 1:
        raise SystemExit(f"{bench}: expected one section between {BEGIN!r} and {END!r}")
    sources = [results / "report" / "figures" / f"{name}.png" for name in README_FIGURES]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise SystemExit(f"not drawn in the study's report: {', '.join(missing)}")
    bench.write_text(pattern.sub(lambda _: docs_section(figures, losses, models), text))
    written = [bench]
    for source in sources:
        target = repo / "docs" / source.name
        shutil.copyfile(source, target)
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("."), help="study folder (holds results/)")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="rewrite docs/benchmarks.md's default-study figures and the README figures from it",
    )
    parser.add_argument("--repo", type=Path, default=REPO, help=argparse.SUPPRESS)  # the docs to write (tests)
    args = parser.parse_args()
    results = args.study / "results"
    fit = json.loads((results / "fit/fit.json").read_text())
    runs = pd.read_csv(results / "metrics.csv")
    runs = runs[runs["status"] == "ok"]
    target = fit["target"]

    law, ci = fit["approach3"], fit["approach3"]["ci95"]
    width = {k: ci[k][1] - ci[k][0] for k in ("alpha", "beta")}
    losses = runs.pivot_table(index="params", columns="tokens", values=target).sort_index().sort_index(axis=1)
    monotone_in_n = strictly_falling(losses.iloc[:, 1:], axis=0)  # from the second-smallest D up
    monotone_in_d = strictly_falling(losses, axis=1)

    evals = [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/eval.json"))]
    trunks = [json.loads(p.read_text()) for p in sorted(results.glob("trunks/*/step*.json"))]
    train_s = float(runs["wall_s"].sum()) + sum(t["wall_s"] for t in trunks)
    eval_s = sum(e.get("eval_s") or 0 for e in evals)
    spent = runs["flops_spent"] if "flops_spent" in runs else runs["flops"]

    figures = {
        "target": target,
        "alpha": law["alpha"],
        "alpha_ci": ci["alpha"],
        "alpha_ci_width": width["alpha"],
        "beta": law["beta"],
        "beta_ci": ci["beta"],
        "beta_ci_width": width["beta"],
        "E": law["E"],
        "E_ci": ci["E"],
        "E_ci_excludes_0": bool(ci["E"][0] > E_AT_ZERO),
        "heldout_max_abs_rel_error": (fit.get("holdout") or {}).get("max_abs_rel_error"),
        "monotone_in_N_from_2nd_D": monotone_in_n,
        "monotone_in_D": monotone_in_d,
        "sizes": int(losses.shape[0]),
        "N_span": float(losses.index.max() / losses.index.min()),
        "token_counts": int(losses.shape[1]),
        "D_span": float(losses.columns.max() / losses.columns.min()),
        "flops_spent": float(spent.sum()),
        "flops_independent": float(runs["flops"].sum()),
        "flops_ratio": float(spent.sum() / runs["flops"].sum()),
        "train_s": train_s,
        "eval_s": eval_s,
        "eval_share_of_train": eval_s / train_s if train_s else None,
    }
    print(f"{target} by N (rows) and D (columns):")
    print(losses.round(3).to_string())
    if args.write_docs:
        models = dict(zip(runs["params"], runs["model"])) if "model" in runs else {}
        for path in write_docs(results, figures, losses, models, args.repo):
            print(f"wrote {path}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

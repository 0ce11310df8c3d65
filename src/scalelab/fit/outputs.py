"""What `scalelab fit` writes: fit.json (the contract later stages read), one tidy CSV per table
and the human-readable fit.txt.

`Draft` collects the three section by section, in the order they appear; each `render_*`
function adds one section from what its fit returned (a fit.json section, or None and why not),
so the layout of every output is here and the numbers are in the fit modules. `write_outputs`
checks fit.json against schemas/fit.schema.yaml and writes everything atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..files import write_json, write_text
from .approach3 import HUBER_DELTA, PARAM_NAMES
from .hyperparameters import HPARAM_RULE

ESTIMATE_COLUMNS = ["parameter", "estimate", "ci_low", "ci_high"]
ISOFLOP_COLUMNS = [
    "flops",
    "n_opt",
    "d_opt",
    "loss_opt",
    "n_points",
    "outside_sampled",
    "n_fit_points",
    "fit_params_min",
    "fit_params_max",
    "n_opt_ci_low",
    "n_opt_ci_high",
    "log_n_opt_sd",
    "interior_fraction",
]
ALLOCATION_COLUMNS = [
    "form",
    "flops",
    "n_opt",
    "n_opt_ci_low",
    "n_opt_ci_high",
    "d_opt",
    "d_opt_ci_low",
    "d_opt_ci_high",
    "tokens_per_param",
    "loss_pred",
    "loss_ci_low",
    "loss_ci_high",
    "extrapolation",
]
POWER_LAW_COLUMNS = ["law", "method", "parameter", "estimate", "ci_low", "ci_high", "r2"]


@dataclass
class FitResult:
    """Everything one fit writes: fit.json's dict, the tables (one CSV each) and fit.txt."""

    result: dict  # the fit.json contract
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    text: str = ""


@dataclass
class Draft:
    """fit.json, the tables and fit.txt's lines, filled in section by section."""

    result: dict = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def section(self, key: str, section, why: str | None, heading: str) -> None:
        """fit.json's `key`; when it was not done (why), `<key>_why` and fit.txt's `heading: why`."""
        self.result[key] = section
        if why:
            self.result[f"{key}_why"] = why
            self.lines += ["", f"== {heading}: {why} =="]

    def finish(self) -> FitResult:
        return FitResult(self.result, self.tables, "\n".join(self.lines) + "\n")


def _estimate_row(parameter, estimate, ci) -> dict:
    low, high = ci or (None, None)
    return {"parameter": parameter, "estimate": estimate, "ci_low": low, "ci_high": high}


def render_header(out: Draft, source, settings, columns: dict, n_points: int, excluded: list, selection: dict):
    """What was fitted: the columns, the settings (less workers, which cannot change a number) and
    the selection of runs."""
    out.result.update(
        {
            "target": columns["loss"],
            "n_points": n_points,
            "excluded": excluded,
            "columns": columns,
            "settings": {k: v for k, v in settings.to_dict().items() if k != "workers"},
            "selection": selection,
        }
    )
    out.lines += [
        f"scalelab fit: {source}",
        f"target {columns['loss']}, params {columns['params']}, tokens {columns['tokens']}, "
        f"flops {columns['flops']}; {n_points} points, {len(excluded)} excluded",
        f"selection ({settings.select}): {selection['method']}; {n_points} runs used, "
        f"{selection['runs_dropped']} left out",
    ]
    out.tables["excluded"] = pd.DataFrame(excluded, columns=["run", "reason"])


def render_approach3(out: Draft, law: dict | None, why: str | None, samples: pd.DataFrame) -> None:
    out.section("approach3", law, why, "Approach 3: not fitted")
    if law is None:
        out.tables["approach3"] = pd.DataFrame(columns=ESTIMATE_COLUMNS)
    else:
        out.tables["approach3"] = pd.DataFrame([_estimate_row(k, law[k], law["ci95"][k]) for k in PARAM_NAMES])
        out.lines += [
            "",
            f"== Approach 3: L = E + A/N^alpha + B/D^beta (summed Huber, delta {HUBER_DELTA:g}, on log loss) ==",
            f"{law['n_starts']} grid starts scored, the best {law['refined']} refined with L-BFGS-B; "
            f"{law['starts_at_optimum']} of those {law['refined']} reached the best objective "
            f"{law['objective']:.6g}; {law['bootstrap']} bootstrap resamples (seed {law['seed']})",
            table_text(out.tables["approach3"]),
        ]
    out.tables["bootstrap"] = samples


def render_power_laws(out: Draft, fits) -> None:
    """`fits` as scalelab.fit.power_laws.power_law_sections returns them."""
    for (key, vary, fixed, coefficient, symbol, exponent), section, summaries, why in fits:
        out.section(key, section, why, f"{key}: not fitted")
        if why:
            continue
        out.lines += [
            "",
            f"== {key}: L = E + {coefficient}/{symbol}^{exponent} at "
            f"{fixed} = {section[f'slice_{fixed}']:.4g} ({section['n_points']} points) ==",
            f"nonlinear (scipy): E {_num(section['E'])}, {exponent} {_num(section[exponent])}, "
            f"R2 {_num(section['r2'])}",
            "log-log fits (statsmodels OLS, then RLM with Huber's T):",
            *map(_deterministic, summaries),
        ]
    out.tables["power_laws"] = _power_law_table(out.result)


def _power_law_table(result) -> pd.DataFrame:
    rows = []
    for key, name, exponent in (("power_law_N", "A", "alpha"), ("power_law_D", "B", "beta")):
        section = result.get(key)
        if not section:
            continue
        for param in ("E", name, exponent):
            ci = section["ci95"].get(param) or [None, None]
            rows.append(
                {
                    "law": key,
                    "method": "nonlinear",
                    "parameter": param,
                    "estimate": section[param],
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                    "r2": section["r2"],
                }
            )
        for method in ("loglog_ols", "loglog_rlm"):
            fit = section.get(method)
            if not fit:
                continue
            for param in (name, exponent):
                ci = fit["ci95"][param] or [None, None]
                rows.append(
                    {
                        "law": key,
                        "method": method,
                        "parameter": param,
                        "estimate": fit[param],
                        "ci_low": ci[0],
                        "ci_high": ci[1],
                        "r2": fit["r2"],
                    }
                )
    return pd.DataFrame(rows, columns=POWER_LAW_COLUMNS)


def render_approach2(out: Draft, section: dict | None, why: str | None, summaries: list[str], bootstrap: int):
    out.section("approach2", section, why, "Approach 2 (IsoFLOP): not fitted")
    if why:
        out.tables["isoflop"] = pd.DataFrame(columns=ISOFLOP_COLUMNS)
    else:
        out.tables["isoflop"] = pd.DataFrame(
            [
                {
                    **row,
                    "n_opt_ci_low": (row["n_opt_ci95"] or [None, None])[0],
                    "n_opt_ci_high": (row["n_opt_ci95"] or [None, None])[1],
                }
                for row in section["budgets"]
            ],
            columns=ISOFLOP_COLUMNS,
        )
        out.lines += [
            "",
            f"== Approach 2 (IsoFLOP), grouped by {section['grouping']}; {section['method']} ==",
            table_text(out.tables["isoflop"]),
            f"a (N_opt ~ C^a) = {_num(section['a'])} CI {_num(section['a_ci95'])}; "
            f"b (D_opt ~ C^b) = {_num(section['b'])} CI {_num(section['b_ci95'])} ({section['ci_method']}"
            + (
                f", {section['bootstrap']} redraws of every budget's losses with the estimated noise, "
                f"{section['bootstrap_failed']} left out for a minimum outside the sampled sizes"
                if section["ci_method"] == "bootstrap"
                else ""
            )
            + ")",
            *map(_deterministic, summaries),
        ]
        if section.get("bootstrap_why"):
            out.lines.append(f"note: {section['bootstrap_why']}")
        if section["skipped"]:
            out.lines += [f"note: budget {s['flops']:.4g} left out: {s['reason']}" for s in section["skipped"]]
        if section["outside_sampled"]:
            out.lines.append(
                f"note: the minimum lies outside the sampled sizes at budgets {section['outside_sampled']}"
            )
    out.tables["approach2"] = pd.DataFrame(
        [_estimate_row(k, section[k], section[f"{k}_ci95"]) for k in ("a", "b")] if section else [],
        columns=ESTIMATE_COLUMNS,
    )


def render_allocation(out: Draft, rows: list[dict] | None, why: str | None) -> None:
    out.tables["allocation"] = pd.DataFrame(columns=ALLOCATION_COLUMNS)
    out.section("allocation", rows, why, "Compute-optimal allocation: not computed")
    if why:
        return
    out.tables["allocation"] = pd.DataFrame(
        [
            {
                **{k: v for k, v in row.items() if "ci95" not in k},
                **{
                    f"{key}_ci_{end}": (row[f"{key}_ci95"] or [None, None])[i]
                    for key in ("loss", "n_opt", "d_opt")
                    for i, end in enumerate(("low", "high"))
                },
            }
            for row in rows
        ],
        columns=ALLOCATION_COLUMNS,
    )
    out.lines += [
        "",
        f"== Compute-optimal allocation ({rows[0]['form']} form, C = 6*N*D; 95 % intervals: N_opt and "
        "D_opt mix every form by its weight and widen with the drift of N_opt along the rolling origin; "
        "the loss at the optimum is a prediction interval over every form with the extrapolation scatter) ==",
        table_text(out.tables["allocation"]),
    ]
    for row in rows:
        own = row.get("n_opt_ci95_point_law_bootstrap")
        if own and row["n_opt_ci95"]:
            out.lines.append(
                f"at C = {row['flops']:.3g}: N_opt 95 % interval [{row['n_opt_ci95'][0]:.3g}, "
                f"{row['n_opt_ci95'][1]:.3g}] with form uncertainty and drift; the {row['form']} "
                f"bootstrap alone gives [{own[0]:.3g}, {own[1]:.3g}]"
            )


def render_holdout(out: Draft, section: dict | None, why: str | None, table: pd.DataFrame) -> None:
    out.section("holdout", section, why, "Held-out check: not done")
    out.tables["holdout"] = table
    if not why:
        n_out = sum(1 for inside in section["inside"] if not inside)
        out.lines += [
            "",
            f"== Held-out check: the largest size's runs (N = {section['params']:.4g}, "
            f"{len(section['inside'])} runs) predicted by the {section['form']} form refitted on the "
            "smaller sizes, "
            f"max |relative error| {section['max_abs_rel_error']:.4g}; {len(section['inside']) - n_out} of "
            f"{len(section['inside'])} actual losses inside their 95 % prediction interval ==",
            table_text(table),
        ]
        # At 95 %, about 1 in 20 falls outside by chance: warn beyond that (plus 2 binomial sd).
        n = len(section["inside"])
        if n_out and n_out > 0.05 * n + 2 * (0.05 * 0.95 * n) ** 0.5:
            out.result.setdefault("warnings", []).append(
                f"held-out check: {n_out} of {len(section['inside'])} actual losses fall outside the "
                f"{section['form']} law's own 95 % prediction interval (max |error| "
                f"{100 * section['max_abs_rel_error']:.2f} %): the law extrapolates worse than it claims"
            )


def render_disagreement(out: Draft, rows) -> None:
    out.result["forms_disagreement"] = rows
    if not rows:
        return
    out.lines += ["", "== The forms at the budgets ahead (at the chosen form's optimum) =="]
    for row in rows:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in row["loss"].items())
        interval = row["chosen_interval"]
        out.lines.append(
            f"C {row['flops']:.3g}: {shown}; spread {100 * row['rel_spread']:.2f} % of the chosen "
            f"prediction; chosen form's own interval "
            f"{'n/a' if interval is None else f'[{interval[0]:.4g}, {interval[1]:.4g}]'}"
            + (f"; outside it: {', '.join(row['outside_chosen_interval'])}" if row["disagree"] else "")
        )
    first = rows[0]
    if first["disagree"]:
        others = ", ".join(f"{k} {first['loss'][k]:.4g}" for k in first["outside_chosen_interval"])
        low, high = first["chosen_interval"]
        out.result.setdefault("warnings", []).append(
            f"the law forms disagree at C = {first['flops']:.3g}: {others}, outside the chosen form's own "
            f"interval [{low:.4g}, {high:.4g}]; the prediction intervals mix the forms, weighted by their "
            f"out-of-sample errors ({', '.join(f'{k} {w:.2f}' for k, w in first['weights'].items())})"
        )


def render_warnings(out: Draft) -> None:
    warnings = out.result.setdefault("warnings", [])
    if warnings:
        # First in fit.txt, after the header: they qualify every number below.
        at = 3 if len(out.lines) >= 3 else len(out.lines)
        out.lines[at:at] = ["", "== WARNINGS ==", *(f"- {w}" for w in warnings)]


def _num(value) -> str:
    """A number (or a list of them) for fit.txt: 'n/a' where there is none, never 'None'."""
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_num(v) for v in value) + "]"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _deterministic(summary: str) -> str:
    """A statsmodels summary without its Date and Time lines, so identical fits give identical text."""
    import re

    return "\n".join(
        re.sub(r"(Date|Time):\s+\S.*?(?=\s{2,}|$)", lambda m: " " * len(m.group(0)), line)
        for line in summary.splitlines()
    )


def table_text(table: pd.DataFrame, index=False) -> str:
    """A table for fit.txt, with missing values as 'n/a'."""
    return table.to_string(index=index, na_rep="n/a", float_format=lambda v: f"{v:.6g}")


def render_hyperparameters(
    out: Draft, section: dict | None, why: str | None, table: pd.DataFrame, lines: list[str]
) -> None:
    out.tables["hyperparameters"] = table
    out.section("hyperparameters", section, why, "Hyperparameters: not fitted")
    if not why:
        out.lines += ["", f"== Hyperparameters: {HPARAM_RULE} ==", *lines]


def render_excluded(out: Draft, excluded: list) -> None:
    if excluded:
        out.lines += ["", "== Excluded rows ==", table_text(out.tables["excluded"])]


def write_outputs(fit: FitResult, out_dir) -> None:
    """fit.json, one CSV per table and fit.txt, each written atomically; fit.json is checked
    against its written contract (schemas/fit.schema.yaml) before anything is written."""
    from ..files import jsonable
    from ..laws.fitjson import check_fit_json

    out_dir = Path(out_dir)
    check_fit_json(json.loads(json.dumps(jsonable(fit.result))), out_dir / "fit.json")
    for name, table in fit.tables.items():
        write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    write_text(out_dir / "fit.txt", fit.text)
    write_json(out_dir / "fit.json", fit.result)  # last: its presence means the rest is there

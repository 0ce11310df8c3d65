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
ISOFLOP_COLUMNS = ["flops", "n_opt", "d_opt", "loss_opt", "n_points", "outside_sampled", "n_fit_points",
                   "fit_params_min", "fit_params_max", "n_opt_ci_low", "n_opt_ci_high"]
ALLOCATION_COLUMNS = ["flops", "n_opt", "d_opt", "tokens_per_param", "loss_pred", "loss_ci_low", "loss_ci_high"]
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
    out.result.update({"target": columns["loss"], "n_points": n_points, "excluded": excluded, "columns": columns,
                       "settings": {k: v for k, v in settings.to_dict().items() if k != "workers"},
                       "selection": selection})
    out.lines += [f"scalelab fit: {source}",
                  f"target {columns['loss']}, params {columns['params']}, tokens {columns['tokens']}, "
                  f"flops {columns['flops']}; {n_points} points, {len(excluded)} excluded",
                  f"selection ({settings.select}): {selection['method']}; {n_points} runs used, "
                  f"{selection['runs_dropped']} left out"]
    out.tables["excluded"] = pd.DataFrame(excluded, columns=["run", "reason"])


def render_approach3(out: Draft, law: dict | None, why: str | None, samples: pd.DataFrame) -> None:
    out.section("approach3", law, why, "Approach 3: not fitted")
    if law is None:
        out.tables["approach3"] = pd.DataFrame(columns=ESTIMATE_COLUMNS)
    else:
        out.tables["approach3"] = pd.DataFrame([_estimate_row(k, law[k], law["ci95"][k]) for k in PARAM_NAMES])
        out.lines += ["", "== Approach 3: L = E + A/N^alpha + B/D^beta (summed Huber, delta "
                      f"{HUBER_DELTA:g}, on log loss) ==",
                      f"L-BFGS-B from {law['n_starts']} starts; {law['starts_at_optimum']} reached the best "
                      f"objective {law['objective']:.6g}; {law['bootstrap']} bootstrap resamples (seed {law['seed']})",
                      out.tables["approach3"].to_string(index=False)]
    out.tables["bootstrap"] = samples


def render_power_laws(out: Draft, fits) -> None:
    """`fits` as scalelab.fit.power_laws.power_law_sections returns them."""
    for (key, vary, fixed, coefficient, symbol, exponent), section, summaries, why in fits:
        out.section(key, section, why, f"{key}: not fitted")
        if why:
            continue
        out.lines += ["", f"== {key}: L = E + {coefficient}/{symbol}^{exponent} at "
                      f"{fixed} = {section[f'slice_{fixed}']:.4g} ({section['n_points']} points) ==",
                      f"nonlinear (scipy): E {section['E']}, {exponent} {section[exponent]}, R2 {section['r2']}",
                      "log-log fits (statsmodels OLS, then RLM with Huber's T):", *summaries]
    out.tables["power_laws"] = _power_law_table(out.result)


def _power_law_table(result) -> pd.DataFrame:
    rows = []
    for key, name, exponent in (("power_law_N", "A", "alpha"), ("power_law_D", "B", "beta")):
        section = result.get(key)
        if not section:
            continue
        for param in ("E", name, exponent):
            ci = section["ci95"].get(param) or [None, None]
            rows.append({"law": key, "method": "nonlinear", "parameter": param, "estimate": section[param],
                         "ci_low": ci[0], "ci_high": ci[1], "r2": section["r2"]})
        for method in ("loglog_ols", "loglog_rlm"):
            fit = section.get(method)
            if not fit:
                continue
            for param in (name, exponent):
                ci = fit["ci95"][param] or [None, None]
                rows.append({"law": key, "method": method, "parameter": param, "estimate": fit[param],
                             "ci_low": ci[0], "ci_high": ci[1], "r2": fit["r2"]})
    return pd.DataFrame(rows, columns=POWER_LAW_COLUMNS)


def render_approach2(out: Draft, section: dict | None, why: str | None, summaries: list[str], bootstrap: int):
    out.section("approach2", section, why, "Approach 2 (IsoFLOP): not fitted")
    if why:
        out.tables["isoflop"] = pd.DataFrame(columns=ISOFLOP_COLUMNS)
    else:
        out.tables["isoflop"] = pd.DataFrame([{**row, "n_opt_ci_low": (row["n_opt_ci95"] or [None, None])[0],
                                               "n_opt_ci_high": (row["n_opt_ci95"] or [None, None])[1]}
                                              for row in section["budgets"]], columns=ISOFLOP_COLUMNS)
        out.lines += ["", f"== Approach 2 (IsoFLOP), grouped by {section['grouping']}; each parabola fitted to "
                      f"{section['window']['rule']} ==",
                      out.tables["isoflop"].to_string(index=False),
                      f"a (N_opt ~ C^a) = {section['a']} CI {section['a_ci95']}; "
                      f"b (D_opt ~ C^b) = {section['b']} CI {section['b_ci95']} ({section['ci_method']}"
                      + (f", {bootstrap} resamples of the runs within each budget, {section['bootstrap_failed']} failed"
                         if section["ci_method"] == "bootstrap" else "") + ")", *summaries]
        if section["outside_sampled"]:
            out.lines.append(f"note: the minimum lies outside the sampled sizes at budgets "
                             f"{section['outside_sampled']}")
    out.tables["approach2"] = pd.DataFrame([_estimate_row(k, section[k], section[f"{k}_ci95"]) for k in ("a", "b")]
                                           if section else [], columns=ESTIMATE_COLUMNS)


def render_allocation(out: Draft, rows: list[dict] | None, why: str | None) -> None:
    out.tables["allocation"] = pd.DataFrame(columns=ALLOCATION_COLUMNS)
    out.section("allocation", rows, why, "Compute-optimal allocation: not computed")
    if why:
        return
    out.tables["allocation"] = pd.DataFrame([{**{k: v for k, v in row.items() if not k.endswith("ci95")},
                                              "loss_ci_low": (row["loss_ci95"] or [None, None])[0],
                                              "loss_ci_high": (row["loss_ci95"] or [None, None])[1]}
                                             for row in rows])
    out.lines += ["", "== Compute-optimal allocation (Approach 3) ==", out.tables["allocation"].to_string(index=False)]


def render_holdout(out: Draft, section: dict | None, why: str | None, table: pd.DataFrame) -> None:
    out.section("holdout", section, why, "Held-out check: not done")
    out.tables["holdout"] = table
    if not why:
        out.lines += ["", f"== Held-out check: refit without the top compute group, max |relative error| "
                      f"{section['max_abs_rel_error']:.4g} ==", table.to_string(index=False)]


def render_hyperparameters(out: Draft, section: dict | None, why: str | None, table: pd.DataFrame,
                           lines: list[str]) -> None:
    out.tables["hyperparameters"] = table
    out.section("hyperparameters", section, why, "Hyperparameters: not fitted")
    if not why:
        out.lines += ["", f"== Hyperparameters: {HPARAM_RULE} ==", *lines]


def render_excluded(out: Draft, excluded: list) -> None:
    if excluded:
        out.lines += ["", "== Excluded rows ==", out.tables["excluded"].to_string(index=False)]


def write_outputs(fit: FitResult, out_dir) -> None:
    """fit.json, one CSV per table and fit.txt, each written atomically; fit.json is checked
    against its written contract (schemas/fit.schema.yaml) before anything is written."""
    from ..files import _jsonable
    from ..fitjson import check_fit_json

    out_dir = Path(out_dir)
    check_fit_json(json.loads(json.dumps(_jsonable(fit.result))), out_dir / "fit.json")
    for name, table in fit.tables.items():
        write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    write_text(out_dir / "fit.txt", fit.text)
    write_json(out_dir / "fit.json", fit.result)  # last: its presence means the rest is there

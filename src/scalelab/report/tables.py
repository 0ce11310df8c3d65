"""The tables, one `table_<name>` function each, built in the order of the registry.

A table is rows of Cells. A number from fit.json keeps its exact value and the fit.json key it
came from (`approach3.ci95.alpha`), so the page can carry both and a test can check every shown
number against fit.json. A table the fit could not fill has no rows and says why in its notes.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import __version__
from .fmt import STATUSES, clause, count, finite, human, interval, num, percent
from .inputs import Study
from .registry import TABLES


@dataclass
class Cell:
    text: str
    source: str = ""  # the fit.json path this number comes from, e.g. "approach3.ci95.alpha"
    value: object = None  # the exact value behind the text
    css: str = ""


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # sentences shown under the table


def new_table(name: str, columns: list[str]) -> Table:
    return Table(name, TABLES[name].title, columns)


def build_tables(s: Study) -> dict[str, Table]:
    """Every registered table, in registry order."""
    return {name: spec.function()(s) for name, spec in TABLES.items()}


def fit_cell(value, source: str, show=num) -> Cell:
    """A number from fit.json, shown rounded, keeping its exact value and where it came from."""
    if isinstance(value, (list, tuple)):
        return Cell(interval(value, show), source, list(value))
    return Cell(show(value) if finite(value) else "–", source, value)


def blank_repeats(table: Table, column: int = 0) -> Table:
    """Show a group's label (e.g. the fit's name) on its first row only."""
    previous = None
    for row in table.rows:
        text = row[column].text
        if text == previous:
            row[column] = Cell("")
        previous = text
    return table


# ----------------------------------------------------------------------------- fitted parameters

PARAMETER_MEANING = {
    "E": "irreducible loss",
    "A": "parameter term coefficient",
    "alpha": "parameter exponent",
    "B": "data term coefficient",
    "beta": "data exponent",
    "a": "N_opt ∝ C^a",
    "b": "D_opt ∝ C^b",
    "r2": "R² of the fit",
}


def _approach3_rows(s: Study, table: Table) -> None:
    a3, why = s.section("approach3")
    if a3 is None:
        table.notes.append(f"Approach 3 (L = E + A/N^alpha + B/D^beta): not fitted: {clause(why)}.")
        return
    ci = a3.get("ci95") or {}
    fit_name = f"Approach 3, L(N, D) on {s.fit['n_points']} runs"
    for key in ("E", "A", "alpha", "B", "beta", "a", "b"):
        if key in a3:
            table.rows.append([Cell(fit_name), Cell(key), fit_cell(a3[key], f"approach3.{key}"),
                               fit_cell(ci.get(key), f"approach3.ci95.{key}"), Cell(PARAMETER_MEANING[key])])
    extras = [f"{k} = {num(a3[k])}" for k in ("huber_delta", "n_starts", "starts_at_optimum", "objective",
                                               "bootstrap", "bootstrap_failed") if finite(a3.get(k))]
    if extras:
        table.notes.append("Approach 3 (summed Huber loss on log-loss residuals, L-BFGS-B): " + ", ".join(extras) + ".")


def _power_law_rows(s: Study, table: Table, name: str, variable: str, slice_key: str, slice_what: str) -> None:
    section, why = s.section(name)
    keys = ("E", "A", "alpha") if variable == "N" else ("E", "B", "beta")
    if section is None:
        table.notes.append(f"Power law in {variable}: not fitted: {clause(why)}.")
        return
    ci = section.get("ci95") or {}
    fit_name = f"power law in {variable} at {slice_what} = {human(section.get(slice_key))}"
    for key in section.get("at_bound") or []:
        table.notes.append(f"Power law in {variable}: {key} sits on its bound (E between 0 and the lowest loss, "
                           f"exponent ≥ 0), so it has no interval: a covariance interval would cross the bound.")
    for key in keys + ("r2",):
        if key in section:
            table.rows.append([Cell(fit_name), Cell(key), fit_cell(section[key], f"{name}.{key}"),
                               fit_cell(ci.get(key), f"{name}.ci95.{key}") if key in ci else Cell("–"),
                               Cell(PARAMETER_MEANING[key])])
    ols, exponent = section.get("loglog_ols"), keys[2]  # the pure power law, log L = log A − k·log x
    if isinstance(ols, dict) and exponent in ols:
        table.rows.append([Cell(f"{fit_name}, log-log OLS"), Cell(exponent),
                           fit_cell(ols[exponent], f"{name}.loglog_ols.{exponent}"),
                           fit_cell((ols.get("ci95") or {}).get(exponent), f"{name}.loglog_ols.ci95.{exponent}"),
                           Cell(f"{PARAMETER_MEANING[exponent]}, without E")])


def _approach2_rows(s: Study, table: Table) -> None:
    a2, why = s.section("approach2")
    if a2 is None:
        table.notes.append(f"Approach 2 (IsoFLOP): not fitted: {clause(why)}.")
        return
    for key in ("a", "b"):
        if finite(a2.get(key)):
            table.rows.append([Cell("Approach 2, IsoFLOP optima"), Cell(key), fit_cell(a2[key], f"approach2.{key}"),
                               fit_cell(a2.get(f"{key}_ci95"), f"approach2.{key}_ci95"), Cell(PARAMETER_MEANING[key])])
    if a2.get("exponents_why"):
        table.notes.append(f"Approach 2 exponents: not fitted: {clause(a2['exponents_why'])}.")
    elif finite(a2.get("a")) and not a2.get("a_ci95"):
        table.notes.append("Approach 2 exponents have no interval: a line through two budgets leaves no "
                           "degrees of freedom." if len(a2["budgets"]) == 2 else
                           "fit.json gives no interval for the Approach 2 exponents.")


def _form_rows(s: Study, table: Table) -> None:
    """Every law form fit.json holds, the chosen one first: its parameters with their bootstrap
    intervals, a parameter the runs do not identify marked so in place of its meaning."""
    forms, chosen = s.fit.get("forms"), s.fit.get("chosen_form")
    if not isinstance(forms, dict):
        return
    for name in sorted(forms, key=lambda n: n != chosen):
        form = forms[name] or {}
        if not form.get("fitted"):
            table.notes.append(f"Law form {name}: not fitted: {clause(form.get('why') or 'no reason recorded')}.")
            continue
        label = f"{name} form{' (chosen)' if name == chosen else ''}, {s.fit['n_points']} runs"
        ci, unidentified = form.get("ci95") or {}, form.get("not_identified") or {}
        for key, value in (form.get("params") or {}).items():
            meaning = f"NOT IDENTIFIED: {unidentified[key]}" if key in unidentified else ""
            table.rows.append([Cell(label), Cell(key), fit_cell(value, f"forms.{name}.params.{key}"),
                               fit_cell(ci.get(key), f"forms.{name}.ci95.{key}"), Cell(meaning)])


def table_fit_parameters(s: Study) -> Table:
    table = new_table("fit_parameters", ["fit", "parameter", "estimate", "95 % interval", "meaning"])
    _form_rows(s, table)
    _approach3_rows(s, table)
    _power_law_rows(s, table, "power_law_N", "N", "slice_tokens", "D")
    _power_law_rows(s, table, "power_law_D", "D", "slice_params", "N")
    _approach2_rows(s, table)
    excluded = s.fit["excluded"]
    if excluded:
        table.notes.append("Excluded from the fit: " + ", ".join(f"{e['run']} ({e['reason']})" for e in excluded) + ".")
    return blank_repeats(table)


# ----------------------------------------------------------------------------- allocation

def table_isoflop_optima(s: Study) -> Table:
    table = new_table("isoflop_optima", ["compute C (FLOPs)", "N_opt (params)", "D_opt (tokens)",
                                         f"{s.target} at N_opt", "model sizes"])
    a2, why = s.section("approach2")
    if a2 is None:
        table.notes.append(f"No IsoFLOP optima: {clause(why)}.")
        return table
    for i, b in enumerate(a2["budgets"]):
        where = f"approach2.budgets.{i}"
        table.rows.append([fit_cell(b.get("flops"), f"{where}.flops"), fit_cell(b.get("n_opt"), f"{where}.n_opt", count),
                           fit_cell(b.get("d_opt"), f"{where}.d_opt", count),
                           fit_cell(b.get("loss_opt"), f"{where}.loss_opt"),
                           fit_cell(b.get("n_points"), f"{where}.n_points")])
    return table


def table_allocation(s: Study) -> Table:
    allocation, why = s.section("allocation")
    with_ci = bool(allocation) and any(a.get("n_opt_ci95") for a in allocation)
    columns = ["compute C (FLOPs)", "N_opt (params)", "D_opt (tokens)", "tokens per parameter",
               f"predicted {s.target}", "95 % interval"]
    table = new_table("allocation", columns + (["N_opt 95 %", "D_opt 95 %"] if with_ci else []))
    if allocation is None:
        table.notes.append(f"No allocation predictions: {clause(why)}.")
        return table
    for i, a in enumerate(allocation):
        row = [fit_cell(a.get(k), f"allocation.{i}.{k}", count if k in ("n_opt", "d_opt") else num) for k in
               ("flops", "n_opt", "d_opt", "tokens_per_param", "loss_pred", "loss_ci95")]
        if with_ci:
            row += [fit_cell(a.get(k), f"allocation.{i}.{k}", count) for k in ("n_opt_ci95", "d_opt_ci95")]
        table.rows.append(row)
    forms = {a.get("form") for a in allocation} - {None}
    if forms <= {"chinchilla"}:
        table.notes.append("From the Approach 3 law: N_opt = G·(C/6)^a, D_opt = (C/6)^b / G; intervals from the "
                           "bootstrap.")
    else:
        table.notes.append(f"From the {', '.join(sorted(forms))} law: the N, D with C = 6·N·D that minimise it. "
                           "The N_opt and D_opt intervals are over its bootstrap resamples (each one's own "
                           "optimum); the loss interval is fit.json's prediction interval.")
    return table


# ----------------------------------------------------------------------------- hyperparameter laws

def _hparam_law_rows(table: Table, key: str, entry: dict, law_key: str, symbol: str) -> None:
    law, where = entry.get(law_key), f"hyperparameters.{key}.{law_key}"
    if not isinstance(law, dict):
        table.notes.append(f"{key}_opt ~ {symbol}: not fitted: {clause(entry.get(law_key + '_why') or 'no law')}.")
        return
    ci = law.get("ci95") or {}
    for part, what in (("exponent", f"exponent k of {key}_opt = c·{symbol}^k"),
                       ("coefficient", f"coefficient c of {key}_opt = c·{symbol}^k")):
        table.rows.append([Cell(key), Cell(what), fit_cell(law.get(part), f"{where}.{part}"),
                           fit_cell(ci.get(part), f"{where}.ci95.{part}"), fit_cell(law.get("r2"), f"{where}.r2"),
                           fit_cell(law.get("n_groups"), f"{where}.n_groups")])


def table_hyperparameters(s: Study) -> Table:
    table = new_table("hyperparameters", ["hyperparameter", "what", "value", "95 % interval", "R²",
                                          "grid points"])
    section = s.fit.get("hyperparameters")
    if not isinstance(section, dict) or not section:
        table.notes.append(f"No hyperparameter laws: {clause(s.fit.get('hyperparameters_why') or 'nothing was swept')}.")
        return table
    for key, entry in section.items():
        if key.endswith("_why"):
            continue
        if not isinstance(entry, dict):
            table.notes.append(f"{key}: not fitted: {clause(section.get(key + '_why') or 'no result')}.")
            continue
        _hparam_law_rows(table, key, entry, "law_N", "N")
        _hparam_law_rows(table, key, entry, "law_C", "C")
        rec, where = entry.get("recommended"), f"hyperparameters.{key}.recommended"
        if isinstance(rec, dict):
            table.rows.append([Cell(key), Cell(f"recommended at C = {num(rec.get('flops'))} FLOPs"),
                               fit_cell(rec.get("value"), f"{where}.value"), fit_cell(rec.get("ci95"), f"{where}.ci95"),
                               Cell("–"), Cell("")])
            table.notes.append(f"Recommended {key}: prediction interval {interval(rec.get('pi95'))} (where one "
                               f"new grid point's optimum would fall).")
        else:
            table.notes.append(f"No recommended {key}: {clause(entry.get('recommended_why') or 'no law in C')}.")
        if entry.get("n_edge"):
            table.notes.append(f"{entry['n_edge']} of {entry.get('n_groups')} grid points have their best {key} at an "
                               f"edge of the sweep and are left out of the laws: widen the sweep there.")
    return blank_repeats(table)


# ----------------------------------------------------------------------------- held-out check

def table_holdout(s: Study) -> Table:
    table = new_table("holdout", ["run", "N", "D", "C (FLOPs)", f"actual {s.target}", f"predicted {s.target}",
                                  "relative error"])
    hold, why = s.section("holdout")
    if hold is None:
        table.notes.append(f"No held-out check: {clause(why)}.")
        return table
    by_run = s.metrics.set_index("run")
    for i, run in enumerate(hold["held_out"]):
        shape = by_run.loc[str(run)] if str(run) in by_run.index else None
        size = [Cell(human(shape[s.n_col])), Cell(human(shape[s.d_col])), Cell(num(shape[s.c_col]))] \
            if shape is not None else [Cell("–")] * 3
        table.rows.append([Cell(str(run)), *size, fit_cell(hold["actual"][i], f"holdout.actual.{i}"),
                           fit_cell(hold["predicted"][i], f"holdout.predicted.{i}"),
                           fit_cell(hold["rel_error"][i], f"holdout.rel_error.{i}", percent)])
    table.rows.append([Cell("max |relative error|"), *(Cell("") for _ in range(5)),
                       fit_cell(hold.get("max_abs_rel_error"), "holdout.max_abs_rel_error", percent)])
    return table


# ----------------------------------------------------------------------------- what to run next

def table_next_runs(s: Study) -> Table:
    """suggest.json's runs, with the expected interval of log N_opt before and after them."""
    table = new_table("next_runs", ["#", "model", "N (params)", "D (tokens)", "C (FLOPs)",
                                    "width of log N_opt after", "why"])
    plan = s.suggest
    if plan is None:
        table.notes.append("No suggestions: the report was built without `scalelab suggest`'s suggest.json.")
        return table
    for i, run in enumerate(plan["runs"], 1):
        table.rows.append([Cell(str(i)), Cell(str(run.get("model") or "–")), Cell(human(run.get("params"))),
                           Cell(human(run.get("tokens"))), Cell(num(run.get("flops"), 3)),
                           Cell(num(run.get("expected_width_after"), 3)), Cell(str(run.get("why", "")))])
    if not plan["runs"]:
        table.notes.append(f"No runs suggested: {clause(plan.get('why_none') or 'no reason given')}.")
        return table
    before, after = plan.get("width_now"), plan.get("width_after")
    table.notes.append(
        f"The 95 % interval of log N_opt at C = {num(plan.get('target_flops'))} FLOPs is {num(before, 3)} wide now "
        f"(N_opt within a factor {num(_exp_half(before), 3)} either way); after these {len(plan['runs'])} runs it is "
        f"expected to be {num(after, 3)} (a factor {num(_exp_half(after), 3)}), for {num(plan.get('flops'), 3)} "
        f"FLOPs of a {num(plan.get('budget_flops'), 3)} budget. Widths after each run are linearised forecasts; "
        f"refit after the runs to see the real one.")
    return table


def _exp_half(width):
    import math

    return math.exp(float(width) / 2) if finite(width) else None


# ----------------------------------------------------------------------------- runs and provenance

GRID_OPTIONAL = (("test_loss", "test loss"), ("test_bpb", "test bits/byte"), ("bleu", "BLEU"), ("rougeL", "ROUGE-L"),
                 ("flops_spent", "FLOPs spent"), ("wall_s", "wall time (s)"), ("trunk_wall_s", "trunk share (s)"))
GRID_HEADINGS_WSD = {"flops_spent": "FLOPs spent (own + trunk share)", "wall_s": "own wall time (s)"}


def _finite_sum(frame, column: str) -> float:
    return float(np.nansum(pd.to_numeric(frame[column], errors="coerce"))) if column in frame.columns else 0.0


def _wall_time_note(frame) -> str:
    """The study's training wall time: every run's own job plus, under WSD, every trunk segment
    (each charged to the run that branches at its end, so none is counted twice or left out)."""
    own, trunk = _finite_sum(frame, "wall_s"), _finite_sum(frame, "trunk_wall_s")
    if not own and not trunk:
        return ""
    if "trunk_wall_s" not in frame.columns:
        return f"Training wall time, every run's job: {own:,.0f} s."
    return (f"Training wall time, every training job: {own + trunk:,.0f} s ({own:,.0f} s in the runs' own "
            f"cooldown jobs + {trunk:,.0f} s in the WSD trunk segments, each charged to the run that branches "
            "at its end, as flops_spent is).")


def _test_tokens_note(frame) -> str:
    """When a run's test numbers stand for fewer tokens than eval.test_tokens asked for."""
    if "test_tokens" not in frame.columns or "test_tokens_requested" not in frame.columns:
        return ""
    used = pd.to_numeric(frame["test_tokens"], errors="coerce")
    asked = pd.to_numeric(frame["test_tokens_requested"], errors="coerce")
    short = used < asked
    if not short.any():
        return ""
    counts = sorted({int(v) for v in used[short]})
    return (f"Note: the test split is smaller than eval.test_tokens ({int(asked[short].max()):,} tokens): "
            f"{int(short.sum())} run(s) were scored on {', '.join(f'{c:,}' for c in counts)} test tokens, so their "
            "test loss, bits per byte, BLEU and ROUGE stand for that many.")


def table_grid(s: Study) -> Table:
    frame = s.metrics
    wsd = "trunk_wall_s" in frame.columns
    optional = [(c, GRID_HEADINGS_WSD.get(c, h) if wsd else h) for c, h in GRID_OPTIONAL if c in frame.columns]
    swept = "best_in_sweep" in frame.columns  # a study with sweeps: which run of each the fits use
    table = new_table("grid", ["run", "model", "N (params)", "D (tokens)", "C (FLOPs)", "status", "steps", s.target]
                      + [heading for _, heading in optional] + (["best in its sweep"] if swept else []))
    for _, row in frame.iterrows():
        status = row["status"]
        cells = [Cell(row["run"]), Cell(str(row.get("model", "–"))), Cell(human(row[s.n_col])),
                 Cell(human(row[s.d_col])), Cell(num(row[s.c_col], 3)),
                 Cell(status, css=f"status-{status}" if status in STATUSES else "status-other"),
                 Cell(num(row.get("steps"))), Cell(num(row[s.target]))]
        best = [Cell("yes" if str(row["best_in_sweep"]).strip().lower() in ("true", "1", "1.0") else "")] if swept else []
        table.rows.append(cells + [Cell(num(row[c], 3) if c == "flops_spent" else num(row[c])) for c, _ in optional]
                          + best)
    counts = frame["status"].value_counts()
    table.notes.append(", ".join(f"{counts.get(st, 0)} {st}" for st in STATUSES) + f" of {len(frame)} runs.")
    table.notes += [note for note in (_wall_time_note(frame), _test_tokens_note(frame)) if note]
    return table


SETTINGS_SECTIONS = ("data", "models", "grid", "train", "eval", "fit", "report", "code")


def _setting_rows(section: str, value, prefix: str = "") -> list[tuple[str, str, str]]:
    """(section, dotted key, value text) for every leaf of a settings section."""
    if isinstance(value, dict) and value and not (section == "models" and prefix):
        rows = []
        for key, item in value.items():
            rows += _setting_rows(section, item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, dict):  # a model's shape on one line; an empty section as {}
        text = ", ".join(f"{k} {_setting_text(v)}" for k, v in value.items()) or "{}"
    else:
        text = _setting_text(value)
    return [(section, prefix or "–", text)]


def _setting_text(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_setting_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _train_rows(per_model: dict) -> list[tuple[str, str, str]]:
    """Each train setting once: its value when every model has it, else the value per model."""
    keys = list(dict.fromkeys(k for settings in per_model.values() for k in settings))
    rows = []
    for key in keys:
        texts = {model: _setting_text(settings.get(key)) for model, settings in per_model.items()}
        shown = next(iter(texts.values())) if len(set(texts.values())) == 1 else \
            "; ".join(f"{model}: {text}" for model, text in texts.items())
        rows.append(("train", key, shown))
    return rows


def table_settings(s: Study) -> Table:
    table = new_table("settings", ["section", "setting", "value"])
    settings = s.study_settings
    if not settings:
        table.notes.append("No study settings were given to `scalelab report` (--settings); the workflow passes "
                           "them from the resolved config.")
        return table
    rows = []
    for section in [*SETTINGS_SECTIONS, *(k for k in settings if k not in SETTINGS_SECTIONS)]:
        if section not in settings:
            continue
        if section == "train" and isinstance(settings["train"], dict):
            rows += _train_rows(settings["train"])
        else:
            rows += _setting_rows(section, settings[section])
    table.rows = [[Cell(section), Cell(key), Cell(value)] for section, key, value in rows]
    table.notes.append("From the study's config after validation filled every default and each model's overrides "
                       "were applied; code: the fingerprint of each stage's code (`scalelab --version`).")
    return blank_repeats(table)


def _flat(value) -> str:
    """A meta.json entry in one line: nested objects as `key: value`, lists joined."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    big = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 1e4
    return human(value) if big else str(value)


def _meta_rows(meta: dict) -> list[tuple[str, str]]:
    rows = [(key, _flat(meta[key])) for key in ("corpus", "tokenizer", "format", "vocab_size", "dtype") if key in meta]
    for split, info in (meta.get("splits") or {}).items():
        if isinstance(info, dict):
            rows.append((f"{split} split", ", ".join(f"{human(info[k])} {k}" for k in ("documents", "tokens", "bytes")
                                                     if k in info)))
    if isinstance(meta.get("bytes_per_token"), dict):
        rows.append(("bytes per token", ", ".join(f"{k} {num(v)}" for k, v in meta["bytes_per_token"].items())))
    return rows


def _software() -> str:
    import matplotlib
    import numpy as np
    import pandas as pd

    return (f"scalelab {__version__}, python {platform.python_version()}, numpy {np.__version__}, "
            f"pandas {pd.__version__}, matplotlib {matplotlib.__version__}")


def table_reproducibility(s: Study) -> Table:
    table = new_table("reproducibility", ["what", "value"])
    rows = []
    if s.meta is None:
        table.notes.append(f"{s.meta_path} was not found, so the corpus and tokenizer are not described.")
    else:
        rows += _meta_rows(s.meta)
    for column, what in (("torch_version", "torch (training)"), ("lightning_version", "lightning (training)")):
        if column in s.metrics.columns:
            versions = sorted({str(v) for v in s.metrics[column].dropna()})
            rows.append((what, ", ".join(versions) if versions else "–"))
    rows.append(("fit", f"target {s.target}, N column {s.n_col}, D column {s.d_col}, C column {s.c_col}"))
    rows.append(("report software", _software()))
    table.rows = [[Cell(what), Cell(value)] for what, value in rows]
    return table

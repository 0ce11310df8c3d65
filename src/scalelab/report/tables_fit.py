"""Tables of what the fit and the design found: the fitted parameters, the IsoFLOP optima, the
compute-optimal allocation, the hyperparameter laws, the held-out check and the suggested next
runs. Every number from fit.json (or suggest.json) is a fit_cell: its exact value and its key."""

from __future__ import annotations

from .fmt import clause, count, finite, human, interval, num, percent
from .inputs import Study
from .tables import Cell, Table, blank_repeats, fit_cell, new_table
from .tables_metrics import add_metric_columns


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
            table.rows.append(
                [
                    Cell(fit_name),
                    Cell(key),
                    fit_cell(a3[key], f"approach3.{key}"),
                    fit_cell(ci.get(key), f"approach3.ci95.{key}"),
                    Cell(PARAMETER_MEANING[key]),
                ]
            )
    extras = [
        f"{k} = {num(a3[k])}"
        for k in ("huber_delta", "n_starts", "starts_at_optimum", "objective", "bootstrap", "bootstrap_failed")
        if finite(a3.get(k))
    ]
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
        table.notes.append(
            f"Power law in {variable}: {key} sits on its bound (E between 0 and the lowest loss, "
            f"exponent ≥ 0), so it has no interval: a covariance interval would cross the bound."
        )
    for key in keys + ("r2",):
        if key in section:
            table.rows.append(
                [
                    Cell(fit_name),
                    Cell(key),
                    fit_cell(section[key], f"{name}.{key}"),
                    fit_cell(ci.get(key), f"{name}.ci95.{key}") if key in ci else Cell("–"),
                    Cell(PARAMETER_MEANING[key]),
                ]
            )
    ols, exponent = section.get("loglog_ols"), keys[2]  # the pure power law, log L = log A − k·log x
    if isinstance(ols, dict) and exponent in ols:
        table.rows.append(
            [
                Cell(f"{fit_name}, log-log OLS"),
                Cell(exponent),
                fit_cell(ols[exponent], f"{name}.loglog_ols.{exponent}"),
                fit_cell((ols.get("ci95") or {}).get(exponent), f"{name}.loglog_ols.ci95.{exponent}"),
                Cell(f"{PARAMETER_MEANING[exponent]}, without E"),
            ]
        )


def _approach2_rows(s: Study, table: Table) -> None:
    a2, why = s.section("approach2")
    if a2 is None:
        table.notes.append(f"Approach 2 (IsoFLOP): not fitted: {clause(why)}.")
        return
    for key in ("a", "b"):
        if finite(a2.get(key)):
            table.rows.append(
                [
                    Cell("Approach 2, IsoFLOP optima"),
                    Cell(key),
                    fit_cell(a2[key], f"approach2.{key}"),
                    fit_cell(a2.get(f"{key}_ci95"), f"approach2.{key}_ci95"),
                    Cell(PARAMETER_MEANING[key]),
                ]
            )
    if a2.get("exponents_why"):
        table.notes.append(f"Approach 2 exponents: not fitted: {clause(a2['exponents_why'])}.")
    elif finite(a2.get("a")) and not a2.get("a_ci95"):
        table.notes.append(
            "Approach 2 exponents have no interval: a line through two budgets leaves no degrees of freedom."
            if len(a2["budgets"]) == 2
            else "fit.json gives no interval for the Approach 2 exponents."
        )


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
            table.rows.append(
                [
                    Cell(label),
                    Cell(key),
                    fit_cell(value, f"forms.{name}.params.{key}"),
                    fit_cell(ci.get(key), f"forms.{name}.ci95.{key}"),
                    Cell(meaning),
                ]
            )


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
    table = new_table(
        "isoflop_optima",
        ["compute C (FLOPs)", "N_opt (params)", "D_opt (tokens)", f"{s.target} at N_opt", "model sizes"],
    )
    a2, why = s.section("approach2")
    if a2 is None:
        table.notes.append(f"No IsoFLOP optima: {clause(why)}.")
        return table
    for i, b in enumerate(a2["budgets"]):
        where = f"approach2.budgets.{i}"
        table.rows.append(
            [
                fit_cell(b.get("flops"), f"{where}.flops"),
                fit_cell(b.get("n_opt"), f"{where}.n_opt", count),
                fit_cell(b.get("d_opt"), f"{where}.d_opt", count),
                fit_cell(b.get("loss_opt"), f"{where}.loss_opt"),
                fit_cell(b.get("n_points"), f"{where}.n_points"),
            ]
        )
    return table


def table_allocation(s: Study) -> Table:
    allocation, why = s.section("allocation")
    with_ci = bool(allocation) and any(a.get("n_opt_ci95") for a in allocation)
    columns = [
        "compute C (FLOPs)",
        "N_opt (params)",
        "D_opt (tokens)",
        "tokens per parameter",
        f"predicted {s.target}",
        "95 % interval",
    ]
    table = new_table("allocation", columns + (["N_opt 95 %", "D_opt 95 %"] if with_ci else []))
    if allocation is None:
        table.notes.append(f"No allocation predictions: {clause(why)}.")
        return table
    for i, a in enumerate(allocation):
        row = [
            fit_cell(a.get(k), f"allocation.{i}.{k}", count if k in ("n_opt", "d_opt") else num)
            for k in ("flops", "n_opt", "d_opt", "tokens_per_param", "loss_pred", "loss_ci95")
        ]
        if with_ci:
            row += [fit_cell(a.get(k), f"allocation.{i}.{k}", count) for k in ("n_opt_ci95", "d_opt_ci95")]
        table.rows.append(row)
    for a in allocation:
        if a.get("extrapolation"):
            table.notes.append(
                f"At C = {num(a.get('flops'))} FLOPs the optimum lies outside the runs: "
                f"{a['extrapolation']}; its interval includes the law's extrapolation scatter."
            )
    forms = {a.get("form") for a in allocation} - {None}
    mixed = any(a.get("n_opt_ci95_point_law_bootstrap") is not None for a in allocation)
    if forms <= {"chinchilla"} and not mixed:
        table.notes.append(
            "From the Approach 3 law: N_opt = G·(C/6)^a, D_opt = (C/6)^b / G; intervals from the bootstrap."
        )
    elif not mixed:
        table.notes.append(
            f"From the {', '.join(sorted(forms))} law: the N, D with C = 6·N·D that minimise it. "
            "The N_opt and D_opt intervals are over its bootstrap resamples (each one's own "
            "optimum); the loss interval is fit.json's prediction interval."
        )
    else:
        table.notes.append(
            f"From the {', '.join(sorted(forms))} law: the N, D with C = 6·N·D that minimise it. "
            "The N_opt and D_opt intervals include form uncertainty: every fitted form by its "
            "weight, each widened by how far its N_opt drifted along the rolling origin, per e-fold "
            "of compute beyond the runs; the loss interval is fit.json's prediction interval."
        )
        for a in allocation:
            own = a.get("n_opt_ci95_point_law_bootstrap")
            if own:
                table.notes.append(
                    f"At C = {num(a.get('flops'))} FLOPs the {a.get('form')} bootstrap alone would "
                    f"give N_opt in [{count(own[0])}, {count(own[1])}]."
                )
    rule = (s.fit.get("validation") or {}).get("rule")
    if rule:
        table.notes.append(f"Point law: {rule}.")
    add_metric_columns(table, s)
    return table


# ----------------------------------------------------------------------------- hyperparameter laws


def _hparam_law_rows(table: Table, key: str, entry: dict, law_key: str, symbol: str) -> None:
    law, where = entry.get(law_key), f"hyperparameters.{key}.{law_key}"
    if not isinstance(law, dict):
        table.notes.append(f"{key}_opt ~ {symbol}: not fitted: {clause(entry.get(law_key + '_why') or 'no law')}.")
        return
    ci = law.get("ci95") or {}
    for part, what in (
        ("exponent", f"exponent k of {key}_opt = c·{symbol}^k"),
        ("coefficient", f"coefficient c of {key}_opt = c·{symbol}^k"),
    ):
        table.rows.append(
            [
                Cell(key),
                Cell(what),
                fit_cell(law.get(part), f"{where}.{part}"),
                fit_cell(ci.get(part), f"{where}.ci95.{part}"),
                fit_cell(law.get("r2"), f"{where}.r2"),
                fit_cell(law.get("n_groups"), f"{where}.n_groups"),
            ]
        )


def table_hyperparameters(s: Study) -> Table:
    table = new_table("hyperparameters", ["hyperparameter", "what", "value", "95 % interval", "R²", "grid points"])
    section = s.fit.get("hyperparameters")
    if not isinstance(section, dict) or not section:
        table.notes.append(
            f"No hyperparameter laws: {clause(s.fit.get('hyperparameters_why') or 'nothing was swept')}."
        )
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
            table.rows.append(
                [
                    Cell(key),
                    Cell(f"recommended at C = {num(rec.get('flops'))} FLOPs"),
                    fit_cell(rec.get("value"), f"{where}.value"),
                    fit_cell(rec.get("ci95"), f"{where}.ci95"),
                    Cell("–"),
                    Cell(""),
                ]
            )
            table.notes.append(
                f"Recommended {key}: prediction interval {interval(rec.get('pi95'))} (where one "
                f"new grid point's optimum would fall)."
            )
        else:
            table.notes.append(f"No recommended {key}: {clause(entry.get('recommended_why') or 'no law in C')}.")
        if entry.get("n_edge"):
            table.notes.append(
                f"{entry['n_edge']} of {entry.get('n_groups')} grid points have their best {key} at an "
                f"edge of the sweep and are left out of the laws: widen the sweep there."
            )
    return blank_repeats(table)


# ----------------------------------------------------------------------------- held-out check


def table_holdout(s: Study) -> Table:
    table = new_table(
        "holdout", ["run", "N", "D", "C (FLOPs)", f"actual {s.target}", f"predicted {s.target}", "relative error"]
    )
    hold, why = s.section("holdout")
    if hold is None:
        table.notes.append(f"No held-out check: {clause(why)}.")
        return table
    by_run = s.metrics.set_index("run")
    for i, run in enumerate(hold["held_out"]):
        shape = by_run.loc[str(run)] if str(run) in by_run.index else None
        size = (
            [Cell(human(shape[s.n_col])), Cell(human(shape[s.d_col])), Cell(num(shape[s.c_col]))]
            if shape is not None
            else [Cell("–")] * 3
        )
        table.rows.append(
            [
                Cell(str(run)),
                *size,
                fit_cell(hold["actual"][i], f"holdout.actual.{i}"),
                fit_cell(hold["predicted"][i], f"holdout.predicted.{i}"),
                fit_cell(hold["rel_error"][i], f"holdout.rel_error.{i}", percent),
            ]
        )
    table.rows.append(
        [
            Cell("max |relative error|"),
            *(Cell("") for _ in range(5)),
            fit_cell(hold.get("max_abs_rel_error"), "holdout.max_abs_rel_error", percent),
        ]
    )
    if hold.get("what"):
        table.notes.append(f"Held out: {hold['what']}.")
    return table


# ----------------------------------------------------------------------------- what to run next


def table_next_runs(s: Study) -> Table:
    """suggest.json's runs, with the expected interval of log N_opt before and after them."""
    table = new_table(
        "next_runs", ["#", "model", "N (params)", "D (tokens)", "C (FLOPs)", "width of log N_opt after", "why"]
    )
    plan = s.suggest
    if plan is None:
        table.notes.append("No suggestions: the report was built without `scalelab suggest`'s suggest.json.")
        return table
    for i, run in enumerate(plan["runs"], 1):
        table.rows.append(
            [
                Cell(str(i)),
                Cell(str(run.get("model") or "–")),
                Cell(human(run.get("params"))),
                Cell(human(run.get("tokens"))),
                Cell(num(run.get("flops"), 3)),
                Cell(num(run.get("expected_width_after"), 3)),
                Cell(str(run.get("why", ""))),
            ]
        )
    if not plan["runs"]:
        table.notes.append(f"No runs suggested: {clause(plan.get('why_none') or 'no reason given')}.")
        return table
    before, after = plan.get("width_now"), plan.get("width_after")
    table.notes.append(
        f"The 95 % interval of log N_opt at C = {num(plan.get('target_flops'))} FLOPs is {num(before, 3)} wide now "
        f"(N_opt within a factor {num(_exp_half(before), 3)} either way); after these {len(plan['runs'])} runs it is "
        f"expected to be {num(after, 3)} (a factor {num(_exp_half(after), 3)}), for {num(plan.get('flops'), 3)} "
        f"FLOPs of a {num(plan.get('budget_flops'), 3)} budget. Widths after each run are linearised forecasts; "
        f"refit after the runs to see the real one."
    )
    return table


def _exp_half(width):
    import math

    return math.exp(float(width) / 2) if finite(width) else None

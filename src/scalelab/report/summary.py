"""summary.txt: the few lines a study ends with (law, exponents, held-out error, next budget,
run counts), and `print_summary`, which the Snakefile's onsuccess handler calls to print it.
Standard library only, so that the handler stays quick."""

from __future__ import annotations

import math
import os
from pathlib import Path

from .fmt import clause, counted_statuses, finite, human, interval, num, percent


def _law_lines(s) -> list[str]:
    a3, why = s.section("approach3")
    if a3 is None:
        return [f"  fitted law    not identified: {clause(why)}"]
    ci = a3.get("ci95") or {}
    # When another form was chosen, these lines are the Chinchilla form's (its alpha, beta and
    # allocation exponents are the ones papers quote), and they say so.
    chosen = s.fit.get("chosen_form")
    label, note = (
        ("fitted law", "")
        if chosen in (None, "chinchilla")
        else ("chinchilla", f"; the {chosen} form was chosen, these are Chinchilla's exponents")
    )
    lines = [
        f"  {label:<13} {s.target} = {num(a3['E'])} + {num(a3['A'])}/N^{num(a3['alpha'])} + "
        f"{num(a3['B'])}/D^{num(a3['beta'])}   (Approach 3, {s.fit['n_points']} runs{note})"
    ]
    boot = (
        f"95 %, {a3['bootstrap']} bootstrap resamples"
        if a3.get("bootstrap")
        else "no bootstrap, so no intervals"
        if a3.get("bootstrap") == 0
        else "95 %"
    )
    lines.append(
        f"  exponents     alpha = {num(a3['alpha'])} {interval(ci.get('alpha'))}   "
        f"beta = {num(a3['beta'])} {interval(ci.get('beta'))}   ({boot})"
    )
    if "a" in a3 and "b" in a3:
        lines.append(
            f"  allocation    N_opt ∝ C^{num(a3['a'])} {interval(ci.get('a'))}   "
            f"D_opt ∝ C^{num(a3['b'])} {interval(ci.get('b'))}"
        )
    return lines


def _forms_lines(s) -> list[str]:
    """The chosen law form and, before any number, what it does not identify and the fit's warnings."""
    forms, chosen = s.fit.get("forms"), s.fit.get("chosen_form")
    if not isinstance(forms, dict):
        return []
    if not chosen:
        return [f"  law form      none fitted: {clause(s.fit.get('chosen_form_why') or 'no reason recorded')}"]
    section = forms.get(chosen) or {}
    params = section.get("params") or {}
    shown = ", ".join(f"{k} {num(v)}" for k, v in params.items() if k not in (section.get("not_identified") or {}))
    lines = [f"  law form      {chosen}: {section.get('title', '')}"]
    for key, why in (section.get("not_identified") or {}).items():
        lines.append(f"  NOT IDENTIFIED {key}: {why}")
    lines.append(f"                {shown}; chosen because: {s.fit.get('chosen_form_why', '')}")
    rule = (s.fit.get("validation") or {}).get("rule")
    if rule:
        lines.append(f"  form rule     {rule}")
    for warning in s.fit.get("warnings") or []:
        if not warning.startswith(f"{chosen}: not identified"):
            lines.append(f"  WARNING       {warning}")
    return lines


def _holdout_line(s) -> str:
    hold, why = s.section("holdout")
    if hold is None:
        return f"  held-out      no check: {clause(why)}"
    runs = hold.get("held_out") or []
    listed = ", ".join(map(str, runs[:4])) + (", ..." if len(runs) > 4 else "")
    what = f"the largest size's {len(runs)} run(s)" if hold.get("what") else f"{len(runs)} run(s)"
    line = (
        f"  held-out      max |relative error| {percent(hold.get('max_abs_rel_error'))} on "
        f"{what} predicted from the rest ({listed})"
    )
    if hold.get("inside") is not None and hold.get("low") is not None:
        worst = max(range(len(runs)), key=lambda i: abs(hold["rel_error"][i]), default=None)
        if worst is not None:
            inside = sum(1 for v in hold["inside"] if v)
            line += (
                f"; {hold.get('form', '')} predicted {num(hold['predicted'][worst])} "
                f"{interval([hold['low'][worst], hold['high'][worst]])} for {runs[worst]}, actual "
                f"{num(hold['actual'][worst])} ({'inside' if hold['inside'][worst] else 'OUTSIDE'} its 95 % "
                f"prediction interval); {inside} of {len(runs)} inside"
            )
    return line


def _disagreement_line(s) -> list[str]:
    rows = s.fit.get("forms_disagreement")
    if not rows:
        return []
    first = rows[0]
    shown = ", ".join(f"{k} {num(v)}" for k, v in (first.get("loss") or {}).items())
    inside = first.get("disagree") is False and not first.get("outside_chosen_interval")
    verdict = (
        "every form within the chosen form's 95 % interval"
        if inside
        else "the forms DISAGREE beyond the chosen form's interval"
        if first.get("disagree")
        else "agreement not checked"
    )
    return [
        f"  forms at C    {num(first.get('flops'))}: {shown} (spread {percent(first.get('rel_spread'))}); {verdict}"
    ]


def _next_budget_line(s) -> str:
    allocation, why = s.section("allocation")
    if allocation is None:
        return f"  next budget   no prediction: {clause(why)}"
    nxt = min(allocation, key=lambda a: float(a.get("flops") or math.inf))
    return (
        f"  next budget   C = {num(nxt.get('flops'))} FLOPs (fit.json's allocation): "
        f"N_opt = {human(nxt.get('n_opt'))} params, "
        f"D_opt = {human(nxt.get('d_opt'))} tokens ({num(nxt.get('tokens_per_param'), 3)} tokens/param), "
        f"predicted {s.target} {num(nxt.get('loss_pred'))} {interval(nxt.get('loss_ci95'))}"
        + (f" ({nxt['form']} form, 95 % prediction interval)" if nxt.get("form") else "")
        + (
            f"; N_opt 95 % {interval(nxt['n_opt_ci95'], human)} params with form uncertainty"
            if nxt.get("n_opt_ci95_point_law_bootstrap") is not None and nxt.get("n_opt_ci95")
            else ""
        )
        + (f"; {nxt['extrapolation']}" if nxt.get("extrapolation") else "")
        + _beyond_corpus(s, nxt.get("d_opt"))
    )


def _beyond_corpus(s, tokens) -> str:
    """A warning when the next budget's D_opt is more than the corpus's train split: that run would
    repeat its data (refused unless data.allow_repeat), which the law does not model."""
    try:
        train = float(((s.meta or {}).get("splits") or {}).get("train", {}).get("tokens"))
    except (TypeError, ValueError, AttributeError):
        return ""
    if not (finite(tokens) and finite(train) and train > 0 and float(tokens) > train):
        return ""
    return (
        f"; D_opt is {float(tokens) / train:.2g}x the corpus's train split ({human(train)} tokens): "
        "that run would repeat its data"
    )


def _compute_line(s) -> str:
    """FLOPs the trained runs cost (sum of flops_spent: WSD trunks are shared, see scalelab.plan.wsd)
    against the same runs trained independently (sum of flops)."""
    table = s.metrics
    if "flops" not in table.columns:
        return "  compute       –"
    independent = table["flops"].astype(float)
    spent = table["flops_spent"].astype(float).fillna(independent) if "flops_spent" in table.columns else independent
    done = independent.notna()
    total, alone = float(spent[done].sum()), float(independent[done].sum())
    ratio = f" (ratio {total / alone:.3f})" if alone > 0 else ""
    return f"  compute       {num(total)} FLOPs spent vs {num(alone)} as independent runs{ratio}"


def _test_tokens_lines(s) -> list[str]:
    """A note when the test numbers stand for fewer tokens than eval.test_tokens asked for."""
    table = s.metrics
    if "test_tokens" not in table.columns or "test_tokens_requested" not in table.columns:
        return []
    pairs = [
        (float(u), float(a))
        for u, a in zip(table["test_tokens"], table["test_tokens_requested"])
        if isinstance(u, (int, float)) and isinstance(a, (int, float)) and u == u and a == a and u < a
    ]
    if not pairs:
        return []
    used = ", ".join(f"{int(u):,}" for u in sorted({u for u, _ in pairs}))
    return [
        f"  test tokens   NOTE: {len(pairs)} run(s) scored on {used} test tokens, fewer than eval.test_tokens "
        f"{int(max(a for _, a in pairs)):,}: the test split is that small"
    ]


def _hparam_lines(s) -> list[str]:
    """One line per swept hyperparameter: the value its law recommends at the next budget."""
    section = s.fit.get("hyperparameters")
    swept = (s.fit.get("settings") or {}).get("sweep_keys") or []
    if not isinstance(section, dict) or not section:
        if not swept:
            return []  # nothing swept: nothing to say
        why = clause(s.fit.get("hyperparameters_why") or "fit.json has no hyperparameters result")
        return [f"  {'next ' + '/'.join(map(str, swept)):<13} no recommendation: {why}"]
    lines = []
    for key, entry in section.items():
        if key.endswith("_why"):
            continue
        rec = entry.get("recommended") if isinstance(entry, dict) else None
        if isinstance(rec, dict) and finite(rec.get("value")):
            edge = f"; {entry['n_edge']} of {entry.get('n_groups')} optima at an edge" if entry.get("n_edge") else ""
            lines.append(
                f"  {'next ' + key:<13} {key} = {num(rec['value'])} {interval(rec.get('ci95'))} at "
                f"C = {num(rec.get('flops'))} FLOPs (prediction interval {interval(rec.get('pi95'))}{edge})"
            )
        else:
            why = entry.get("recommended_why") if isinstance(entry, dict) else section.get(f"{key}_why")
            lines.append(f"  {'next ' + key:<13} no recommendation: {clause(why or 'no law in C')}")
    return lines


def summary_text(s, index_html: Path, results: Path | None = None) -> str:
    """The summary of a Study (scalelab.report.inputs), ending with the path of its page relative
    to the study folder (the parent of `results`, the results folder; else the working directory),
    so a copied study names its own; with `results`, also the study's disk use by part."""
    from .fit_health import fit_health_lines  # here: print_summary imports no numpy or pandas
    from .tables_metrics import metric_summary_lines

    counts = s.metrics["status"].value_counts()
    lines = [
        f"scalelab report: {s.title}",
        *_forms_lines(s),
        *fit_health_lines(s),
        *_law_lines(s),
        _holdout_line(s),
        _next_budget_line(s),
        *_disagreement_line(s),
        *_hparam_lines(s),
        *metric_summary_lines(s),
        "  runs          " + ", ".join(f"{counts.get(st, 0)} {st}" for st in counted_statuses(counts)),
        _compute_line(s),
        *_test_tokens_lines(s),
    ]
    study = Path(".")
    if results is not None:
        from ..store.disk import usage_line

        lines.append(f"  disk          {usage_line(results)} (`scalelab prune` frees what no run needs)")
        study = Path(results).parent  # the study folder holds results/
    lines.append(f"  report        {os.path.relpath(Path(index_html).resolve(), study.resolve())}")
    if s.suggest is not None:  # last: the single most valuable next run
        best = s.suggest.get("best_run") or "none suggested: " + clause(s.suggest.get("why_none") or "no reason given")
        target = s.suggest.get("target_flops")
        if s.suggest.get("best_run") and isinstance(target, (int, float)):
            best += f" (to pin down N_opt at suggest's target C = {num(target)} FLOPs, not the next budget above)"
        lines.append(f"  next run      {best}")
    return "\n".join(lines) + "\n"


def print_summary(report_dir: str | os.PathLike = "results/report", since: float | None = None) -> bool:
    """Print summary.txt if a report exists; True if printed.

    With `since` (a time.time() timestamp, e.g. when the Snakemake invocation started), print only
    a summary.txt written at or after it: after `snakemake --until fit` the old report's summary
    stays silent. Returns False, printing nothing, when there is no such summary."""
    path = Path(report_dir) / "summary.txt"
    try:
        written = path.stat().st_mtime
        text = path.read_text() if path.is_file() else None
    except OSError:
        return False
    if text is None or (since is not None and written < since):
        return False
    print(text, end="", flush=True)
    return True

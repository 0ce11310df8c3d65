"""fit.txt's and fit.json's law-forms section (`render_forms`): every form's fit, its rolling-origin
checks and its parameters, and the tables forms.csv, forms_bootstrap.csv and residuals.csv."""

from __future__ import annotations

import pandas as pd

from .outputs import Draft, table_text

FORMS_COLUMNS = ["form", "parameter", "estimate", "ci_low", "ci_high", "not_identified"]


def render_forms(out: Draft, forms, validation: dict) -> None:
    """fit.json's forms, chosen_form and why, validation; the forms, forms_bootstrap and residuals tables."""
    out.result["forms"] = forms.sections
    out.result["chosen_form"] = forms.chosen
    out.result["chosen_form_why"] = forms.why
    out.result["validation"] = validation
    rows = []
    checks = ", ".join(f"{c['name']} ({c['n_train']} fit, {c['n_test']} predicted)" for c in validation["checks"])
    out.lines += [
        "",
        f"== Law forms: point law {forms.chosen} ({forms.why}) ==",
        f"rule: {validation['rule']}",
        f"rolling-origin checks (axis:k = fitted on the k smallest groups of that axis, every larger run "
        f"predicted): {checks or 'none possible'}",
    ]
    for name, section in forms.sections.items():
        if not section.get("fitted"):
            out.lines.append(f"{name}: not fitted: {section['why']}")
            continue
        for key, value in section["params"].items():
            low, high = section["ci95"].get(key) or (None, None)
            rows.append(
                {
                    "form": name,
                    "parameter": key,
                    "estimate": value,
                    "ci_low": low,
                    "ci_high": high,
                    "not_identified": section["not_identified"].get(key, ""),
                }
            )
        out.lines += form_lines(name, section, rows)
        corr = section.get("theta_correlation")
        if corr:
            out.lines += [
                f"parameter correlation (bootstrap, fitted coordinates {', '.join(corr['of'])}):",
                table_text(pd.DataFrame(corr["matrix"], index=corr["of"], columns=corr["of"]), index=True),
            ]
        if section["not_identified"] and name == forms.chosen:
            out.result.setdefault("warnings", []).append(
                f"{name}: not identified: " + "; ".join(f"{k} ({why})" for k, why in section["not_identified"].items())
            )
    out.tables["forms"] = pd.DataFrame(rows, columns=FORMS_COLUMNS)
    out.tables["forms_bootstrap"] = forms.samples
    out.tables["residuals"] = forms.residuals
    if len(forms.residuals):
        out.lines += [
            "",
            "== Per-run fitted values and relative residuals ((actual - predicted) / predicted) ==",
            table_text(
                forms.residuals.pivot_table(
                    index=["params", "tokens", "run", "actual"], columns="form", values="rel_residual", sort=True
                ),
                index=True,
            ),
        ]


def form_lines(name: str, section: dict, rows: list[dict]) -> list[str]:
    """fit.txt's lines of one fitted form: fit, scatter, checks, drift and its parameters."""
    checks = "; ".join(
        f"{k} {100 * c['mean_abs_rel_error']:.2f} %" if "mean_abs_rel_error" in c else f"{k} not possible"
        for k, c in section["validation"].items()
    )
    score = "n/a" if section["score"] is None else f"{100 * section['score']:.2f} %"
    return [
        "",
        f"-- {name}: {section['title']}",
        *(f"NOT IDENTIFIED: {k}: {why}" for k, why in section["not_identified"].items()),
        f"objective {section['objective']:.6g} (summed Huber, delta {section['huber_delta']:g}); "
        f"L-BFGS-B {'converged' if section['converged'] else 'did NOT converge'} "
        f"({section['optimizer_message']}); {section['starts_at_optimum']} of {section['refined']} "
        f"refined starts reached it ({section['n_starts']} scored)",
        f"residual scatter of single runs: {100 * section['residual_sigma']:.3g} % (log loss, n - k dof)",
        "extrapolation scatter: "
        + (
            "not learnt (no out-of-sample check left its refit's range)"
            if section.get("extrapolation_sigma") is None
            else f"{100 * section['extrapolation_sigma']:.3g} % (log loss) per e-fold "
            "outside the fitted runs (one-sided 75 % upper bound from the "
            "rolling checks)"
        ),
        f"rolling-check |relative error|: {checks}; mean {score}; mixture weight {section['weight']:.3g}",
        "drift of log N_opt along the rolling origin: "
        + (
            "n/a"
            + (
                " (no rolling check whose refit stops at half the top compute or below)"
                if "optimum_drift" in section
                else ""
            )
            if section.get("optimum_drift") is None
            else f"{section['optimum_drift']:.3g} per e-fold of compute the fit added, from the checks whose "
            "refit stops at half the top compute or below (it widens the N_opt interval in proportion to the "
            "e-folds beyond the largest run)"
        ),
        table_text(pd.DataFrame([r for r in rows if r["form"] == name]).drop(columns="form")),
    ]

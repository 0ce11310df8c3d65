"""The law the report's curves draw: fit.json's chosen form, else the Approach 3 law.

Figures 1–3 draw the form the fit chose (`chosen_form`), so that the curves, the stars and the
summary speak of one law. Where the chosen form cannot be drawn (none was fitted, it needs the
unique tokens per run, or it has no compute-optimal split over the budgets shown) the figure
falls back to the Approach 3 (Chinchilla) law, and `fallback` says why, for the caption.
A Chinchilla-chosen study draws the `approach3` section's numbers, as before the forms existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..laws.law import FORMS, LAW_KEYS, optimal_allocation
from .fmt import clause


@dataclass(frozen=True)
class DrawnLaw:
    form: str  # a key of scalelab.laws.law.FORMS: "kaplan", "chinchilla"
    params: dict  # the form's natural parameters
    fallback: str = ""  # "" when this is the chosen form, else why the chosen one is not drawn

    @property
    def legend(self) -> str:
        return f"{self.form} fit"

    @property
    def words(self) -> str:
        """The law as a caption names it: its name, its formula, and whether the fit chose it."""
        name = "Approach 3 (chinchilla)" if self.form == "chinchilla" else self.form
        formula = FORMS[self.form].title
        return f"{name} law {formula}" + ("" if self.fallback else ", the form the fit chose")

    def loss(self, params, tokens) -> np.ndarray:
        """L at N = params, D = tokens (broadcast)."""
        with np.errstate(all="ignore"):
            return np.asarray(FORMS[self.form].loss(self.params, params, tokens), float)

    def optimum(self, flops) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) at each C = 6·N·D; NaN where the law has no optimum there."""
        with np.errstate(all="ignore"):
            n_opt, d_opt = optimal_allocation(FORMS[self.form], self.params, flops)
        return np.asarray(n_opt, float), np.asarray(d_opt, float)


def _approach3(fit: dict) -> dict | None:
    a3 = fit.get("approach3")
    if not isinstance(a3, dict) or not all(isinstance(a3.get(k), (int, float)) for k in LAW_KEYS):
        return None
    return {k: float(a3[k]) for k in LAW_KEYS}


def _chosen(fit: dict) -> tuple[DrawnLaw | None, str]:
    """(the chosen form's law, '') or (None, why it cannot be drawn)."""
    chosen, forms = fit.get("chosen_form"), fit.get("forms")
    if not chosen or not isinstance(forms, dict):
        return None, f"no law form was chosen ({clause(fit.get('chosen_form_why') or 'fit.json has no forms')})"
    section = forms.get(chosen)
    if chosen not in FORMS or not isinstance(section, dict) or not section.get("fitted"):
        return None, f"the chosen form {chosen} was not fitted"
    if FORMS[chosen].needs:
        return None, f"the chosen form {chosen} needs each run's {', '.join(FORMS[chosen].needs)}"
    params = section.get("params") or {}
    if not all(isinstance(params.get(k), (int, float)) for k in FORMS[chosen].param_names):
        return None, f"fit.json gives no parameters for the chosen form {chosen}"
    return DrawnLaw(chosen, {k: float(params[k]) for k in FORMS[chosen].param_names}), ""


def curve_law(fit: dict) -> DrawnLaw | None:
    """The law of the loss-vs-N and loss-vs-D curves: the chosen form, else Approach 3, else None."""
    law, why = _chosen(fit)
    a3 = _approach3(fit)
    if law is not None:
        # Chinchilla chosen: the approach3 section's numbers, the curves the report always drew.
        return DrawnLaw("chinchilla", a3) if law.form == "chinchilla" and a3 else law
    return None if a3 is None else DrawnLaw("chinchilla", a3, fallback=why)


def frontier_law(fit: dict, flops) -> DrawnLaw | None:
    """The law of the frontier over these budgets: the curves' law where it has an optimum at
    some of them, else Approach 3 (with why), else None."""
    law = curve_law(fit)
    if law is None or not np.size(flops) or np.isfinite(law.optimum(flops)[0]).any():
        return law
    a3 = _approach3(fit)
    if law.form == "chinchilla" or a3 is None:
        return law  # nothing else to draw: the figure says the line is missing
    return DrawnLaw(
        "chinchilla", a3, fallback=f"the chosen form {law.form} has no compute-optimal split over these budgets"
    )

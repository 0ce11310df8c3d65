"""Drawing the registry's figures, in its order, and the captions of what was drawn.

The figures themselves are one `fig_<name>` function each, in a module by concern: the law
(figures_law), the sweeps (figures_sweeps), the runs (figures_runs) and the checks of the law
(figures_checks); the registry names each one's module. A figure function takes the Study and
returns (figure, note). The caption is built from what was drawn: the registry's caption (what
every drawing of the figure shows), then one sentence for each optional artist the figure holds
(ARTIST_CAPTIONS, keyed by the artist's gid), then the note (say, why the fitted curves are
missing). When the data cannot support the figure at all it raises CannotDraw with the one
sentence that says why: the figure is then left out of the page, of figures/ and so of
Snakemake's report, and the page says in one line why it is absent.
Fitted curves never set the axis limits (plotting.fit_line): the data do.
The law is scalelab.laws.law's, the one copy that fit uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt

from .drawn_law import curve_law, frontier_law
from .figures_law import allocation_budgets, frontier_flops
from .fmt import sentence
from .inputs import Study
from .plotting import STYLE, CannotDraw, artist_gids, limits_from_data, save_figure
from .registry import FIGURES


@dataclass
class FigureBlock:
    name: str
    number: int
    title: str
    caption: str
    png: bytes = b""
    why: str = ""  # set when the figure could not be drawn


# name -> {gid: sentence}, in caption order: what an optional artist is, said only when drawn.
ARTIST_CAPTIONS = {
    "loss_vs_params": {
        "fit-law": "The curves are, at each token count, the fitted {curve_law}; they are clipped to the axes, "
        "which the data set.",
        "joined": "There is no fitted law, so the points of each token count are joined to guide the eye.",
        "off-grid": "Hollow grey points are runs off the grid (IsoFLOP runs).",
    },
    "loss_vs_tokens": {
        "fit-law": "The curves are, at each size, the fitted {curve_law}; they are clipped to the axes, which the "
        "data set.",
        "joined": "There is no fitted law, so the points of each size are joined to guide the eye.",
        "off-grid": "Hollow grey points are runs off the grid (IsoFLOP runs).",
    },
    "isoflop": {
        "fit-curve": "Each curve is the Akima spline in log N through one budget's losses, whose minimum is its "
        "N_opt (Approach 2).",
        "fit-parabola": "Each curve is the parabola in log N fitted to one budget.",
        "optimum": "Filled diamonds are each budget's compute-optimal size N_opt as fit.json gives it.",
        "optimum-outside": "A hollow diamond is a minimum outside the sampled sizes.",
    },
    "frontier": {
        "envelope": "Open circles on the N and D panels are not optima: they are the runs on the loss envelope, "
        "each with a lower loss than every run of less or equal compute, the measured frontier.",
        "approach2-optima": "Black diamonds are the IsoFLOP optima (Approach 2).",
        "fit-approach2": "The dotted line is the Approach 2 fit N_opt = G·C^a.",
        "fit-approach3": "The red line is the Approach 3 allocation N_opt = G (C/6)^a, D_opt = (C/6)^b / G "
        "over the measured compute, and the law's loss there: the {frontier_law}.",
        "fit-frontier": "The red line is the compute-optimal split N_opt(C), D_opt(C) at C = 6·N·D that minimises "
        "the {frontier_law}, over the measured compute, and the law's loss there.",
        "fit-extrapolation": "Dashed red: the same law extrapolated beyond the largest run (shaded region).",
        "predicted": "Stars are the budgets fit.json predicts{allocation_form}.",
        "interval": "{interval}",
    },
    "lr_sensitivity": {
        "optimum": "Filled diamonds mark each size's optimum inside the sweep (fit.json's quadratic in log lr "
        "through the best value and its neighbours, else the lowest measured point).",
        "edge": "A hollow diamond is an optimum at an edge of the sweep, where a wider sweep is needed.",
    },
    "training_curves": {
        "validation": "Right: the validation loss at each evaluation.",
        "not-ok": "Dashed curves are runs that diverged or failed; the axes are scaled to the finished runs, so "
        "these may leave them.",
    },
    "bleu_rouge": {
        "off-grid": "Hollow grey points are runs off the grid (IsoFLOP runs).",
        "prompt-noise": "Grey bars are each run's 95 % bootstrap interval over the prompts it was scored on "
        "(BLEU rescored per resample): the sampling noise of a score from a few dozen generations.",
    },
}


def caption_for(name: str, base: str, fig, note: str = "", words: dict | None = None) -> str:
    """The registry's caption, then a sentence per optional artist the figure holds (its {fields}
    filled from `words`: which law was drawn), then the note."""
    gids = artist_gids(fig)
    texts = [text for gid, text in ARTIST_CAPTIONS.get(name, {}).items() if gid in gids]
    parts = [base] + [text.format_map(words or {}) for text in texts] + [note]
    return " ".join(p.strip() for p in parts if p and p.strip())


def caption_words(s: Study) -> dict:
    """The caption's words for the laws drawn: the curves' law, the frontier's, and the form of
    the predicted budgets and their intervals (fit.json's allocation)."""
    curve, frontier = curve_law(s.fit), frontier_law(s.fit, frontier_flops(s)[0])
    forms = {a.get("form") for a in allocation_budgets(s)} - {None}
    if len(forms) == 1:  # fit.json v2: the chosen form's allocation (scalelab.laws.fitted.FittedLaw.allocate)
        form = forms.pop()
        allocation = f" with the {form} law"
        interval = (
            f"Error bars and the red band are 95 % intervals: of the optimum N_opt, D_opt over the {form} "
            "fit's bootstrap resamples, and of the loss fit.json's prediction interval (the bootstrap "
            "spread plus the runs' scatter, mixed over the fitted forms by their weights); the band joins "
            "the stars' intervals."
        )
    else:
        allocation, interval = "", "Error bars and the red band are their bootstrap 95 % intervals."
    return {
        "curve_law": curve.words if curve else "law",
        "frontier_law": frontier.words if frontier else "law",
        "allocation_form": allocation,
        "interval": interval,
    }


def draw_figure(spec, s: Study):
    """(figure, caption) of one registered figure; raises CannotDraw. The data set the limits."""
    fig, note = spec.function()(s)
    if limits_from_data(fig):
        note = (
            f"{note} The fitted curves lie wholly outside the measured range, so none is visible: the fit "
            "does not describe these runs (see the fitted parameters)."
        ).strip()
    return fig, caption_for(spec.name, spec.caption(), fig, note, caption_words(s))


def draw_figures(s: Study, figures_dir: Path) -> dict[str, FigureBlock]:
    """Draw every registered figure that the data support into figures_dir (PNG and SVG), and
    remove the files of one that they do not (left over from an earlier report); return the
    blocks for the pages. Only drawn figures are numbered."""
    blocks, number = {}, 0
    with plt.rc_context(STYLE):
        for spec in FIGURES.values():
            try:
                fig, caption = draw_figure(spec, s)
            except CannotDraw as exc:
                for ext in ("png", "svg"):
                    (figures_dir / f"{spec.name}.{ext}").unlink(missing_ok=True)
                blocks[spec.name] = FigureBlock(spec.name, 0, spec.title, "", why=sentence(str(exc)))
                continue
            number += 1
            blocks[spec.name] = FigureBlock(
                spec.name, number, spec.title, caption, save_figure(fig, figures_dir / spec.name)
            )
    return blocks

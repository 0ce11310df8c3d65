"""The one registry of the report: its sections, figures and tables, and the files it writes.

Each figure and table is named once here, with its title, its category (the page section it
sits in, and its category in Snakemake's `--report`), its caption file and the function (and
its module) that draws or builds it. Everything else follows from this: the order of the page,
the files `scalelab report` writes (`output_paths`) and the outputs `workflow/rules/report.smk`
declares (`rule_outputs`). Captions are reStructuredText files in `captions/` (package data),
read both by the page and by Snakemake's report, so each caption exists once.

Standard library only: the Snakefile imports this module on every dry run.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CAPTIONS = Path(__file__).resolve().parent / "captions"
INDEX_CAPTION = CAPTIONS / "index.rst"
# Snakemake's caption for every figure of the figures/ folder: a Jinja template that shows the
# figure's own caption from the report rule's `captions` param (`figure_captions()`).
FIGURE_CAPTION = CAPTIONS / "figure.rst"


@dataclass(frozen=True)
class Section:
    id: str  # the page anchor
    heading: str  # also the category of its figures and tables in Snakemake's report
    intro: str


@dataclass(frozen=True)
class Entry:
    """A figure or a table: `make` names its function in `module` (imported only when drawing)."""

    name: str
    title: str
    category: str  # a Section heading
    make: str
    kind: str  # "figures" or "tables"
    module: str  # the module of scalelab.report that holds `make`, e.g. "figures_law"

    @property
    def caption_path(self) -> Path:
        return CAPTIONS / self.kind / f"{self.name}.rst"

    def caption(self) -> str:
        """The caption as plain text (its reStructuredText markup removed)."""
        return rst_to_text(self.caption_path.read_text())

    def function(self) -> Callable:
        module = importlib.import_module(f"scalelab.report.{self.module}")
        return getattr(module, self.make)


SECTIONS = (
    Section("scaling", "Scaling laws", "How loss falls with parameters and with data, and the fitted law."),
    Section("allocation", "Compute-optimal allocation", "How to split a compute budget between parameters and data."),
    Section(
        "hyperparameters",
        "Hyperparameter sweeps",
        "How the loss depends on the learning rate, and how the best settings scale with size and compute.",
    ),
    Section("training", "Training", "Every run's loss curve."),
    Section("downstream", "Generation quality", "BLEU and ROUGE-L of greedy generations."),
    Section(
        "metrics",
        "Downstream metrics",
        "A law for each evaluation metric (scalelab fit --metrics): "
        "its forecast at the next budgets, or why it is not predictable.",
    ),
    Section(
        "holdout",
        "Held-out check",
        "Whether the law predicts runs it has not seen: the number that says whether to trust the extrapolation.",
    ),
    Section(
        "next",
        "What to run next",
        "The new runs that would most narrow the interval of the compute-optimal "
        "model size at the next budget (scalelab suggest), and the config to paste to train exactly them.",
    ),
    Section("runs", "Runs", "Every run of the grid with its status and metrics."),
    Section("reproducibility", "Reproducibility", "The corpus, tokenizer and software behind these numbers."),
)


def _figure(name: str, title: str, category: str, module: str) -> Entry:
    return Entry(name, title, category, f"fig_{name}", "figures", module)


def _table(name: str, title: str, category: str, module: str) -> Entry:
    return Entry(name, title, category, f"table_{name}", "tables", module)


# name -> entry, in the order of the page. The names are the file names under figures/ and tables/;
# the last field is the module (by concern) that draws or builds it.
FIGURES = {
    f.name: f
    for f in (
        _figure("loss_vs_params", "Loss vs parameters", "Scaling laws", "figures_law"),
        _figure("loss_vs_tokens", "Loss vs training tokens", "Scaling laws", "figures_law"),
        _figure("isoflop", "IsoFLOP curves", "Compute-optimal allocation", "figures_law"),
        _figure("frontier", "Compute-optimal frontier", "Compute-optimal allocation", "figures_law"),
        _figure("lr_sensitivity", "Learning-rate sensitivity", "Hyperparameter sweeps", "figures_sweeps"),
        _figure("training_curves", "Training curves", "Training", "figures_runs"),
        _figure("curve_forecast", "Curve law forecasts", "Training", "figures_curves"),
        _figure("bleu_rouge", "BLEU and ROUGE-L", "Generation quality", "figures_runs"),
        _figure("metric_laws", "Laws of the evaluation metrics", "Downstream metrics", "figures_metrics"),
        _figure("holdout", "Held-out check and fit residuals", "Held-out check", "figures_checks"),
        _figure("law_residuals", "Residuals of each law form", "Held-out check", "figures_checks"),
    )
}
TABLES = {
    t.name: t
    for t in (
        _table("fit_parameters", "Fitted parameters", "Scaling laws", "tables_fit"),
        _table("isoflop_optima", "IsoFLOP optima (Approach 2)", "Compute-optimal allocation", "tables_fit"),
        _table("allocation", "Compute-optimal allocation", "Compute-optimal allocation", "tables_fit"),
        _table("hyperparameters", "Hyperparameter laws", "Hyperparameter sweeps", "tables_fit"),
        _table("metric_laws", "Laws of the evaluation metrics", "Downstream metrics", "tables_metrics"),
        _table("holdout", "Held-out runs", "Held-out check", "tables_fit"),
        _table("next_runs", "Suggested next runs", "What to run next", "tables_fit"),
        _table("grid", "Grid of runs", "Runs", "tables_runs"),
        _table("settings", "Study settings", "Reproducibility", "tables_settings"),
        _table("reproducibility", "Corpus, tokenizer and software", "Reproducibility", "tables_settings"),
    )
}


def section_entries(section: Section) -> tuple[list[Entry], list[Entry]]:
    """The figures and the tables of one page section, in registry order."""
    return (
        [f for f in FIGURES.values() if f.category == section.heading],
        [t for t in TABLES.values() if t.category == section.heading],
    )


def rst_to_text(text: str) -> str:
    """A caption's reStructuredText as one line of plain text: ``code`` and **bold** unmarked."""
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    return " ".join(text.split())


def output_paths(out: str | Path) -> list[Path]:
    """Every path `report` writes at a fixed name (what the Snakemake rule declares). figures/ is
    a folder: it holds `<name>.png` and `<name>.svg` of each figure the data could support, and
    nothing for one they could not (no placeholder)."""
    out = Path(out)
    paths = [out / "index.html", out / "report.md", out / "summary.txt", out / "figures"]
    paths += [out / "tables" / f"{name}.html" for name in TABLES]
    return paths


def figure_captions() -> dict[str, str]:
    """name -> the registry caption of each figure (what every drawing of it shows), for
    Snakemake's report (the page adds a sentence per optional artist drawn)."""
    return {f.name: f.caption_path.read_text().strip() for f in FIGURES.values()}


def figure_category(wildcards) -> str:
    return FIGURES[wildcards.figure].category


def figure_labels(wildcards) -> dict:
    return {"figure": FIGURES[wildcards.figure].title}


def rule_outputs(out: str, mark: Callable = lambda path, **_: path, directory: Callable = lambda path: path) -> dict:
    """The report rule's named outputs (the same paths as `output_paths`). `mark` is Snakemake's
    `report()` and `directory` its `directory()`; index.html and the tables are marked with their
    caption and category, and the figures folder with a pattern, so that Snakemake's report
    holds the drawn figures only, each under its category with its caption (FIGURE_CAPTION)."""
    outputs = {
        "html": mark(f"{out}/index.html", caption=str(INDEX_CAPTION), category="Report"),
        "markdown": f"{out}/report.md",
        "summary": f"{out}/summary.txt",
        "figures": mark(
            directory(f"{out}/figures"),
            patterns=["{figure}.png"],
            caption=str(FIGURE_CAPTION),
            category=figure_category,
            labels=figure_labels,
        ),
    }
    for t in TABLES.values():
        outputs[f"table_{t.name}"] = mark(
            f"{out}/tables/{t.name}.html", caption=str(t.caption_path), category=t.category
        )
    return outputs

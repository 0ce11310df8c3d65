"""`scalelab report`: the figures, tables and pages a scaling study is read by.

Reads `metrics.csv`, `runs/{run}/curve.csv`, `fit/fit.json` and `data/meta.json`; writes into --out:

    index.html      one self-contained page: figures as base64 PNG, inline CSS, no network
    report.md       the same content for terminals and repository viewers (figures linked)
    figures/*.png   the seven figures (and *.svg for papers), always under the same names
    tables/*.html   each table as a small page, for Snakemake's own report
    summary.txt     the short terminal summary; `run` also prints it

A figure the data cannot support (too few points, a null fit section) is replaced by one
sentence saying why, both on the page and drawn into its file, so that every declared output
exists and nothing empty or misleading is shown. Numbers from fit.json are shown as they are
(rounded for display); the page keeps the exact value of each one in a `data-value` attribute.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import platform
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from . import __version__  # noqa: E402
from .errors import ScalelabError  # noqa: E402
from .files import atomic_path, read_json, write_text  # noqa: E402

# name -> title, in the order of the page. The names are a contract with workflow/rules/report.smk.
FIGURES = {
    "loss_vs_params": "Loss vs parameters",
    "loss_vs_tokens": "Loss vs training tokens",
    "isoflop": "IsoFLOP curves",
    "frontier": "Compute-optimal frontier",
    "training_curves": "Training curves",
    "bleu_rouge": "BLEU and ROUGE-L",
    "holdout": "Held-out check and fit residuals",
}
TABLES = {
    "fit_parameters": "Fitted parameters",
    "isoflop_optima": "IsoFLOP optima (Approach 2)",
    "allocation": "Compute-optimal allocation",
    "holdout": "Held-out runs",
    "grid": "Grid of runs",
    "reproducibility": "Corpus, tokenizer and software",
}
STATUSES = ("ok", "diverged", "failed", "missing")
MAX_LINES = 8  # more distinct levels than this and a family is coloured by a colorbar instead

# One look for every figure: quiet axes, a light grid, and one colormap per quantity
# (model size, token count, compute budget) so colours mean the same thing across figures.
STYLE = {
    "figure.figsize": (6.4, 4.2),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.5,
    "lines.markersize": 5,
    "svg.hashsalt": "scalelab",  # stable ids: the same figure gives the same SVG bytes
}
MODEL_CMAP, TOKENS_CMAP, COMPUTE_CMAP = "viridis", "plasma", "cividis"
DATA_COLOR, FIT_COLOR = "0.25", "0.45"

LABELS = {
    "params": "non-embedding parameters N",
    "params_total": "parameters N (incl. embeddings)",
    "tokens": "training tokens D",
    "flops": "training compute C (FLOPs)",
    "flops_total": "training compute C (FLOPs, incl. embeddings)",
    "val_loss": "validation loss (nats/token)",
    "train_loss": "training loss (nats/token)",
    "test_loss": "test loss (nats/token)",
    "test_bpb": "test bits per byte",
    "test_ppl": "test perplexity",
}


# ----------------------------------------------------------------------------- formatting

def finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x, digits: int = 4) -> str:
    """4 significant digits; scientific (1.234e15) outside [1e-3, 1e4)."""
    if not finite(x):
        return "–"
    x = float(x)
    if x == 0 or 1e-3 <= abs(x) < 10**digits:
        return f"{x:.{digits}g}"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def human(x, digits: int = 3) -> str:
    """A count the way the config writes it: 250K, 1.2M, 3G."""
    if not finite(x):
        return "–"
    x = float(x)
    if abs(x) >= 1e15:
        return f"{x:.{digits}g}".replace("e+", "e")
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g}{unit}"
    return f"{x:.{digits}g}"


def count(x) -> str:
    """A count from fit.json in a table: 4 significant digits, e.g. 74.94K."""
    return human(x, 4)


def short(x) -> str:
    """A tick label for a log axis: 2e13, 1e14 (FLOPs) rather than mathtext powers."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def sci(x) -> str:
    """A compute budget in a legend: 1e11, 2.5e11."""
    mantissa, exponent = f"{float(x):.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def percent(x) -> str:
    return f"{100 * float(x):.2f} %" if finite(x) else "–"


def interval(pair, show=num) -> str:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(finite(v) for v in pair):
        return "–"
    return f"[{show(pair[0])}, {show(pair[1])}]"


def label(column: str) -> str:
    return LABELS.get(column, column)


def clause(text: str) -> str:
    """A reason to go after a colon or in brackets: as written, without its full stop."""
    return " ".join(str(text).split()).rstrip(".")


def sentence(text: str) -> str:
    """One tidy sentence: single spaces, a capital first letter, a full stop."""
    text = " ".join(str(text).split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# ----------------------------------------------------------------------------- the law

from .law import predict_loss  # noqa: E402
from .law import compute_optimal as _compute_optimal  # noqa: E402


def optimal_allocation(flops, E, A, B, alpha, beta):
    """(N_opt, D_opt) at C = 6·N·D; E does not move the optimum."""
    return _compute_optimal(flops, A, B, alpha, beta)


# ----------------------------------------------------------------------------- inputs

NUMERIC = ("params", "params_total", "tokens", "flops", "flops_total", "steps", "train_loss",
           "val_loss", "wall_s", "tokens_per_s", "test_loss", "test_ppl", "test_bpb", "bleu",
           "rouge1", "rouge2", "rougeL", "seed", "isoflop_budget")


def read_metrics(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise ScalelabError(f"{path}: metrics CSV not found") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScalelabError(f"{path}: not a readable CSV ({reason})") from None
    missing = [c for c in ("run", "status") if c not in frame.columns]
    if missing:
        raise ScalelabError(f"{path}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise ScalelabError(f"{path}: has no runs")
    for column in NUMERIC:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["run"] = frame["run"].astype(str)
    frame["status"] = frame["status"].fillna("missing").astype(str)
    return frame


def read_curve(path: Path) -> pd.DataFrame | None:
    """A run's curve.csv, or None when the run logged nothing (it failed or never started)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        curve = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ScalelabError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    missing = [c for c in ("tokens", "train_loss") if c not in curve.columns]
    if missing:
        raise ScalelabError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in curve.columns:
        curve[column] = pd.to_numeric(curve[column], errors="coerce")
    curve = curve[curve["tokens"] > 0]  # step 0 has no place on a log axis
    return curve if len(curve) else None


@dataclass
class Study:
    """Everything the report shows, read once and checked."""

    metrics: pd.DataFrame  # every run of the grid, whatever its status
    fit: dict
    curves: dict[str, pd.DataFrame]
    meta: dict | None
    title: str
    fit_path: Path
    meta_path: Path
    target: str = "val_loss"
    n_col: str = "params"
    d_col: str = "tokens"
    c_col: str = "flops"

    def __post_init__(self) -> None:
        fit = self.fit
        self.target = str(fit.get("target") or "val_loss")
        columns = fit.get("columns") if isinstance(fit.get("columns"), dict) else {}
        self.n_col = str(fit.get("params_col") or columns.get("params") or "params")
        self.d_col = str(fit.get("tokens_col") or columns.get("tokens") or "tokens")
        self.c_col = str(fit.get("flops_col") or columns.get("flops") or "flops")
        frame = self.metrics
        for column in (self.target, self.n_col, self.d_col):
            if column not in frame.columns:
                raise ScalelabError(f"metrics CSV has no column '{column}' (named by {self.fit_path})")
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        if self.c_col not in frame.columns:  # the fit used its fallback C = 6·N·D (written "6*params*tokens")
            self.c_col = "flops"
            if "flops" not in frame.columns:
                frame["flops"] = 6.0 * frame[self.n_col] * frame[self.d_col]
        self._check_fit()

    def _check_fit(self) -> None:
        """Refuse a fit.json whose sections are not shaped like the contract, naming the key."""
        def numbers(section: str, keys) -> None:
            for key in keys:
                if not finite(self.fit[section].get(key)):
                    raise ScalelabError(f"{self.fit_path}: {section}.{key} is missing or not a number")

        for name in ("approach3", "power_law_N", "power_law_D", "approach2", "holdout"):
            if self.fit.get(name) is not None and not isinstance(self.fit[name], dict):
                raise ScalelabError(f"{self.fit_path}: {name} should be an object or null")
        if self.fit.get("approach3") is not None:
            numbers("approach3", ("E", "A", "B", "alpha", "beta"))
        if self.fit.get("approach2") is not None and not isinstance(self.fit["approach2"].get("budgets"), list):
            raise ScalelabError(f"{self.fit_path}: approach2.budgets should be a list")
        if self.fit.get("allocation") is not None and not isinstance(self.fit["allocation"], list):
            raise ScalelabError(f"{self.fit_path}: allocation should be a list or null")
        hold = self.fit.get("holdout")
        if hold is not None:
            lengths = {len(hold.get(k) or []) for k in ("held_out", "predicted", "actual", "rel_error")}
            if len(lengths) != 1:
                raise ScalelabError(f"{self.fit_path}: holdout lists have different lengths")

    @property
    def ok(self) -> pd.DataFrame:
        """Runs that finished with a usable target: the points every figure is drawn from."""
        frame = self.metrics
        good = (frame["status"] == "ok") & (frame[self.n_col] > 0) & (frame[self.d_col] > 0)
        good &= np.isfinite(frame[self.target])
        return frame[good]

    def section(self, name: str):
        """(section, why): a null or absent section comes with the fit's reason (its `<name>_why`)."""
        value = self.fit.get(name)
        if value in (None, [], {}):
            return None, clause(self.fit.get(f"{name}_why") or f"fit.json has no {name} result")
        return value, ""

    def law(self) -> dict | None:
        a3, _ = self.section("approach3")
        return None if a3 is None else {k: float(a3[k]) for k in ("E", "A", "B", "alpha", "beta")}

    def model_names(self) -> dict[float, str]:
        if "model" not in self.metrics.columns:
            return {}
        rows = self.metrics.dropna(subset=[self.n_col])
        return {float(n): str(m) for n, m in zip(rows[self.n_col], rows["model"])}


def load_study(metrics: Path, fit: Path, runs: Path, data_meta: Path, title: str) -> Study:
    frame = read_metrics(metrics)
    fit_json = read_json(fit, "fit results")
    if not isinstance(fit_json, dict):
        raise ScalelabError(f"{fit}: fit results should be a JSON object")
    meta = None
    if data_meta.exists():
        meta = read_json(data_meta, "data description")
        if not isinstance(meta, dict):
            raise ScalelabError(f"{data_meta}: data description should be a JSON object")
    curves = {}
    for run in frame["run"]:
        curve = read_curve(runs / run / "curve.csv")
        if curve is not None:
            curves[run] = curve
    return Study(frame, fit_json, curves, meta, title, fit, data_meta)


# ----------------------------------------------------------------------------- figures

class CannotDraw(Exception):
    """Raised by a figure function with the one sentence that replaces the figure."""


def colormap(name: str) -> ListedColormap:
    # The top of viridis/plasma is too pale on white; stop at 85 %.
    return ListedColormap(matplotlib.colormaps[name](np.linspace(0.0, 0.85, 256)))


def palette(n: int, name: str) -> list:
    return list(colormap(name)(np.linspace(0, 1, n) if n > 1 else [0.35]))


def log_axis(axis, counts: bool = True) -> None:
    """A log axis labelled 100K, 1M (counts) or 1e13 (FLOPs). Minor ticks get labels too when the
    axis is short (2 and 5 within two decades, 2, 3 and 5 within one, all within a factor of 3),
    so that it always has numbers on it."""
    show = human if counts else short

    def minor(value, _pos) -> str:
        lo, hi = sorted(axis.get_view_interval())
        leading = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        if lo <= 0 or hi / lo >= 100:
            return ""
        shown = range(10) if hi / lo < 3 else (2, 3, 5) if hi / lo < 10 else (2, 5)
        return show(value) if leading in shown else ""

    axis.set_major_locator(LogLocator(base=10, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: show(value)))
    axis.set_minor_formatter(FuncFormatter(minor))


def set_log(ax, x: str | None = None, y: str | None = None) -> None:
    """Log scale on the axes named by their column: FLOPs get 1e13 labels, counts 100K/1M."""
    for axis, column, scale in ((ax.xaxis, x, ax.set_xscale), (ax.yaxis, y, ax.set_yscale)):
        if column:
            scale("log")
            log_axis(axis, counts="flops" not in column)


def panel_note(ax, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(text, 42), ha="center", va="center", transform=ax.transAxes,
            color="0.3", fontsize=9.5)


def fit_legend(ax, fitted: bool, **kwargs) -> None:
    """The figure's legend plus two grey keys that say which marks are data and which the fit."""
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="o", ls="none", color=DATA_COLOR))
    labels.append("measured")
    if fitted:
        handles.append(Line2D([], [], color=FIT_COLOR))
        labels.append("Approach 3 fit")
    ax.legend(handles, labels, **kwargs)


def grid_levels(frame: pd.DataFrame, group_col: str, x_col: str) -> np.ndarray:
    """The values of `group_col` that runs share at two or more `x_col` values: the lines of a
    grid. IsoFLOP runs each have their own token count and so form no line."""
    counts = frame.groupby(group_col)[x_col].nunique()
    return np.sort(counts[counts >= 2].index.to_numpy(float))


def colorbar(ax, points, column: str) -> None:
    bar = ax.figure.colorbar(points, ax=ax, label=label(column))
    log_axis(bar.ax.yaxis, counts="flops" not in column)


def off_grid(ax, frame: pd.DataFrame, x_col: str, y_col: str) -> None:
    """Runs that belong to no line of the grid (IsoFLOP runs), as hollow grey points."""
    if len(frame):
        isoflop = "isoflop_budget" in frame.columns and np.isfinite(frame["isoflop_budget"]).all()
        ax.plot(frame[x_col], frame[y_col], "o", mfc="none", mec="0.55", ms=5,
                label="IsoFLOP runs" if isoflop else "other runs")


def loss_family(ax, s: Study, x_col: str, group_col: str, cmap: str, group_label, curve) -> None:
    """Loss vs `x_col`, one colour per value of `group_col`, with the law through the points.

    A grid has a few levels per group and gets one line each (other runs are grey); without a
    grid, every run is a point coloured on a colorbar and the law is drawn at a few levels.
    """
    ok = s.ok
    levels = grid_levels(ok, group_col, x_col)
    x_grid = np.geomspace(ok[x_col].min() / 1.4, ok[x_col].max() * 1.4, 200)
    if 1 <= len(levels) <= MAX_LINES:
        for level, color in zip(levels, palette(len(levels), cmap)):
            rows = ok[ok[group_col] == level].sort_values(x_col)
            if curve is None:  # no law to draw: join the points to guide the eye
                ax.plot(rows[x_col], rows[s.target], "o-", color=color, lw=1, label=group_label(level))
            else:
                ax.plot(rows[x_col], rows[s.target], "o", color=color, label=group_label(level))
                ax.plot(x_grid, curve(x_grid, level), "-", color=color, lw=1.2, alpha=0.85)
        off_grid(ax, ok[~ok[group_col].isin(levels)], x_col, s.target)
    else:
        levels = np.sort(ok[group_col].unique())
        cm = colormap(cmap)
        norm = LogNorm(levels.min(), levels.max())
        points = ax.scatter(ok[x_col], ok[s.target], c=ok[group_col], cmap=cm, norm=norm, s=22, zorder=3)
        colorbar(ax, points, group_col)
        if curve is not None:
            for level in np.geomspace(levels.min(), levels.max(), 4):
                ax.plot(x_grid, curve(x_grid, level), "-", color=cm(norm(level)), lw=1.2, alpha=0.85)
    set_log(ax, x=x_col)
    ax.set_xlabel(label(x_col))
    ax.set_ylabel(label(s.target))
    fit_legend(ax, curve is not None, loc="best", ncol=2 if len(levels) > 4 else 1)


def fig_loss_vs_params(s: Study):
    ok = s.ok
    if ok[s.n_col].nunique() < 2:
        raise CannotDraw(_too_few_sizes(s, "loss cannot be plotted against parameters"))
    law = s.law()
    curve = None if law is None else (lambda n, d: predict_loss(n, d, **law))
    fig, ax = plt.subplots()
    loss_family(ax, s, s.n_col, s.d_col, TOKENS_CMAP, lambda d: f"D = {human(d)} tokens", curve)
    ax.set_title("Loss vs parameters, one colour per token count")
    return fig, "" if law else f"No fitted curves: {clause(s.section('approach3')[1])}."


def fig_loss_vs_tokens(s: Study):
    ok = s.ok
    if ok.empty:
        raise CannotDraw(_too_few_sizes(s, "there is nothing to plot"))
    if ok[s.d_col].nunique() < 2:
        raise CannotDraw("Every finished run saw the same number of tokens, so loss cannot be plotted against tokens.")
    law = s.law()
    curve = None if law is None else (lambda d, n: predict_loss(n, d, **law))
    names = s.model_names()
    fig, ax = plt.subplots()
    loss_family(ax, s, s.d_col, s.n_col, MODEL_CMAP,
                lambda n: size_label(names, n), curve)
    ax.set_title("Loss vs training tokens, one colour per model size")
    return fig, "" if law else f"No fitted curves: {clause(s.section('approach3')[1])}."


def size_label(names: dict, n) -> str:
    """'m (N = 332K)', or 'N = 332K' when the CSV names no models."""
    name = names.get(float(n))
    return f"{name} (N = {human(n)})" if name else f"N = {human(n)}"


def _too_few_sizes(s: Study, consequence: str) -> str:
    sizes = s.ok[s.n_col].unique()
    if len(sizes) == 0:
        return f"No run finished with a finite {s.target}, so {consequence}."
    return f"Only one model size (N = {human(sizes[0])}) has finished runs, so {consequence}."


def budget_runs(s: Study, budget: dict) -> pd.DataFrame:
    """The finished runs of one IsoFLOP budget: by name when fit.json lists them, else by the
    grid's isoflop_budget column, else the `n_points` runs nearest in FLOPs."""
    ok, flops = s.ok, float(budget["flops"])
    if isinstance(budget.get("runs"), list):
        return ok[ok["run"].isin(budget["runs"])]
    if "isoflop_budget" in ok.columns and np.isfinite(ok["isoflop_budget"]).any():
        rows = ok[np.isclose(ok["isoflop_budget"], flops, rtol=1e-6)]
        if len(rows):
            return rows
    distance = np.abs(np.log(ok[s.c_col] / flops))
    return ok.loc[distance.sort_values().index[: int(budget.get("n_points") or 3)]]


def fig_isoflop(s: Study):
    a2, why = s.section("approach2")
    if a2 is None:
        raise CannotDraw(why)
    budgets = sorted(a2["budgets"], key=lambda b: float(b["flops"]))
    if not budgets:
        raise CannotDraw("fit.json's approach2 lists no compute budget.")
    fig, ax = plt.subplots()
    outside = False
    for budget, color in zip(budgets, palette(len(budgets), COMPUTE_CMAP)):
        rows = budget_runs(s, budget).sort_values(s.n_col)
        log_n = np.log(rows[s.n_col].to_numpy(float))
        ax.plot(rows[s.n_col], rows[s.target], "o", color=color, label=f"C = {sci(budget['flops'])} FLOPs")
        if len(rows) >= 3 and np.ptp(log_n) > 0:
            # The same parabola in log N as the fit, refitted here only to draw it.
            coef = np.polyfit(log_n, rows[s.target].to_numpy(float), 2)
            grid = np.linspace(log_n.min() - 0.3, log_n.max() + 0.3, 100)
            ax.plot(np.exp(grid), np.polyval(coef, grid), "-", color=color, lw=1.2, alpha=0.85)
        n_opt, loss_opt = budget.get("n_opt"), budget.get("loss_opt")
        if finite(n_opt) and finite(loss_opt):
            inside = not budget.get("outside_sampled", not (
                len(rows) and rows[s.n_col].min() <= float(n_opt) <= rows[s.n_col].max()))
            outside |= not inside
            ax.plot(float(n_opt), float(loss_opt), "D", ms=7, mec="black", mew=1,
                    mfc=color if inside else "white", zorder=4)
    set_log(ax, x=s.n_col)
    ax.set_xlabel(label(s.n_col))
    ax.set_ylabel(label(s.target))
    ax.set_title("IsoFLOP curves: loss vs N at fixed compute")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="D", ls="none", mec="black", mfc="0.6"))
    labels.append("N_opt (parabola minimum)")
    if outside:
        handles.append(Line2D([], [], marker="D", ls="none", mec="black", mfc="white"))
        labels.append("N_opt outside the sampled sizes")
    ax.legend(handles, labels, loc="best")
    return fig, ""


def fig_frontier(s: Study):
    law, a2 = s.law(), s.section("approach2")[0]
    if law is None and a2 is None:
        raise CannotDraw(f"Neither Approach 3 nor Approach 2 was identified: {clause(s.section('approach3')[1])}.")
    allocation = [a for a in (s.section("allocation")[0] or []) if finite(a.get("flops"))]
    ok = s.ok
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
    measured = (ok[s.c_col].min(), ok[s.c_col].max())
    top = max([measured[1]] + [float(a["flops"]) for a in allocation]) * 1.5
    for ax, quantity in zip(axes, ("n_opt", "d_opt", "loss_pred")):
        column = {"n_opt": s.n_col, "d_opt": s.d_col, "loss_pred": s.target}[quantity]
        ax.plot(ok[s.c_col], ok[column], "o", color="0.7", ms=4, label="runs")
        if a2 is not None and quantity != "loss_pred":
            optima = [b for b in a2["budgets"] if finite(b.get(quantity))]
            ax.plot([b["flops"] for b in optima], [b[quantity] for b in optima], "D", color=DATA_COLOR,
                    ms=6, label="IsoFLOP optimum (Approach 2)")
            if quantity == "n_opt" and finite(a2.get("G")) and finite(a2.get("a")) and len(optima) >= 2:
                flops = np.geomspace(min(b["flops"] for b in optima), max(b["flops"] for b in optima), 50)
                ax.plot(flops, float(a2["G"]) * flops ** float(a2["a"]), ":", color=DATA_COLOR, lw=1.2,
                        label="Approach 2 fit, N_opt = G·C^a")
        if law is not None:
            for lo, hi, style, text in ((measured[0], measured[1], "-", "Approach 3 law"),
                                        (measured[1], top, "--", "extrapolation")):
                flops = np.geomspace(lo, hi, 100)
                n_opt, d_opt = optimal_allocation(flops, **law)
                y = {"n_opt": n_opt, "d_opt": d_opt, "loss_pred": predict_loss(n_opt, d_opt, **law)}[quantity]
                ax.plot(flops, y, style, color="C3", lw=1.5, label=text)
        if allocation:
            x = np.array([float(a["flops"]) for a in allocation])
            y = np.array([float(a[quantity]) if finite(a.get(quantity)) else np.nan for a in allocation])
            ci = [a.get(f"{quantity}_ci95") if quantity != "loss_pred" else a.get("loss_ci95") for a in allocation]
            have_ci = [c is not None and interval(c) != "–" for c in ci]
            if any(have_ci):
                lo = np.array([float(c[0]) if h else v for c, h, v in zip(ci, have_ci, y)])
                hi = np.array([float(c[1]) if h else v for c, h, v in zip(ci, have_ci, y)])
                if len(x) >= 2:
                    ax.fill_between(x, lo, hi, color="C3", alpha=0.15, lw=0, label="bootstrap 95 % interval")
                ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", ecolor="C3", capsize=3)
            ax.plot(x, y, "*", color="C3", ms=11, mec="black", mew=0.6, label="predicted budgets")
        ax.axvspan(measured[1], top, color="0.5", alpha=0.06, lw=0)
        set_log(ax, x=s.c_col, y=column if quantity != "loss_pred" else None)
        ax.set_xlabel(label(s.c_col))
    axes[0].set_ylabel(f"compute-optimal N_opt ({label(s.n_col).split(' N')[0]})")
    axes[1].set_ylabel("compute-optimal D_opt (training tokens)")
    axes[2].set_ylabel(label(s.target))
    axes[0].set_title("Parameters")
    axes[1].set_title("Tokens")
    axes[2].set_title("Loss: runs, and the law at the optimum")
    axes[0].legend(loc="upper left")
    note = [] if law else [f"No Approach 3 law: {clause(s.section('approach3')[1])}."]
    if law and not allocation:
        note.append(f"No predicted budgets: {clause(s.section('allocation')[1])}.")
    if allocation and not any(a.get("n_opt_ci95") for a in allocation):
        note.append("fit.json gives no interval for N_opt and D_opt; the loss interval is the bootstrap's.")
    fig.tight_layout()
    return fig, " ".join(note)


def fig_training_curves(s: Study):
    if not s.curves:
        raise CannotDraw("No run has a curve.csv with logged steps.")
    sizes = s.metrics.set_index("run")[s.n_col].to_dict()
    levels = sorted({sizes.get(run) for run in s.curves if finite(sizes.get(run))})
    colors = dict(zip(levels, palette(len(levels), MODEL_CMAP)))
    status = s.metrics.set_index("run")["status"].to_dict()
    names = s.model_names()
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    values, any_val, window = [], False, 1
    for run, curve in sorted(s.curves.items(), key=lambda item: (sizes.get(item[0]) or 0, item[0])):
        color = colors.get(sizes.get(run), "0.5")
        style = "-" if status.get(run) == "ok" else "--"
        window = max(1, len(curve) // 50)  # a light moving average: the trend, not the noise
        train = curve["train_loss"].rolling(window, min_periods=1, center=True).mean()
        ax_train.plot(curve["tokens"], train, style, color=color, lw=1, alpha=0.85)
        if status.get(run) == "ok":
            values.append(train.to_numpy(float))
        if "val_loss" in curve.columns and curve["val_loss"].notna().any():
            val = curve.dropna(subset=["val_loss"])
            ax_val.plot(val["tokens"], val["val_loss"], style, marker="o", ms=3, color=color, lw=1, alpha=0.85)
            any_val = True
    for level in levels:
        ax_train.plot([], [], "-", color=colors[level], label=size_label(names, level))
    if any(st != "ok" for run, st in status.items() if run in s.curves):
        ax_train.plot([], [], "--", color="0.5", label="not ok (diverged/failed)")
    values = np.concatenate(values) if values else np.array([])
    values = values[np.isfinite(values)]
    if len(values):  # scaled to the finished runs: a diverged run's spike must not flatten them
        ax_train.set_ylim(values.min() * 0.97, values.max() * 1.03)
    for ax in (ax_train, ax_val):
        set_log(ax, x="tokens")
        ax.set_xlabel("tokens seen")
    ax_train.set_ylabel("loss (nats/token)")
    ax_train.set_title(f"Training loss (moving average over {window} logged steps)" if window > 1 else "Training loss")
    ax_val.set_title("Validation loss")
    if not any_val:
        ax_val.text(0.5, 0.5, "no validation loss in curve.csv", ha="center", transform=ax_val.transAxes, color="0.3")
    ax_train.legend(loc="lower left", ncol=2 if len(levels) > 4 else 1)
    fig.tight_layout()
    return fig, ""


def fig_bleu_rouge(s: Study):
    ok = s.metrics[s.metrics["status"] == "ok"]
    metrics = [m for m in ("bleu", "rougeL") if m in ok.columns and np.isfinite(ok[m]).any()]
    if not metrics:
        raise CannotDraw("No run has BLEU or ROUGE-L scores, so there is nothing to plot against size or compute.")
    ylabels = {"bleu": "BLEU (sacreBLEU)", "rougeL": "ROUGE-L (F-measure)"}
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    for row, metric in zip(axes, metrics):
        rows = ok[np.isfinite(ok[metric]) & (ok[s.n_col] > 0)]
        levels = grid_levels(rows, s.d_col, s.n_col)
        for ax, x_col in zip(row, (s.n_col, s.c_col)):
            if x_col == s.n_col and rows[s.n_col].nunique() < 2:
                panel_note(ax, f"Only one model size has {ylabels[metric].split(' (')[0]} scores: nothing to plot "
                               "against parameters.")
                continue
            if 1 <= len(levels) <= MAX_LINES:
                for level, color in zip(levels, palette(len(levels), TOKENS_CMAP)):
                    line = rows[rows[s.d_col] == level].sort_values(x_col)
                    ax.plot(line[x_col], line[metric], "o-", color=color, lw=1, label=f"D = {human(level)} tokens")
                off_grid(ax, rows[~rows[s.d_col].isin(levels)], x_col, metric)
            else:
                points = ax.scatter(rows[x_col], rows[metric], c=rows[s.d_col], cmap=colormap(TOKENS_CMAP),
                                    norm=LogNorm(rows[s.d_col].min(), rows[s.d_col].max()), s=22)
                colorbar(ax, points, s.d_col)
            set_log(ax, x=x_col)
            ax.set_xlabel(label(x_col))
            ax.set_ylabel(ylabels[metric])
    axes[0][0].set_title("vs parameters")
    axes[0][1].set_title("vs compute")
    for ax in axes.flat:  # one legend, on the first panel that has something to explain
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
            break
    fig.tight_layout()
    missing = {"bleu", "rougeL"} - set(metrics)
    return fig, f"No run has {'BLEU' if 'bleu' in missing else 'ROUGE-L'} scores." if missing else ""


def fig_holdout(s: Study):
    hold, hold_why = s.section("holdout")
    law, law_why = s.law(), s.section("approach3")[1]
    if hold is None and law is None:
        raise CannotDraw(f"No held-out check ({clause(hold_why)}) and no fitted law to take residuals from "
                         f"({clause(law_why)}).")
    fig, (ax_hold, ax_res) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    if hold is None or not hold.get("held_out"):
        panel_note(ax_hold, sentence(hold_why or "No run was held out."))
    else:
        actual, predicted = np.array(hold["actual"], float), np.array(hold["predicted"], float)
        ax_hold.plot(actual, predicted, "o", color="C3", ms=7, label="held-out runs")
        span = np.array([np.nanmin([actual, predicted]), np.nanmax([actual, predicted])])
        pad = max(0.02 * span.mean(), 0.15 * np.ptp(span))
        line = span + [-pad, pad]
        ax_hold.plot(line, line, "-", color="0.5", lw=1, label="prediction = actual")
        ax_hold.fill_between(line, line * 0.99, line * 1.01, color="0.5", alpha=0.12, lw=0, label="±1 %")
        if len(actual) <= 6:
            for run, x, y in zip(hold["held_out"], actual, predicted):
                ax_hold.annotate(str(run), (x, y), xytext=(5, -10), textcoords="offset points", fontsize=8)
        ax_hold.set_xlim(*line)
        ax_hold.set_ylim(*line)
        ax_hold.set_aspect("equal")
        ax_hold.set_xlabel(f"actual {label(s.target)}")
        ax_hold.set_ylabel(f"predicted {label(s.target)}")
        ax_hold.set_title(f"Held out, predicted from the rest: max |error| {percent(hold.get('max_abs_rel_error'))}")
        ax_hold.legend(loc="upper left")
    if law is None:
        panel_note(ax_res, sentence(law_why))
    else:
        ok = s.ok
        residual = 100 * (ok[s.target] / predict_loss(ok[s.n_col], ok[s.d_col], **law) - 1)
        names = s.model_names()
        levels = np.sort(ok[s.n_col].unique())
        for level, color in zip(levels, palette(len(levels), MODEL_CMAP)):
            mask = ok[s.n_col] == level
            ax_res.plot(ok.loc[mask, s.c_col], residual[mask], "o", color=color,
                        label=size_label(names, level))
        held = ok["run"].isin((hold or {}).get("held_out") or [])
        if held.any():
            ax_res.plot(ok.loc[held, s.c_col], residual[held], "o", ms=11, mfc="none", mec="C3",
                        label="held out in the check")
        ax_res.axhline(0, color="0.4", lw=1)
        set_log(ax_res, x=s.c_col)
        ax_res.set_xlabel(label(s.c_col))
        ax_res.set_ylabel("residual: actual / fit − 1 (%)")
        ax_res.set_title("Residuals of the Approach 3 fit (all runs)")
        ax_res.legend(loc="best", ncol=2 if len(levels) > 4 else 1)
    fig.tight_layout()
    return fig, ""


DRAW = {
    "loss_vs_params": fig_loss_vs_params,
    "loss_vs_tokens": fig_loss_vs_tokens,
    "isoflop": fig_isoflop,
    "frontier": fig_frontier,
    "training_curves": fig_training_curves,
    "bleu_rouge": fig_bleu_rouge,
    "holdout": fig_holdout,
}


def placeholder(title: str, why: str):
    """The file that stands in for a figure that cannot be drawn: it says why."""
    fig = plt.figure(figsize=(6.4, 1.6))
    fig.text(0.5, 0.5, textwrap.fill(f"{title}: not drawn. {why}", 70), ha="center", va="center",
             fontsize=10, color="0.25")
    return fig


def save_figure(fig, stem: Path) -> bytes:
    """Write stem.png and stem.svg atomically; return the PNG bytes for embedding."""
    images = {}
    for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=metadata)
        images[fmt] = buffer.getvalue()
        with atomic_path(stem.with_suffix(f".{fmt}")) as tmp:
            tmp.write_bytes(images[fmt])
    plt.close(fig)
    return images["png"]


@dataclass
class FigureBlock:
    name: str
    number: int
    title: str
    caption: str
    png: bytes = b""
    why: str = ""  # set when the figure could not be drawn


def draw_figures(s: Study, figures_dir: Path) -> dict[str, FigureBlock]:
    blocks = {}
    with plt.rc_context(STYLE):
        for number, (name, title) in enumerate(FIGURES.items(), start=1):
            caption, why = CAPTIONS[name](s), ""
            try:
                fig, note = DRAW[name](s)
                caption = f"{caption} {note}".strip()
            except CannotDraw as exc:
                fig, why = placeholder(title, sentence(str(exc))), sentence(str(exc))
            blocks[name] = FigureBlock(name, number, title, caption, save_figure(fig, figures_dir / name), why)
    return blocks


CAPTIONS = {
    "loss_vs_params": lambda s: f"Final {s.target} of every finished run against {label(s.n_col)}, one colour per "
                                "token budget; curves are the Approach 3 law L(N, D) = E + A/N^alpha + B/D^beta "
                                "evaluated at each token count.",
    "loss_vs_tokens": lambda s: f"Final {s.target} against training tokens, one colour per model size, "
                                "with the Approach 3 law at each size.",
    "isoflop": lambda s: "Loss against model size at fixed training compute (IsoFLOP profiles); each curve is "
                         "the parabola in log N whose minimum gives N_opt (diamonds, from fit.json).",
    "frontier": lambda s: "Compute-optimal model size, token count and loss against training compute: grey "
                          "points are the runs, the red line is the Approach 3 allocation (dashed beyond the "
                          "largest run), stars are the budgets fit.json predicts, with bootstrap 95 % intervals "
                          "where given.",
    "training_curves": lambda s: "Loss against tokens seen for every run, coloured by model size (curve.csv).",
    "bleu_rouge": lambda s: "BLEU and ROUGE-L of greedy generations on the test split against parameters and "
                            "against training compute, one colour per token count.",
    "holdout": lambda s: "Left: the runs of the highest compute, held out of the fit and predicted from the "
                         "rest, against their measured loss (the grey band is ±1 %). Right: relative residuals "
                         "of the Approach 3 fit on all runs.",
}


# ----------------------------------------------------------------------------- tables

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


def fit_cell(value, source: str, show=num) -> Cell:
    """A number from fit.json, shown rounded, keeping its exact value and where it came from."""
    if isinstance(value, (list, tuple)):
        return Cell(interval(value, show), source, list(value))
    return Cell(show(value) if finite(value) else "–", source, value)


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


def table_fit_parameters(s: Study) -> Table:
    table = Table("fit_parameters", TABLES["fit_parameters"],
                  ["fit", "parameter", "estimate", "95 % interval", "meaning"])
    a3, why = s.section("approach3")
    if a3 is None:
        table.notes.append(f"Approach 3 (L = E + A/N^alpha + B/D^beta): not fitted: {clause(why)}.")
    else:
        ci = a3.get("ci95") or {}
        fit_name = f"Approach 3, L(N, D) on {s.fit.get('n_points', '?')} runs"
        for key in ("E", "A", "alpha", "B", "beta", "a", "b"):
            if key in a3:
                table.rows.append([Cell(fit_name), Cell(key), fit_cell(a3[key], f"approach3.{key}"),
                                   fit_cell(ci.get(key), f"approach3.ci95.{key}"), Cell(PARAMETER_MEANING[key])])
        extras = [f"{k} = {num(a3[k])}" for k in ("huber_delta", "n_starts", "starts_at_optimum", "objective",
                                                   "bootstrap", "bootstrap_failed") if finite(a3.get(k))]
        if extras:
            table.notes.append("Approach 3 (summed Huber loss on log-loss residuals, L-BFGS-B): "
                               + ", ".join(extras) + ".")
    for name, variable, slice_key, slice_what in (("power_law_N", "N", "slice_tokens", "D"),
                                                   ("power_law_D", "D", "slice_params", "N")):
        section, why = s.section(name)
        keys = ("E", "A", "alpha") if variable == "N" else ("E", "B", "beta")
        if section is None:
            table.notes.append(f"Power law in {variable}: not fitted: {clause(why)}.")
            continue
        ci = section.get("ci95") or {}
        fit_name = f"power law in {variable} at {slice_what} = {human(section.get(slice_key))}"
        for key in keys + ("r2",):
            if key in section:
                table.rows.append([Cell(fit_name), Cell(key), fit_cell(section[key], f"{name}.{key}"),
                                   fit_cell(ci.get(key), f"{name}.ci95.{key}") if key in ci else Cell("–"),
                                   Cell(PARAMETER_MEANING[key])])
        ols = section.get("loglog_ols")  # the pure power law, log L = log A − k·log x (statsmodels OLS)
        exponent = next((k for k in (keys[2], "exponent") if isinstance(ols, dict) and k in ols), None)
        if exponent:
            table.rows.append([Cell(f"{fit_name}, log-log OLS"), Cell(keys[2]),
                               fit_cell(ols[exponent], f"{name}.loglog_ols.{exponent}"),
                               fit_cell((ols.get("ci95") or {}).get(exponent), f"{name}.loglog_ols.ci95.{exponent}"),
                               Cell(f"{PARAMETER_MEANING[keys[2]]}, without E")])
    a2, why = s.section("approach2")
    if a2 is None:
        table.notes.append(f"Approach 2 (IsoFLOP): not fitted: {clause(why)}.")
    else:
        for key in ("a", "b"):
            if finite(a2.get(key)):
                table.rows.append([Cell("Approach 2, IsoFLOP optima"), Cell(key),
                                   fit_cell(a2[key], f"approach2.{key}"),
                                   fit_cell(a2.get(f"{key}_ci95"), f"approach2.{key}_ci95"),
                                   Cell(PARAMETER_MEANING[key])])
        if a2.get("exponents_why"):
            table.notes.append(f"Approach 2 exponents: not fitted: {clause(a2['exponents_why'])}.")
        elif finite(a2.get("a")) and not a2.get("a_ci95"):
            table.notes.append("Approach 2 exponents have no interval: a line through two budgets leaves no "
                               "degrees of freedom." if len(a2["budgets"]) == 2 else
                               "fit.json gives no interval for the Approach 2 exponents.")
    excluded = s.fit.get("excluded") or []
    if excluded:
        listed = ", ".join(f"{e.get('run', '?')} ({e.get('reason', '?')})" for e in excluded if isinstance(e, dict))
        table.notes.append(f"Excluded from the fit: {listed}.")
    return table


def table_isoflop(s: Study) -> Table:
    table = Table("isoflop_optima", TABLES["isoflop_optima"],
                  ["compute C (FLOPs)", "N_opt (params)", "D_opt (tokens)", f"{s.target} at N_opt", "model sizes"])
    a2, why = s.section("approach2")
    if a2 is None:
        table.notes.append(f"No IsoFLOP optima: {clause(why)}.")
        return table
    for i, b in enumerate(a2["budgets"]):
        table.rows.append([fit_cell(b.get("flops"), f"approach2.budgets.{i}.flops"),
                           fit_cell(b.get("n_opt"), f"approach2.budgets.{i}.n_opt", count),
                           fit_cell(b.get("d_opt"), f"approach2.budgets.{i}.d_opt", count),
                           fit_cell(b.get("loss_opt"), f"approach2.budgets.{i}.loss_opt"),
                           fit_cell(b.get("n_points"), f"approach2.budgets.{i}.n_points")])
    return table


def table_allocation(s: Study) -> Table:
    allocation, why = s.section("allocation")
    with_ci = bool(allocation) and any(a.get("n_opt_ci95") for a in allocation)
    columns = ["compute C (FLOPs)", "N_opt (params)", "D_opt (tokens)", "tokens per parameter",
               f"predicted {s.target}", "95 % interval"]
    if with_ci:
        columns += ["N_opt 95 %", "D_opt 95 %"]
    table = Table("allocation", TABLES["allocation"], columns)
    if allocation is None:
        table.notes.append(f"No allocation predictions: {clause(why)}.")
        return table
    for i, a in enumerate(allocation):
        row = [fit_cell(a.get(k), f"allocation.{i}.{k}", count if k in ("n_opt", "d_opt") else num) for k in
               ("flops", "n_opt", "d_opt", "tokens_per_param", "loss_pred", "loss_ci95")]
        if with_ci:
            row += [fit_cell(a.get(k), f"allocation.{i}.{k}", count) for k in ("n_opt_ci95", "d_opt_ci95")]
        table.rows.append(row)
    table.notes.append("From the Approach 3 law: N_opt = G·(C/6)^a, D_opt = (C/6)^b / G; "
                       "intervals from the bootstrap.")
    return table


def table_holdout(s: Study) -> Table:
    table = Table("holdout", TABLES["holdout"], ["run", "N", "D", "C (FLOPs)", f"actual {s.target}",
                                                 f"predicted {s.target}", "relative error"])
    hold, why = s.section("holdout")
    if hold is None:
        table.notes.append(f"No held-out check: {clause(why)}.")
        return table
    by_run = s.metrics.set_index("run")
    for i, run in enumerate(hold.get("held_out") or []):
        shape = by_run.loc[run] if run in by_run.index else None
        size = [Cell(human(shape[s.n_col])), Cell(human(shape[s.d_col])), Cell(num(shape[s.c_col]))] \
            if shape is not None else [Cell("–")] * 3
        table.rows.append([Cell(str(run)), *size,
                           fit_cell(hold["actual"][i], f"holdout.actual.{i}"),
                           fit_cell(hold["predicted"][i], f"holdout.predicted.{i}"),
                           fit_cell(hold["rel_error"][i], f"holdout.rel_error.{i}", percent)])
    table.rows.append([Cell("max |relative error|"), Cell(""), Cell(""), Cell(""), Cell(""), Cell(""),
                       fit_cell(hold.get("max_abs_rel_error"), "holdout.max_abs_rel_error", percent)])
    return table


def table_grid(s: Study) -> Table:
    frame = s.metrics
    optional = [(c, h) for c, h in (("test_loss", "test loss"), ("test_bpb", "test bits/byte"), ("bleu", "BLEU"),
                                    ("rougeL", "ROUGE-L"), ("wall_s", "wall time (s)")) if c in frame.columns]
    columns = ["run", "model", "N (params)", "D (tokens)", "C (FLOPs)", "status", "steps", s.target]
    columns += [heading for _, heading in optional]
    table = Table("grid", TABLES["grid"], columns)
    for _, row in frame.iterrows():
        cells = [Cell(row["run"]), Cell(str(row.get("model", "–"))), Cell(human(row[s.n_col])),
                 Cell(human(row[s.d_col])), Cell(num(row[s.c_col], 3)),
                 Cell(row["status"], css=f"status-{row['status']}" if row["status"] in STATUSES else "status-other"),
                 Cell(num(row.get("steps"))), Cell(num(row[s.target]))]
        cells += [Cell(num(row[c])) for c, _ in optional]
        table.rows.append(cells)
    counts = frame["status"].value_counts()
    table.notes.append(", ".join(f"{counts.get(st, 0)} {st}" for st in STATUSES) + f" of {len(frame)} runs.")
    return table


def _flat(value) -> str:
    """A meta.json entry in one line: nested objects as `key: value`, lists joined."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    big = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 1e4
    return human(value) if big else str(value)


def table_reproducibility(s: Study) -> Table:
    table = Table("reproducibility", TABLES["reproducibility"], ["what", "value"])
    add = lambda what, value: table.rows.append([Cell(what), Cell(value)])  # noqa: E731
    meta = s.meta
    if meta is None:
        table.notes.append(f"{s.meta_path} was not found, so the corpus and tokenizer are not described.")
    else:
        for key in ("corpus", "tokenizer", "format", "vocab_size", "dtype"):
            if key in meta:
                add(key, _flat(meta[key]))
        for split, info in (meta.get("splits") or {}).items():
            if isinstance(info, dict):
                add(f"{split} split", ", ".join(f"{human(info[k])} {k}" for k in ("documents", "tokens", "bytes")
                                                if k in info))
        if isinstance(meta.get("bytes_per_token"), dict):
            add("bytes per token", ", ".join(f"{k} {num(v)}" for k, v in meta["bytes_per_token"].items()))
    for column, what in (("torch_version", "torch (training)"), ("lightning_version", "lightning (training)")):
        if column in s.metrics.columns:
            versions = sorted({str(v) for v in s.metrics[column].dropna()})
            add(what, ", ".join(versions) if versions else "–")
    add("fit", f"target {s.target}, N column {s.n_col}, D column {s.d_col}, C column {s.c_col}")
    add("report software", f"scalelab {__version__}, python {platform.python_version()}, numpy {np.__version__}, "
                           f"pandas {pd.__version__}, matplotlib {matplotlib.__version__}")
    return table


def blank_repeats(table: Table, column: int = 0) -> Table:
    """Show a group's label (e.g. the fit's name) on its first row only."""
    previous = None
    for row in table.rows:
        text = row[column].text
        if text == previous:
            row[column] = Cell("")
        previous = text
    return table


def build_tables(s: Study) -> dict[str, Table]:
    return {t.name: t for t in (blank_repeats(table_fit_parameters(s)), table_isoflop(s), table_allocation(s),
                                table_holdout(s), table_grid(s), table_reproducibility(s))}


# ----------------------------------------------------------------------------- summary

def summary_text(s: Study, index_html: Path) -> str:
    """The few lines printed at the end of a run: law, exponents, held-out error, next budget."""
    lines = [f"scalelab report: {s.title}"]
    a3, why = s.section("approach3")
    if a3 is None:
        lines.append(f"  fitted law    not identified: {clause(why)}")
    else:
        ci = a3.get("ci95") or {}
        lines.append(f"  fitted law    {s.target} = {num(a3['E'])} + {num(a3['A'])}/N^{num(a3['alpha'])} + "
                     f"{num(a3['B'])}/D^{num(a3['beta'])}   (Approach 3, {s.fit.get('n_points', '?')} runs)")
        boot = (f"95 %, {a3['bootstrap']} bootstrap resamples" if a3.get("bootstrap") else
                "no bootstrap, so no intervals" if a3.get("bootstrap") == 0 else "95 %")
        lines.append(f"  exponents     alpha = {num(a3['alpha'])} {interval(ci.get('alpha'))}   "
                     f"beta = {num(a3['beta'])} {interval(ci.get('beta'))}   ({boot})")
        if "a" in a3 and "b" in a3:
            lines.append(f"  allocation    N_opt ∝ C^{num(a3['a'])} {interval(ci.get('a'))}   "
                         f"D_opt ∝ C^{num(a3['b'])} {interval(ci.get('b'))}")
    hold, why = s.section("holdout")
    if hold is None:
        lines.append(f"  held-out      no check: {clause(why)}")
    else:
        runs = hold.get("held_out") or []
        lines.append(f"  held-out      max |relative error| {percent(hold.get('max_abs_rel_error'))} on "
                     f"{len(runs)} run(s) predicted from the rest ({', '.join(map(str, runs[:4]))}"
                     f"{', ...' if len(runs) > 4 else ''})")
    allocation, why = s.section("allocation")
    if allocation is None:
        lines.append(f"  next budget   no prediction: {clause(why)}")
    else:
        nxt = min(allocation, key=lambda a: float(a.get("flops") or math.inf))
        lines.append(f"  next budget   C = {num(nxt.get('flops'))} FLOPs: N_opt = {human(nxt.get('n_opt'))} params, "
                     f"D_opt = {human(nxt.get('d_opt'))} tokens ({num(nxt.get('tokens_per_param'), 3)} tokens/param), "
                     f"predicted {s.target} {num(nxt.get('loss_pred'))} {interval(nxt.get('loss_ci95'))}")
    counts = s.metrics["status"].value_counts()
    lines.append("  runs          " + ", ".join(f"{counts.get(st, 0)} {st}" for st in STATUSES))
    lines.append(f"  report        {index_html.resolve()}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the page

SECTIONS = [  # (id, heading, intro, figures, tables)
    ("scaling", "Scaling laws", "How loss falls with parameters and with data, and the fitted law.",
     ["loss_vs_params", "loss_vs_tokens"], ["fit_parameters"]),
    ("allocation", "Compute-optimal allocation", "How to split a compute budget between parameters and data.",
     ["isoflop", "frontier"], ["isoflop_optima", "allocation"]),
    ("training", "Training", "Every run's loss curve.", ["training_curves"], []),
    ("downstream", "Generation quality", "BLEU and ROUGE-L of greedy generations.", ["bleu_rouge"], []),
    ("holdout", "Held-out check", "Whether the law predicts runs it has not seen: the number that says "
     "whether to trust the extrapolation.", ["holdout"], ["holdout"]),
    ("runs", "Runs", "Every run of the grid with its status and metrics.", [], ["grid"]),
    ("reproducibility", "Reproducibility", "The corpus, tokenizer and software behind these numbers.", [],
     ["reproducibility"]),
]

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 1.7em; margin: 0.2em 0; }
h2 { font-size: 1.3em; margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.subtitle, .intro, .note, figcaption { color: #555; }
nav { margin: 1em 0; font-size: 0.95em; }
nav a { margin-right: 1.1em; color: #2458a6; text-decoration: none; }
pre.summary { background: #f5f6f8; border: 1px solid #e2e4e8; border-radius: 6px; padding: 12px 14px;
              overflow-x: auto; font-size: 13px; line-height: 1.45; }
figure { margin: 1.6em 0; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #eee; }
figcaption { font-size: 0.92em; margin-top: 0.4em; }
figcaption a { color: #2458a6; }
.why { background: #fff8e6; border-left: 4px solid #e0a800; padding: 8px 12px; color: #5a4500; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e6e6e6; text-align: left; vertical-align: top; }
th { background: #f5f6f8; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status-ok { color: #17723a; } .status-diverged, .status-failed { color: #b3261e; font-weight: 600; }
.status-missing, .status-other { color: #8a6d00; font-weight: 600; }
.table-wrap { overflow-x: auto; }
"""


def _is_number(text: str) -> bool:
    """Numbers as this module shows them (0.3, 1.2e13, 250K, [a, b], 1.2 %), for right alignment."""
    return any(ch.isdigit() for ch in text) and not any(ch.isalpha() and ch not in "eKMGT" for ch in text)


def html_table(table: Table) -> str:
    out = [f'<div class="table-wrap"><table id="table-{table.name}" data-table="{table.name}">',
           "<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr></thead><tbody>"]
    numeric = [any(_is_number(row[i].text) for row in table.rows) for i in range(len(table.columns))]
    for row in table.rows:
        cells = []
        for cell, is_num in zip(row, numeric):
            attrs = []
            css = (cell.css + (" num" if is_num else "")).strip()
            if css:
                attrs.append(f'class="{css}"')
            if cell.source:
                attrs.append(f'data-fit="{html.escape(cell.source)}"')
                attrs.append(f"data-value=\"{html.escape(json.dumps(cell.value))}\"")
            cells.append(f"<td{''.join(' ' + a for a in attrs)}>{html.escape(cell.text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    out += [f'<p class="note">{html.escape(n)}</p>' for n in table.notes]
    return "\n".join(out) if table.rows else "\n".join(f'<p class="why">{html.escape(n)}</p>' for n in table.notes)


def html_figure(block: FigureBlock) -> str:
    heading = f"Figure {block.number}. {block.title}."
    if block.why:
        return (f'<figure id="fig-{block.name}" data-figure="{block.name}" class="missing">'
                f'<p class="why"><b>{html.escape(heading)}</b> Not drawn: {html.escape(block.why)}</p></figure>')
    data = base64.b64encode(block.png).decode("ascii")
    width = int.from_bytes(block.png[16:20], "big") * 2 // 3  # 150 dpi shown at ~100 CSS px per inch
    return (f'<figure id="fig-{block.name}" data-figure="{block.name}">'
            f'<img src="data:image/png;base64,{data}" width="{width}" alt="{html.escape(block.title)}">'
            f"<figcaption><b>{html.escape(heading)}</b> {html.escape(block.caption)}</figcaption></figure>")


def render_html(s: Study, summary: str, figures: dict[str, FigureBlock], tables: dict[str, Table]) -> str:
    counts = s.metrics["status"].value_counts()
    subtitle = (f"{len(s.metrics)} runs ({counts.get('ok', 0)} ok) · target {s.target} · N = {label(s.n_col)} · "
                f"made by scalelab {__version__}")
    body = [f"<h1>{html.escape(s.title)}</h1>", f'<p class="subtitle">{html.escape(subtitle)}</p>',
            "<nav>" + "".join(f'<a href="#{sid}">{html.escape(h)}</a>' for sid, h, *_ in SECTIONS) + "</nav>",
            '<h2 id="summary">Summary</h2>', f'<pre class="summary">{html.escape(summary)}</pre>']
    for sid, heading, intro, figure_names, table_names in SECTIONS:
        body.append(f'<section id="{sid}"><h2>{html.escape(heading)}</h2><p class="intro">{html.escape(intro)}</p>')
        body += [html_figure(figures[n]) for n in figure_names]
        for name in table_names:
            body.append(f"<h3>{html.escape(tables[name].title)}</h3>")
            body.append(html_table(tables[name]))
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(s.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def standalone_table(table: Table, title: str) -> str:
    """One table as its own small page, for Snakemake's report (which shows HTML inline)."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h3>{html.escape(table.title)}</h3>\n{html_table(table)}\n"
            "</body></html>\n")


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(table: Table) -> str:
    if not table.rows:
        return "\n\n".join(f"> {n}" for n in table.notes)
    numeric = [any(_is_number(row[i].text) for row in table.rows) for i in range(len(table.columns))]
    lines = ["| " + " | ".join(md_escape(c) for c in table.columns) + " |",
             "|" + "|".join(" ---: " if is_num else " --- " for is_num in numeric) + "|"]
    lines += ["| " + " | ".join(md_escape(c.text) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "".join(f"\n\n{n}" for n in table.notes)


def render_markdown(s: Study, summary: str, figures: dict[str, FigureBlock], tables: dict[str, Table]) -> str:
    out = [f"# {s.title}", "", "## Summary", "", "```text", summary.rstrip(), "```", ""]
    for _, heading, intro, figure_names, table_names in SECTIONS:
        out += [f"## {heading}", "", intro, ""]
        for name in figure_names:
            block = figures[name]
            heading_text = f"Figure {block.number}. {block.title}."
            if block.why:
                out += [f"> **{heading_text}** Not drawn: {block.why}", ""]
            else:
                out += [f"![{block.title}](figures/{name}.png)", "",
                        f"**{heading_text}** {block.caption} ([SVG](figures/{name}.svg))", ""]
        for name in table_names:
            out += [f"### {tables[name].title}", "", md_table(tables[name]), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- entry points

def output_paths(out: str | Path) -> list[Path]:
    """Every file `report` writes, at fixed names (what the Snakemake rule declares)."""
    out = Path(out)
    paths = [out / "index.html", out / "report.md", out / "summary.txt"]
    paths += [out / "figures" / f"{name}.{ext}" for name in FIGURES for ext in ("png", "svg")]
    paths += [out / "tables" / f"{name}.html" for name in TABLES]
    return paths


def build_report(metrics, fit, runs, data_meta, out, title: str = "scalelab study") -> str:
    """Write the whole report into `out` and return the summary text."""
    s = load_study(Path(metrics), Path(fit), Path(runs), Path(data_meta), title)
    out = Path(out)
    figures = draw_figures(s, out / "figures")
    tables = build_tables(s)
    for name, table in tables.items():
        write_text(out / "tables" / f"{name}.html", standalone_table(table, s.title))
    summary = summary_text(s, out / "index.html")
    write_text(out / "report.md", render_markdown(s, summary, figures, tables))
    write_text(out / "index.html", render_html(s, summary, figures, tables))
    write_text(out / "summary.txt", summary)  # last: its presence means the report is complete
    return summary


def print_summary(report_dir: str | Path = "results/report") -> bool:
    """Print summary.txt if a report exists (for the Snakefile's onsuccess); True if printed."""
    path = Path(report_dir) / "summary.txt"
    if not path.is_file():
        return False
    print(path.read_text(), end="", flush=True)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", type=Path, default=Path("results/metrics.csv"),
                        help="metrics CSV (one row per run)")
    parser.add_argument("--fit", type=Path, default=Path("results/fit/fit.json"), help="fit.json from `scalelab fit`")
    parser.add_argument("--runs", type=Path, default=Path("results/runs"), help="folder of run folders with curve.csv")
    parser.add_argument("--data-meta", type=Path, default=Path("results/data/meta.json"),
                        help="corpus and tokenizer description (optional: the report says when it is absent)")
    parser.add_argument("--out", type=Path, default=Path("results/report"), help="output folder")
    parser.add_argument("--title", default="scalelab study", help="page title (config: report.title)")


def run(args: argparse.Namespace) -> None:
    summary = build_report(args.metrics, args.fit, args.runs, args.data_meta, args.out, args.title)
    print(summary, end="", flush=True)

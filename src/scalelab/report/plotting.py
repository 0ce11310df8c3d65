"""The look of every figure and the matplotlib helpers the figures share: one style, one
colormap per quantity (model size, token count, compute budget, so that colours mean the same
thing across figures), log axes with readable labels, legends, the placeholder image for a
figure that cannot be drawn, and saving PNG + SVG atomically with stable bytes."""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from ..files import atomic_path  # noqa: E402
from .fmt import human, label, short  # noqa: E402

MAX_LINES = 8  # more distinct levels than this and a family is coloured by a colorbar instead
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


def plain(text) -> str:
    """A user's string (a model name, a run id) as literal text: `$` would start mathtext."""
    return str(text).replace("$", r"\$")


def size_label(names: dict, n) -> str:
    """'m (N = 332K)', or 'N = 332K' when the CSV names no models."""
    name = names.get(float(n))
    return f"{plain(name)} (N = {human(n)})" if name else f"N = {human(n)}"


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
    ax.text(0.5, 0.5, textwrap.fill(plain(text), 42), ha="center", va="center", transform=ax.transAxes,
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


def placeholder(title: str, why: str):
    """The file that stands in for a figure that cannot be drawn: it says why."""
    fig = plt.figure(figsize=(6.4, 1.6))
    fig.text(0.5, 0.5, textwrap.fill(plain(f"{title}: not drawn. {why}"), 70), ha="center", va="center",
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

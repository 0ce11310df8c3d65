"""The look of every figure and the matplotlib helpers the figures share: one style, one
colormap per quantity (model size, token count, compute budget, so that colours mean the same
thing across figures), log axes with readable labels, legends outside the data, fitted curves
that never set the axis limits, and saving PNG + SVG atomically with stable bytes."""

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


class CannotDraw(Exception):
    """Raised by a figure function with the one sentence that replaces the figure."""


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
    ax.text(
        0.5,
        0.5,
        textwrap.fill(plain(text), 42),
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="0.3",
        fontsize=9.5,
    )


# Artists a caption may describe carry one of these gids; the caption is built from the gids the
# figure actually holds (figures.caption_for), so it never names something that is not drawn.
FIT_GID = "fit"  # a fitted curve: it never sets the axis limits (see fit_line)
CLIPPED_GID = "clipped"  # a line allowed past the axis limits (a diverged run's curve), said in the caption


def fit_line(ax, x, y, *args, gid: str = FIT_GID, **kwargs):
    """A fitted or model curve (gid "fit..."): `limits_from_data` keeps it from setting the axis
    limits, so a degenerate fit far below the points cannot squash them; it is clipped to the
    data's range plus matplotlib's margin."""
    return ax.plot(x, y, *args, gid=gid, **kwargs)


def limits_from_data(fig) -> list[str]:
    """Autoscale every axes that holds a fitted curve from everything else it holds (points,
    data lines, bands), so that the curves never set the limits. Returns, for each axes whose
    fitted curves then lie wholly outside it, where they went ("below", "above", "beside"), and
    says so inside that axes: a degenerate fit is shown as one, not hidden."""
    outside = []
    for ax in fig.axes:
        fits = [line for line in ax.lines if (line.get_gid() or "").startswith(FIT_GID)]
        if not fits:
            continue
        for line in fits:
            line.set_visible(False)
        ax.relim(visible_only=True)  # lines and patches; collections are added back below
        for collection in ax.collections:
            if collection.get_visible() and len(collection.get_datalim(ax.transData).get_points()):
                limits = collection.get_datalim(ax.transData)
                if np.isfinite(limits.get_points()).all():
                    ax.update_datalim(limits.get_points())
        ax.autoscale_view()
        for line in fits:
            line.set_visible(True)
        where = _where_outside(ax, fits)
        if where:
            outside.append(where)
            ax.text(
                0.5,
                0.02 if where == "below" else 0.97,
                f"the fitted curves lie {where} the axes",
                transform=ax.transAxes,
                ha="center",
                va="bottom" if where == "below" else "top",
                fontsize=8.5,
                color="C3",
            )
    return outside


def _where_outside(ax, lines) -> str:
    """'' when some point of the lines is inside the axes, else where they are."""
    (x_lo, x_hi), (y_lo, y_hi) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    ys = []
    for line in lines:
        x, y = (np.asarray(v, float) for v in line.get_data())
        seen = np.isfinite(x) & np.isfinite(y) & (x >= x_lo) & (x <= x_hi)
        if ((y[seen] >= y_lo) & (y[seen] <= y_hi)).any():
            return ""
        ys.append(y[seen])
    ys = np.concatenate(ys) if ys else np.array([])
    if not len(ys):
        return "beside"
    return "below" if (ys < y_lo).all() else "above" if (ys > y_hi).all() else "outside"


def legend_with_diamonds(ax, filled: str | None, hollow: str | None) -> None:
    """legend_outside with, after the drawn series, a grey filled and a white hollow diamond
    labelled `filled` and `hollow` (each only when given: only what the figure drew)."""
    handles, labels = ax.get_legend_handles_labels()
    for text, face in ((filled, "0.6"), (hollow, "white")):
        if text:
            handles.append(Line2D([], [], marker="D", ls="none", mec="black", mfc=face))
            labels.append(text)
    legend_outside(ax, handles, labels)


def legend_outside(ax, handles=None, labels=None, **kwargs):
    """The legend to the right of the axes, where it can cover no point (savefig's tight bbox
    keeps it in the file)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def artist_gids(fig) -> set[str]:
    """The gids of every artist the figure holds (legend proxies excluded: they draw no data)."""
    gids = set()
    for ax in fig.axes:
        for artist in (*ax.lines, *ax.collections, *ax.patches):
            if artist.get_gid():
                gids.add(artist.get_gid())
    return gids


def fit_legend(ax, fit_label: str, **kwargs) -> None:
    """The figure's legend plus two grey keys that say which marks are data and which the fit
    (`fit_label`, the law drawn, e.g. "kaplan fit"; "" when no law is drawn)."""
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="o", ls="none", color=DATA_COLOR))
    labels.append("measured")
    if fit_label:
        handles.append(Line2D([], [], color=FIT_COLOR))
        labels.append(fit_label)
    if kwargs.pop("outside", False):
        legend_outside(ax, handles, labels, **kwargs)
    else:
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
        ax.plot(
            frame[x_col],
            frame[y_col],
            "o",
            mfc="none",
            mec="0.55",
            ms=5,
            gid="off-grid",
            label="IsoFLOP runs" if isoflop else "other runs",
        )


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

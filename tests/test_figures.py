"""Figures that never hide data, with captions that describe what was drawn.

Every figure of the registry is drawn for four synthetic studies (tests/test_report.make_study,
a real fit of a known law): a default-like grid with IsoFLOP budgets, one with an lr sweep, a
degenerate fit (alpha = 9.5, A = 1e40: like the alpha 18.25, A 2.5e74 a tiny study grown by one
token count gave, within fit.json v2's bound on exponents) and a
study without sweeps or budgets. For each figure drawn: every data point (markers and data lines,
not the fitted curves) lies inside its axes' limits, the legend covers none of them, and every
artist the caption names is in the figure.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection

from scalelab.report import figures, registry
from scalelab.report.inputs import load_study
from scalelab.report.plotting import CLIPPED_GID, FIT_GID, STYLE
from scalelab.report.settings import ReportSettings

from test_report import make_study


def _degenerate(root: Path) -> None:
    """The fitted law of the issue's degenerate study: its curves fall far below every point."""
    make_study(root, isoflop=False, extras=False)
    path = root / "results" / "fit" / "fit.json"
    fit = json.loads(path.read_text())
    fit["approach3"].update(alpha=9.5, A=1e40)  # fit.json v2 bounds the exponents at 10
    path.write_text(json.dumps(fit))


STUDIES = {
    "default": lambda root: make_study(root),
    "lr_sweep": lambda root: make_study(root, isoflop=False, extras=False, lrs=(1e-3, 3e-3, 1e-2, 3e-2)),
    "degenerate": _degenerate,
    "no_sweeps_or_budgets": lambda root: make_study(root, isoflop=False, extras=False),
}


@pytest.fixture(scope="module", params=list(STUDIES))
def drawn(request, tmp_path_factory):
    """{name: (figure, caption)} for every figure the study supports."""
    root = tmp_path_factory.mktemp(request.param)
    STUDIES[request.param](root)
    results = root / "results"
    study = load_study(results / "metrics.csv", results / "fit" / "fit.json", results / "runs",
                       results / "data" / "meta.json", ReportSettings())
    out = {}
    with plt.rc_context(STYLE):
        for spec in registry.FIGURES.values():
            try:
                fig, caption = figures.draw_figure(spec, study)  # as draw_figures draws it
            except figures.CannotDraw:
                continue
            fig.canvas.draw()  # final limits and legend positions
            out[spec.name] = (fig, caption)
    yield request.param, out
    plt.close("all")


def _data_artists(ax):
    """(artist, x, y) of every artist that shows data: not fitted curves (FIT_GID*), not a run's
    curve that the caption says may leave the axes (CLIPPED_GID*), not legend proxies."""
    for artist in ax.lines:
        gid = artist.get_gid() or ""
        if gid.startswith(FIT_GID) or gid.startswith(CLIPPED_GID) or gid == "not-ok":
            continue
        if artist.get_transform() is not ax.transData:  # a reference line across the axes (axhline)
            continue
        x, y = (np.asarray(v, float) for v in artist.get_data())
        if len(x):
            yield artist, x, y
    for artist in ax.collections:
        if isinstance(artist, PathCollection) and len(artist.get_offsets()):
            offsets = np.asarray(artist.get_offsets(), float)
            yield artist, offsets[:, 0], offsets[:, 1]


def test_every_data_point_lies_inside_its_axes(drawn):
    study, figs = drawn
    assert {"loss_vs_params", "loss_vs_tokens", "training_curves"} <= set(figs), study
    for name, (fig, _) in figs.items():
        for ax in fig.axes:
            (x_lo, x_hi), (y_lo, y_hi) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
            for artist, x, y in _data_artists(ax):
                keep = np.isfinite(x) & np.isfinite(y)
                x, y = x[keep], y[keep]
                assert ((x >= x_lo) & (x <= x_hi)).all(), (study, name, artist.get_label(), x, (x_lo, x_hi))
                assert ((y >= y_lo) & (y <= y_hi)).all(), (study, name, artist.get_label(), y, (y_lo, y_hi))


def test_no_legend_covers_a_data_point(drawn):
    study, figs = drawn
    for name, (fig, _) in figs.items():
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            box = legend.get_window_extent(renderer)
            for target in fig.axes:
                for artist, x, y in _data_artists(target):
                    keep = np.isfinite(x) & np.isfinite(y)
                    points = target.transData.transform(np.column_stack([x[keep], y[keep]]))
                    inside = [(px, py) for px, py in points if box.contains(px, py)]
                    assert not inside, (study, name, artist.get_label(), inside)


def _has(fig, test) -> bool:
    return any(test(line) for ax in fig.axes for line in ax.lines if len(line.get_xdata()))


def _hollow(line) -> bool:
    from matplotlib.colors import to_rgba

    face = line.get_markerfacecolor()
    return isinstance(face, str) and face == "none" or to_rgba(face)[:3] == (1.0, 1.0, 1.0)


# A phrase a caption may use, and what the figure must then hold.
ARTIST_WORDS = {
    "hollow diamond": lambda fig: _has(fig, lambda l: l.get_marker() == "D" and _hollow(l)),
    "filled diamonds": lambda fig: _has(fig, lambda l: l.get_marker() == "D" and not _hollow(l)),
    "black diamonds": lambda fig: _has(fig, lambda l: l.get_marker() == "D"),
    "hollow grey points": lambda fig: _has(fig, lambda l: l.get_marker() == "o" and _hollow(l)),
    "dotted": lambda fig: _has(fig, lambda l: l.get_linestyle() == ":"),
    "dashed": lambda fig: _has(fig, lambda l: l.get_linestyle() == "--"),
    "stars": lambda fig: _has(fig, lambda l: l.get_marker() == "*"),
    "red line": lambda fig: _has(fig, lambda l: l.get_linestyle() == "-" and (l.get_gid() or "").startswith("fit-")),
    "the curves are the fitted": lambda fig: _has(fig, lambda l: (l.get_gid() or "") == "fit-law"),
    "parabola": lambda fig: _has(fig, lambda l: (l.get_gid() or "") == "fit-parabola"),
    "joined": lambda fig: _has(fig, lambda l: l.get_marker() == "o" and l.get_linestyle() == "-"),
    "shaded": lambda fig: any(ax.patches for ax in fig.axes),
    "error bars": lambda fig: any(ax.collections for ax in fig.axes),
    "right:": lambda fig: sum(bool(ax.lines) for ax in fig.axes) >= 2,
    "grey points are the runs": lambda fig: _has(fig, lambda l: l.get_label() == "runs"),
}


def test_captions_name_only_what_was_drawn(drawn):
    study, figs = drawn
    for name, (fig, caption) in figs.items():
        if name == "holdout":  # its panels say in the figure itself when they are empty
            continue
        text = caption.lower()
        for phrase, present in ARTIST_WORDS.items():
            if phrase in text:
                assert present(fig), (study, name, phrase, caption)


def test_degenerate_fit_leaves_the_points_readable(drawn):
    """The issue's case: the law's curves fell to the bottom and the y axis ran to 140 nats."""
    study, figs = drawn
    if study != "degenerate":
        pytest.skip("the degenerate study only")
    fig, caption = figs["loss_vs_params"]
    ax = fig.axes[0]
    points = np.concatenate([y for _, _, y in _data_artists(ax)])
    low, high = ax.get_ylim()
    assert high - low < 1.5 * np.ptp(points), (low, high, np.ptp(points))  # the data fill the axis
    # The curves are drawn, clipped away: the figure and its caption say so instead of hiding it.
    assert "fitted Approach 3 law" in caption and "lie wholly outside the measured range" in caption
    assert any("fitted curves lie below" in text.get_text() for text in ax.texts)


def test_captions_of_a_study_without_budgets_name_no_isoflop_marks(drawn):
    study, figs = drawn
    if study != "no_sweeps_or_budgets":
        pytest.skip("the study without sweeps or budgets only")
    assert "isoflop" not in figs and "lr_sensitivity" not in figs
    caption = figs["frontier"][1]
    assert "diamond" not in caption.lower() and "dotted" not in caption.lower()
    assert "lie wholly outside" not in figs["loss_vs_params"][1]  # a sound fit's curves are visible

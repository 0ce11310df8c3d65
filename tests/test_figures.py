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
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection

from scalelab.laws import law
from scalelab.report import figures, registry
from scalelab.report.inputs import load_study
from scalelab.report.plotting import CLIPPED_GID, FIT_GID, STYLE, grid_levels
from scalelab.report.settings import ReportSettings

from test_report import make_study


def _degenerate(root: Path) -> None:
    """The fitted law of the issue's degenerate study: its curves fall far below every point."""
    make_study(root, isoflop=False, extras=False)
    path = root / "results" / "fit" / "fit.json"
    fit = json.loads(path.read_text())
    fit["approach3"].update(alpha=9.5, A=1e40)  # fit.json v2 bounds the exponents at 10
    # The curves draw the chosen form: make it the degenerate Chinchilla law.
    fit["forms"]["chinchilla"]["params"].update(alpha=9.5, A=1e40)
    fit["chosen_form"] = "chinchilla"
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
    study = load_study(
        results / "metrics.csv",
        results / "fit" / "fit.json",
        results / "runs",
        results / "data" / "meta.json",
        ReportSettings(),
    )
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
    "akima spline": lambda fig: _has(fig, lambda l: (l.get_gid() or "") == "fit-curve"),
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
    assert "fitted Approach 3 (chinchilla) law" in caption and "lie wholly outside the measured range" in caption
    assert any("fitted curves lie below" in text.get_text() for text in ax.texts)


def test_captions_of_a_study_without_budgets_name_no_isoflop_marks(drawn):
    study, figs = drawn
    if study != "no_sweeps_or_budgets":
        pytest.skip("the study without sweeps or budgets only")
    assert "isoflop" not in figs and "lr_sensitivity" not in figs
    caption = figs["frontier"][1]
    assert "diamond" not in caption.lower() and "dotted" not in caption.lower()
    assert "lie wholly outside" not in figs["loss_vs_params"][1]  # a sound fit's curves are visible


# ----------------------------------------------------------------------------- the law drawn is the chosen form


@pytest.fixture(scope="module")
def base_study(tmp_path_factory):
    """A study without sweeps or budgets (its fit fits chinchilla and kaplan), written once."""
    root = tmp_path_factory.mktemp("forms")
    make_study(root, isoflop=False, extras=False)
    return root / "results"


def _drawn_with(base: Path, tmp: Path, edit) -> tuple[dict, dict]:
    """Every figure of the base study with fit.json edited by `edit`: ({name: (fig, caption)}, fit)."""
    results = tmp / "results"
    shutil.copytree(base, results)
    path = results / "fit" / "fit.json"
    fit = json.loads(path.read_text())
    edit(fit)
    path.write_text(json.dumps(fit))
    study = load_study(
        results / "metrics.csv", path, results / "runs", results / "data" / "meta.json", ReportSettings()
    )
    out = {}
    with plt.rc_context(STYLE):
        for spec in registry.FIGURES.values():
            try:
                out[spec.name] = figures.draw_figure(spec, study)
            except figures.CannotDraw:
                continue
            plt.close(out[spec.name][0])  # its lines, legend and caption stay readable
    return out, study


def _lines(fig, gid, ax=0):
    return [line for line in fig.axes[ax].lines if line.get_gid() == gid]


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def _chinchilla(study, n, d):
    return law.predict_loss(n, d, **{k: study.fit["approach3"][k] for k in law.LAW_KEYS})


def _check_family(fig, study, levels, loss, other):
    """Each fit-law line is `loss(x, level)` of its level, in order, and not the `other` law."""
    lines = _lines(fig, "fit-law")
    assert len(lines) == len(levels) >= 2
    for line, level in zip(lines, levels):
        x, y = (np.asarray(v, float) for v in line.get_data())
        np.testing.assert_allclose(y, loss(x, level), rtol=1e-12)
        assert not np.allclose(y, other(x, level), rtol=1e-3)  # the two laws are told apart


def test_a_kaplan_chosen_study_draws_kaplan_curves_and_frontier(base_study, tmp_path):
    drawn, study = _drawn_with(base_study, tmp_path, lambda f: f.update(chosen_form="kaplan"))
    params = study.fit["forms"]["kaplan"]["params"]
    kaplan = law.FORMS["kaplan"]
    ok = study.ok
    fig, caption = drawn["loss_vs_params"]
    _check_family(
        fig,
        study,
        grid_levels(ok, study.d_col, study.n_col),
        lambda n, d: kaplan.loss(params, n, d),
        lambda n, d: _chinchilla(study, n, d),
    )
    assert "kaplan fit" in _legend_texts(fig) and "Approach 3 fit" not in _legend_texts(fig)
    assert "fitted kaplan law L = E + [(N_c/N)" in caption and "the form the fit chose" in caption
    fig, caption = drawn["loss_vs_tokens"]
    _check_family(
        fig,
        study,
        grid_levels(ok, study.n_col, study.d_col),
        lambda d, n: kaplan.loss(params, n, d),
        lambda d, n: _chinchilla(study, n, d),
    )
    assert "kaplan law" in caption
    # The frontier: Kaplan's optimum N_opt(C), D_opt(C) and its loss there, on every panel.
    fig, caption = drawn["frontier"]
    for ax in range(3):
        (line,) = _lines(fig, "fit-frontier", ax)
        flops, y = (np.asarray(v, float) for v in line.get_data())
        n_opt, d_opt = law.optimal_allocation(kaplan, params, flops)
        assert np.isfinite(n_opt).all()
        np.testing.assert_allclose(y, (n_opt, d_opt, kaplan.loss(params, n_opt, d_opt))[ax], rtol=1e-12)
        assert not _lines(fig, "fit-approach3", ax)
    assert "minimises the kaplan law" in caption and "Approach 3 allocation" not in caption
    assert "kaplan fit" in _legend_texts(fig)


def test_a_chinchilla_chosen_study_draws_the_approach3_law_as_before(base_study, tmp_path):
    drawn, study = _drawn_with(base_study, tmp_path, lambda f: f.update(chosen_form="chinchilla"))
    kaplan, params = law.FORMS["kaplan"], study.fit["forms"]["kaplan"]["params"]
    fig, caption = drawn["loss_vs_params"]
    _check_family(
        fig,
        study,
        grid_levels(study.ok, study.d_col, study.n_col),
        lambda n, d: _chinchilla(study, n, d),
        lambda n, d: kaplan.loss(params, n, d),
    )
    assert "chinchilla fit" in _legend_texts(fig)
    assert "fitted Approach 3 (chinchilla) law L = E + A/N^alpha + B/D^beta" in caption
    fig, caption = drawn["frontier"]
    (line,) = _lines(fig, "fit-approach3", 0)
    flops, y = (np.asarray(v, float) for v in line.get_data())
    a3 = study.fit["approach3"]
    np.testing.assert_allclose(y, law.compute_optimal(flops, a3["A"], a3["B"], a3["alpha"], a3["beta"])[0], rtol=1e-12)
    assert "Approach 3 allocation N_opt = G (C/6)^a" in caption and "not the chosen form" not in caption


def test_a_chosen_form_that_cannot_be_drawn_falls_back_to_approach3_and_says_so(base_study, tmp_path):
    drawn, study = _drawn_with(base_study, tmp_path, lambda f: f.update(chosen_form="data_constrained"))
    fig, caption = drawn["loss_vs_params"]
    _check_family(
        fig,
        study,
        grid_levels(study.ok, study.d_col, study.n_col),
        lambda n, d: _chinchilla(study, n, d),
        lambda n, d: law.FORMS["kaplan"].loss(study.fit["forms"]["kaplan"]["params"], n, d),
    )
    assert "Approach 3 (chinchilla) law" in caption and "the form the fit chose" not in caption
    assert "not the chosen form's: the chosen form data_constrained was not fitted" in caption
    assert "not the chosen form's" in drawn["frontier"][1]


def test_a_chosen_form_without_an_optimum_leaves_the_frontier_to_approach3(base_study, tmp_path):
    # N_c -> 0 removes Kaplan's N term: along C = 6·N·D the loss falls towards the smallest N, no optimum.
    def edit(fit):
        fit["chosen_form"] = "kaplan"
        fit["forms"]["kaplan"]["params"]["N_c"] = 1e-30

    drawn, study = _drawn_with(base_study, tmp_path, edit)
    assert _lines(drawn["loss_vs_params"][0], "fit-law")  # the curves stay Kaplan's
    assert "kaplan law" in drawn["loss_vs_params"][1]
    fig, caption = drawn["frontier"]
    assert _lines(fig, "fit-approach3", 0) and not _lines(fig, "fit-frontier", 0)
    assert "not the chosen form's: the chosen form kaplan has no compute-optimal split" in caption

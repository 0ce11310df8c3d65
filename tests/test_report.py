"""The report stage on synthetic studies built from a known law.

`make_study(root)` writes a default-like `results/` tree (metrics.csv, curve.csv per run,
fit.json, data/meta.json) and `check_report(out_dir, fit)` checks a finished report. (The
end-to-end tests in test_workflow.py and test_ecosystem.py check the report of real studies.)
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab import cli
from scalelab.laws import law
from scalelab.report import fmt, print_summary, registry
from scalelab.files import read_json, write_json
from scalelab.fit import fit_frame

REPO = Path(__file__).resolve().parents[1]
LAW = {"E": 2.0, "A": 60.0, "B": 80.0, "alpha": 0.30, "beta": 0.30}
MODELS = {"xs": (2, 32, 2), "s": (2, 64, 2), "m": (3, 96, 3), "l": (4, 128, 4)}
TOKENS = (100_000, 200_000, 400_000)
ISOFLOP_BUDGETS = (1e11, 3e11)


# ----------------------------------------------------------------------------- synthetic study


def _row(model: str, tokens: float, status: str = "ok", budget=None, noise: float = 0.0) -> dict:
    n_layer, d_model, n_head = MODELS.get(model, (6, 192, 6))
    params = 12 * n_layer * d_model**2
    loss = float(law.predict_loss(params, tokens, **LAW)) * (1 + noise)
    ok = status == "ok"
    return {
        "run": f"{model}-{fmt.human(tokens)}-s0",
        "model": model,
        "n_layer": n_layer,
        "d_model": d_model,
        "n_head": n_head,
        "vocab_size": 2048,
        "context": 128,
        "params": params,
        "params_total": params + 2048 * d_model,
        "tokens": int(tokens),
        "flops": 6.0 * params * tokens,
        "flops_total": 6.0 * (params + 2048 * d_model) * tokens,
        "seed": 0,
        "isoflop_budget": budget,
        "steps": int(tokens // 4096) if status != "missing" else None,
        "train_loss": loss * 1.01 if ok else (None if status == "missing" else 25.0),
        "val_loss": loss if ok else None,
        "wall_s": params * tokens / 2e9 if status != "missing" else None,
        "tokens_per_s": 2e5 if ok else None,
        "status": status,
        "resumed_from_step": None,
        "torch_version": None if status == "missing" else "2.13.0",
        "lightning_version": None if status == "missing" else "2.6.0",
        "test_loss": loss * 1.005 if ok else None,
        "test_ppl": math.exp(loss * 1.005) if ok else None,
        "test_bpb": loss * 1.005 / math.log(2) / 3.8 if ok else None,
        "bleu": 40.0 / loss if ok else None,
        "rouge1": 1.2 / loss if ok else None,
        "rouge2": 0.5 / loss if ok else None,
        "rougeL": 1.0 / loss if ok else None,
    }


def _curve(row: dict, rng: np.random.Generator) -> pd.DataFrame:
    steps = np.arange(0, 61)
    tokens = steps * row["tokens"] / 60
    final = row["val_loss"] if row["status"] == "ok" else 6.0
    train = final + (math.log(2048) - final) * np.exp(-steps / 10) + rng.normal(0, 0.03, len(steps))
    if row["status"] == "diverged":
        train[40:] = np.linspace(8, 40, 21)
    val = np.where(steps % 15 == 0, train + 0.02, np.nan)
    lr = 3e-3 * np.minimum(1, (steps + 1) / 5)
    return pd.DataFrame(
        {
            "step": steps,
            "tokens": tokens.astype(int),
            "flops": 6 * row["params"] * tokens,
            "lr": lr,
            "train_loss": train,
            "val_loss": val,
        }
    )


def _meta() -> dict:
    return {
        "vocab_size": 2048,
        "dtype": "uint16",
        "eot_id": 0,
        "sep_id": 1,
        "format": "text",
        "splits": {
            s: {"documents": d, "tokens": t, "bytes": t * 3.8}
            for s, d, t in (("train", 2400, 3_000_000), ("val", 25, 30_000), ("test", 25, 31_000))
        },
        "bytes_per_token": {"train": 3.8, "val": 3.79, "test": 3.81},
        "corpus": {"source": "python-stdlib", "files": 812, "bytes": 11_400_000, "fingerprint": "3f2a9c1d"},
        "tokenizer": {"vocab_size": 2048, "fingerprint": "b81e77aa"},
    }


def _sweep_rows(rows: list[dict], lrs, rng: np.random.Generator) -> list[dict]:
    """Each ok grid row once per lr, the loss raised by 0.05·(log lr − log lr_opt(N))², with
    lr_opt = 0.3·N^-0.3; sweep_group and best_in_sweep from the real aggregate."""
    from scalelab.evaluate.aggregate import mark_sweeps
    from scalelab.config.sweeps import sweep_suffix

    swept = []
    for row in rows:
        for lr in lrs:
            penalty = 0.05 * (math.log(lr) - math.log(0.3 * row["params"] ** -0.3)) ** 2
            loss = row["val_loss"] + penalty + rng.normal(0, 0.002) if row["status"] == "ok" else None
            swept.append(
                {
                    **row,
                    "run": row["run"] + sweep_suffix({"lr": lr}),
                    "lr": lr,
                    "val_loss": loss,
                    "tokens_requested": row["tokens"],
                }
            )
    mark_sweeps(swept, ["lr"])
    return swept


def make_study(
    root: str | Path,
    *,
    sizes=tuple(MODELS),
    isoflop: bool = True,
    extras: bool = True,
    meta: bool = True,
    bootstrap: int = 10,
    seed: int = 0,
    lrs=(),
) -> dict:
    """Write root/results/{metrics.csv, runs/*/curve.csv, fit/fit.json, data/meta.json}.

    A default-like grid (4 model sizes x 3 token counts) from a known law with 1 % noise; with
    `isoflop`, two IsoFLOP budgets over the 4 sizes; with `extras`, one diverged and one missing
    run. With `lrs`, every grid run is swept over those learning rates (`_sweep_rows`). fit.json
    comes from `scalelab.fit.fit_frame`. Returns the fit.json written.
    """
    rng = np.random.default_rng(seed)
    results = Path(root) / "results"
    rows = [_row(m, t, noise=rng.normal(0, 0.01)) for m in sizes for t in TOKENS]
    if lrs:
        rows = _sweep_rows(rows, lrs, rng)
    if isoflop:
        for c in ISOFLOP_BUDGETS:
            for m in sizes:
                n_layer, d_model, _ = MODELS[m]
                rows.append(_row(m, round(c / (6 * 12 * n_layer * d_model**2)), budget=c, noise=rng.normal(0, 0.005)))
    if extras:
        rows += [_row("l", 800_000, status="diverged"), _row("xl", 100_000, status="missing")]
    frame = pd.DataFrame(rows)
    (results / "fit").mkdir(parents=True, exist_ok=True)
    frame.to_csv(results / "metrics.csv", index=False)
    for row in rows:
        run_dir = results / "runs" / row["run"]
        run_dir.mkdir(parents=True, exist_ok=True)
        if row["status"] != "missing":
            _curve(row, rng).to_csv(run_dir / "curve.csv", index=False)
    # The real fit, kept small (32 starts, 10 resamples) so that the test stays quick.
    fit = fit_frame(
        frame,
        loss_col="val_loss",
        bootstrap=bootstrap,
        grid_points=2,
        workers=1,
        seed=seed,
        sweep_keys=("lr",) if lrs else (),
        metrics=("test_bpb", "bleu"),
    )
    write_json(results / "fit" / "fit.json", fit)
    if meta:
        (results / "data").mkdir(parents=True, exist_ok=True)
        write_json(results / "data" / "meta.json", _meta())
    return read_json(results / "fit" / "fit.json")  # as the report reads it: NaN became null


def run_report(root: Path, *extra: str) -> int:
    results = root / "results"
    return cli.main(
        [
            "report",
            "--metrics",
            str(results / "metrics.csv"),
            "--fit",
            str(results / "fit" / "fit.json"),
            "--runs",
            str(results / "runs"),
            "--data-meta",
            str(results / "data" / "meta.json"),
            "--out",
            str(results / "report"),
            *extra,
        ]
    )


# ----------------------------------------------------------------------------- checking a report


class PageParser(HTMLParser):
    """Collects what the checks need: images, figures, fit-number cells, external references."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images, self.figures, self.missing, self.cells, self.external = [], [], [], [], []
        self.tags, self._cell, self._text = [], None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "figure":
            self.figures.append(attrs["data-figure"])
        if "data-absent" in attrs:  # a figure the data could not support: one line, no figure
            self.missing.append(attrs["data-absent"])
        if tag == "td" and "data-fit" in attrs:
            self._cell, self._text = attrs, []

    def handle_data(self, data):
        if self._cell is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append((self._cell["data-fit"], json.loads(self._cell["data-value"]), "".join(self._text)))
            self._cell = None


def resolve(fit: dict, path: str):
    value = fit
    for part in path.split("."):
        if isinstance(value, list):
            value = value[int(part)] if int(part) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def parse_shown(text: str) -> list[float]:
    """The numbers a cell shows: '0.3', '1.234e15', '74.94K', '[0.28, 0.32]', '1.25 %' (a fraction)."""
    scale = 0.01 if text.strip().endswith("%") else 1.0
    units = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return [float(x) * units[unit] * scale for x, unit in re.findall(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)([KMGT]?)", text)]


def decode_png(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    from PIL import Image
    import io

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def check_report(out: Path, fit: dict) -> PageParser:
    """Assert a finished report is complete and consistent with fit.json; return the parsed page."""
    for path in registry.output_paths(out):
        assert path.exists() and (path.is_dir() or path.stat().st_size > 0), f"{path} missing"
    page = PageParser()
    page.feed((out / "index.html").read_text())
    page.close()
    assert page.tags[:2] == ["html", "head"] and "body" in page.tags
    assert not page.external, f"the page loads external resources: {page.external}"
    drawn = [n for n in registry.FIGURES if n not in page.missing]
    assert page.figures == drawn  # in registry order, and only the drawn ones
    assert len(page.images) == len(drawn)
    # figures/ holds exactly the drawn figures: no placeholder for one that could not be drawn.
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        f"{n}.{e}" for n in drawn for e in ("png", "svg")
    )
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        image = decode_png(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert image.width >= 400 and image.height >= 150
    for name in drawn:
        decode_png((out / "figures" / f"{name}.png").read_bytes())
        assert (out / "figures" / f"{name}.svg").read_text()[:200].lstrip().startswith("<?xml")
    for source, value, shown in page.cells:  # every fit number on the page is fit.json's own
        assert value == resolve(fit, source), source
        if value is not None and shown != "–":
            expected = value if isinstance(value, list) else [value]
            tolerance = 5e-5 if shown.strip().endswith("%") else 0
            assert parse_shown(shown) == pytest.approx(expected, rel=6e-4, abs=tolerance), (source, shown)
    return page


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    fit = make_study(root)
    return root, fit


@pytest.fixture(scope="module")
def tiny_report(tiny):
    root, fit = tiny
    assert run_report(root, "--spec", '{"title": "tiny study"}') == 0
    return root / "results" / "report", fit


def test_report_is_complete_and_matches_fit(tiny_report, capsys):
    out, fit = tiny_report
    page = check_report(out, fit)
    assert sorted(page.missing) == ["curve_forecast", "lr_sensitivity"], (
        f"figures not drawn: {page.missing}"
    )  # nothing swept; no `scalelab curves`
    sources = {source for source, _, _ in page.cells}
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "ci95.alpha", "ci95.beta", "ci95.a"):
        assert f"approach3.{key}" in sources
    for key in (
        "approach2.a",
        "approach2.a_ci95",
        "approach2.budgets.1.n_opt",
        "allocation.0.n_opt",
        "allocation.1.loss_ci95",
        "allocation.1.n_opt_ci95",
        "holdout.max_abs_rel_error",
        "holdout.rel_error.0",
        "power_law_N.alpha",
    ):
        assert key in sources
    assert any(source.startswith("power_law_D.loglog_ols.") for source in sources)
    html_text = (out / "index.html").read_text()
    assert "<title>tiny study</title>" in html_text
    for status in ("diverged", "missing"):
        assert f'class="status-{status}"' in html_text
    assert "python-stdlib" in html_text and "2.13.0" in html_text  # reproducibility table


def test_summary_states_law_intervals_holdout_and_next_budget(tiny_report, capsys):
    out, fit = tiny_report
    summary = (out / "summary.txt").read_text()
    a3, nxt = fit["approach3"], fit["allocation"][0]
    assert f"alpha = {fmt.num(a3['alpha'])} {fmt.interval(a3['ci95']['alpha'])}" in summary
    assert f"beta = {fmt.num(a3['beta'])} {fmt.interval(a3['ci95']['beta'])}" in summary
    assert fmt.percent(fit["holdout"]["max_abs_rel_error"]) in summary
    assert f"N_opt = {fmt.human(nxt['n_opt'])} params" in summary
    # relative to the study folder, so a copied study names its own page (issue 21, finding 11)
    assert "  report        results/report/index.html\n" in summary and str(out) not in summary
    assert "  disk          runs " in summary and "trunk store" in summary
    assert html.escape(summary) in (out / "index.html").read_text()
    assert print_summary(out) is True
    assert capsys.readouterr().out == summary
    assert print_summary(out / "nowhere") is False


def test_markdown_has_same_content_with_linked_figures(tiny_report):
    out, fit = tiny_report
    md = (out / "report.md").read_text()
    for name in registry.FIGURES:
        if name == "lr_sensitivity":  # nothing swept: the reason instead of a link, and no file
            assert "not drawn. Nothing was swept over the learning rate" in md and f"](figures/{name}.png)" not in md
            assert not (out / "figures" / f"{name}.png").exists()
        elif name == "curve_forecast":  # no `scalelab curves`: the reason instead of a link, and no file
            assert "No curve laws were fitted" in md and not (out / "figures" / f"{name}.png").exists()
        else:
            assert (out / "figures" / f"{name}.png").exists()
            assert f"](figures/{name}.png)" in md
    assert fmt.num(fit["approach3"]["alpha"]) in md and "base64" not in md
    unused = next((line for line in md.splitlines() if line.startswith("> Not used by this study: ")), "")
    for table in registry.TABLES.values():
        assert f"### {table.title}" in md or f"{table.title}: " in unused, table.title


def test_lr_sweep_report_draws_sensitivity_laws_and_recommendation(tmp_path, capsys):
    """An lr sweep: the sensitivity figure is drawn, the law table shows fit.json's numbers, the
    summary recommends an lr; an optimum at the sweep's edge is flagged. Without a sweep (the tiny
    study) the figure is the placeholder, the table says why and the summary has no lr line."""
    fit = make_study(tmp_path, isoflop=False, extras=False, lrs=(1e-3, 3e-3, 1e-2, 3e-2))
    assert fit["selection"]["method"].startswith("best_in_sweep") and fit["n_points"] == 12
    lr = fit["hyperparameters"]["lr"]
    assert lr["law_N"]["exponent"] < 0 and lr["recommended"]["value"] > 0
    assert run_report(tmp_path) == 0
    out = tmp_path / "results" / "report"
    page = check_report(out, fit)
    assert "lr_sensitivity" not in page.missing
    sources = {source for source, _, _ in page.cells}
    for key in (
        "law_N.exponent",
        "law_N.ci95.exponent",
        "law_C.exponent",
        "law_C.coefficient",
        "recommended.value",
        "recommended.ci95",
    ):
        assert f"hyperparameters.lr.{key}" in sources, key
    summary = (out / "summary.txt").read_text()
    assert f"lr = {fmt.num(lr['recommended']['value'])} {fmt.interval(lr['recommended']['ci95'])}" in summary
    assert "Optimum at an edge" not in (out / "index.html").read_text()
    assert (out / "index.html").read_text().count("<td>yes</td>") == 12  # the best run of each of 12 sweeps
    assert html.escape(registry.FIGURES["lr_sensitivity"].caption()) in (out / "index.html").read_text()

    # Only the two smallest lrs: every size's best is the largest swept value, flagged as an edge.
    edge = tmp_path / "edge"
    fit = make_study(edge, isoflop=False, extras=False, lrs=(3e-4, 1e-3, 2e-3))
    assert fit["hyperparameters"]["lr"]["n_edge"] > 0
    assert run_report(edge) == 0
    text = (edge / "results" / "report" / "index.html").read_text()
    assert "Optimum at an edge of the sweep" in text and "widen the sweep" in text


def test_no_sweep_report_has_no_lr_line(tiny_report):
    out, fit = tiny_report
    summary = (out / "summary.txt").read_text()
    assert "next lr" not in summary and fit["hyperparameters"] is None
    text = (out / "index.html").read_text()
    assert "Nothing was swept over the learning rate" in text
    assert "No hyperparameter laws: " + fmt.clause(fit["hyperparameters_why"]) in text


def test_degenerate_study_says_why_instead_of_crashing(tmp_path, capsys):
    fit = make_study(tmp_path, sizes=("m",), isoflop=False, extras=False, meta=False)
    assert run_report(tmp_path) == 0
    out = tmp_path / "results" / "report"
    page = check_report(out, fit)
    assert {"loss_vs_params", "isoflop", "frontier", "holdout"} <= set(page.missing)
    assert "loss_vs_tokens" not in page.missing and "training_curves" not in page.missing
    text = (out / "index.html").read_text()
    for key in ("approach3_why", "approach2_why", "holdout_why", "power_law_N_why", "allocation_why"):
        assert fmt.clause(fit[key]) in text, key
    assert "Only one model size (N = 332K)" in text
    assert "meta.json was not found" in text
    summary = capsys.readouterr().out
    assert "not identified: " + fmt.clause(fit["approach3_why"]) in summary and "no check: " in summary


def edit_fit(results: Path, change) -> None:
    """Change the study's real fit.json in place (a damaged or hand-edited fit.json)."""
    path = results / "fit" / "fit.json"
    fit = json.loads(path.read_text())
    change(fit)
    path.write_text(json.dumps(fit))


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda r: (r / "metrics.csv").unlink(), "metrics CSV not found"),
        (lambda r: (r / "metrics.csv").write_text(""), "not a readable CSV"),
        (lambda r: (r / "fit" / "fit.json").write_text("{not json"), "not valid JSON"),
        (lambda r: edit_fit(r, lambda f: f.update(target="nope")), "no column 'nope'"),
        (lambda r: edit_fit(r, lambda f: f.update(approach3={"E": 1})), "approach3.A"),
        # A foreign or damaged fit.json: one line naming the file and the key (scalelab.laws.fitjson).
        (lambda r: (r / "fit" / "fit.json").write_text('{"target": "nope"}'), "fit.json: n_points is missing"),
        (lambda r: (r / "fit" / "fit.json").write_text("[1, 2]"), "fit.json: fit results should be an object"),
        (lambda r: edit_fit(r, lambda f: f["approach3"].update(alpha="0.3")), "fit.json: approach3.alpha should be"),
        (lambda r: edit_fit(r, lambda f: f["approach2"]["budgets"][1].pop("flops")), "approach2.budgets.1.flops"),
        (lambda r: edit_fit(r, lambda f: f["holdout"]["actual"].append(1.0)), "holdout lists should have one length"),
        (lambda r: (r / "fit" / "fit.json").write_text('{"approach3": {"alpha": NaN}}'), "fit.json: "),
    ],
)
def test_bad_input_is_one_line_error(tiny, tmp_path, capsys, breakage, message):
    shutil.copytree(tiny[0] / "results", tmp_path / "results", ignore=shutil.ignore_patterns("report"))
    breakage(tmp_path / "results")
    assert run_report(tmp_path) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_law_and_allocation_formulas():
    from scalelab.report import drawn_law, figures_checks

    drawn = drawn_law.DrawnLaw("chinchilla", dict(LAW))
    n, d = drawn.optimum(6e18)
    assert n * d == pytest.approx(1e18)
    assert (n, d) == pytest.approx(law.compute_optimal(6e18, LAW["A"], LAW["B"], LAW["alpha"], LAW["beta"]))
    # The optimum: moving along C = 6ND in either direction raises the predicted loss.
    for factor in (0.9, 1.1):
        assert drawn.loss(n * factor, d / factor) > drawn.loss(n, d)
    assert drawn.loss(n, d) == pytest.approx(law.predict_loss(n, d, **LAW))
    # One copy of the law: the report draws with scalelab.laws.law's forms, as the fit computes with them.
    from scalelab import fit

    assert fit.predict_loss is law.predict_loss
    assert figures_checks.curve_law is drawn_law.curve_law  # the held-out figure's residuals: the drawn law
    assert drawn_law.FORMS is law.FORMS and drawn_law.optimal_allocation is law.optimal_allocation


def test_snakemake_rule_declares_every_output():
    rule = (REPO / "workflow" / "rules" / "report.smk").read_text()
    assert "rule_outputs(" in rule and 'code_fingerprint("report")' in rule
    declared = registry.rule_outputs("results/report")
    assert sorted(declared.values()) == sorted(str(p) for p in registry.output_paths("results/report"))
    assert "captions=figure_captions()" in rule and "rule_outputs(REPORT_DIR, report, directory)" in rule
    marked = registry.rule_outputs("results/report", mark=lambda path, **kw: (path, kw))
    for spec in registry.TABLES.values():
        path, kw = marked[f"table_{spec.name}"]
        assert Path(kw["caption"]).is_file() and kw["category"] == spec.category, spec.name
    assert Path(marked["html"][1]["caption"]).is_file()
    # The figures folder: each drawn figure by its pattern, under its own category, with its own caption
    # (the Jinja template shows the rule's `captions` param for the figure's name).
    path, kw = marked["figures"]
    assert path == "results/report/figures" and kw["patterns"] == ["{figure}.png"]
    template = Path(kw["caption"]).read_text()
    assert "snakemake.params.captions[snakemake.wildcards.figure]" in template
    captions = registry.figure_captions()
    for spec in registry.FIGURES.values():
        wildcards = type("Wildcards", (), {"figure": spec.name})()
        assert kw["category"](wildcards) == spec.category and kw["labels"](wildcards) == {"figure": spec.title}
        assert registry.rst_to_text(captions[spec.name]) == spec.caption()


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)")
def test_page_renders_in_headless_chromium(tiny_report, tmp_path):
    out, _ = tiny_report
    png = tmp_path / "page.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
        f"--screenshot={png}",
        (out / "index.html").resolve().as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=120)
    assert png.exists(), "chromium wrote no screenshot"
    image = np.asarray(decode_png(png.read_bytes()).convert("L"), dtype=float)
    assert image.shape == (2000, 1280)
    dark = image < 200  # text, plot lines and markers
    assert dark.mean() > 0.01, "the page rendered blank"
    # The first figure sits below the summary: the lower half must not be empty either.
    assert dark[1000:].mean() > 0.005 and image.std() > 10


# ----------------------------------------------------------------------------- escaping, settings, registry

HOSTILE_TITLE = "<script>alert(1)</script> *bold* | [link](x)"
HOSTILE_MODEL = "m$<img src=x onerror=alert(2)>|*"  # `$` would start mathtext in a legend
HOSTILE_RUN = "xl|<b>run</b>_`id`"


def test_markdown_escapes_every_user_string(tiny, tmp_path):
    """The title, model names and run ids reach report.md as text: no raw HTML, no broken table."""
    shutil.copytree(tiny[0] / "results", tmp_path / "results", ignore=shutil.ignore_patterns("report"))
    results = tmp_path / "results"
    frame = pd.read_csv(results / "metrics.csv")
    frame.loc[frame["model"] == "m", "model"] = HOSTILE_MODEL
    frame.loc[frame["run"] == "xl-100K-s0", "run"] = HOSTILE_RUN  # the missing run: no curve.csv to move
    frame.to_csv(results / "metrics.csv", index=False)
    edit_fit(results, lambda f: [e.update(run=HOSTILE_RUN) for e in f["excluded"] if e["run"] == "xl-100K-s0"])
    assert run_report(tmp_path, "--spec", json.dumps({"title": HOSTILE_TITLE})) == 0
    out = results / "report"
    md = (out / "report.md").read_text()
    prose = re.sub(r"(?ms)^(`{3,})text\n.*?^\1$", "", md)  # the summary is a code block: literal anyway
    for raw in ("<script", "<img", "<b>", "[link](x)"):
        assert raw not in prose, raw
    assert md.splitlines()[0] == r"# &lt;script&gt;alert(1)&lt;/script&gt; \*bold\* \| \[link\](x)"
    assert "&lt;b&gt;run&lt;/b&gt;" in prose and r"\`id\`" in prose and r"m\$&lt;img" in prose
    grid = [line for line in md.splitlines() if line.startswith("| ") and "&lt;b&gt;run" in line]
    assert grid, "the renamed run is not in the grid table"
    header = next(line for line in md.splitlines() if line.startswith("| run | model |"))
    unescaped_pipes = lambda line: len(re.findall(r"(?<!\\)\|", line))  # noqa: E731
    assert unescaped_pipes(grid[0]) == unescaped_pipes(header)
    text = (out / "index.html").read_text()
    assert "<script" not in text and "&lt;script&gt;" in text and "<img src=x" not in text


def test_print_summary_only_for_a_report_written_since(tmp_path, capsys):
    import os
    import time

    (tmp_path / "summary.txt").write_text("scalelab report: old\n")
    written = time.time() - 100
    os.utime(tmp_path / "summary.txt", (written, written))
    assert print_summary(tmp_path, since=written + 50) is False  # e.g. `snakemake --until fit`
    assert capsys.readouterr().out == ""
    assert print_summary(tmp_path, since=written) is True  # written at the start counts
    assert capsys.readouterr().out == "scalelab report: old\n"
    assert print_summary(tmp_path, since=written - 50) is True and capsys.readouterr().out
    assert print_summary(tmp_path / "nowhere", since=written) is False
    assert print_summary(tmp_path) is True  # without `since`, any summary


@pytest.mark.parametrize(
    "spec, words",
    [
        ("{not json", ["--spec", "not valid JSON"]),
        ("[1]", ["--spec", "JSON object"]),
        ('{"titel": "x"}', ["--spec", "'titel'"]),
        ('{"title": 3}', ["--spec", "'title'", "str"]),
    ],
)
def test_bad_spec_is_one_line_error(tiny, tmp_path, capsys, spec, words):
    shutil.copytree(tiny[0] / "results", tmp_path / "results", ignore=shutil.ignore_patterns("report"))
    assert run_report(tmp_path, "--spec", spec) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and all(w in err for w in words), err
    assert not (tmp_path / "results" / "report").exists()


def test_settings_defaults_and_canonical_spec():
    from scalelab.report import ReportSettings

    assert ReportSettings.from_spec(None) == ReportSettings.from_spec("{}") == ReportSettings()
    settings = ReportSettings.from_spec('{"title": "x"}')
    assert settings.title == "x" and ReportSettings.from_spec(settings.to_spec()) == settings
    with pytest.raises(Exception):
        settings.title = "y"  # frozen


def test_registry_and_package_entry_points_import_without_plotting_libraries():
    code = (
        "import sys, scalelab.report, scalelab.report.registry, scalelab.laws.fitjson; "
        "from scalelab.report import print_summary, rule_outputs, ReportSettings; "
        "heavy = [m for m in ('matplotlib', 'pandas', 'numpy', 'torch') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run(
        [__import__("sys").executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert proc.returncode == 0, proc.stderr


def test_every_figure_and_table_function_is_registered_once():
    """The registry is the one list of figures and tables: each entry's module holds its function,
    and no module of the report package defines a fig_/table_ function that the registry does not
    name (one drawn by no page)."""
    import importlib
    import pkgutil

    import scalelab.report as package

    entries = (*registry.FIGURES.values(), *registry.TABLES.values())
    for spec in entries:
        assert callable(spec.function()) and spec.function().__name__ == spec.make, spec.name
    defined = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"scalelab.report.{info.name}")
        defined |= {
            (info.name, name)
            for name, value in vars(module).items()
            if name.startswith(("fig_", "table_")) and getattr(value, "__module__", None) == module.__name__
        }
    assert defined == {(spec.module, spec.make) for spec in entries}


def test_registry_drives_page_order_captions_and_categories(tiny_report):
    out, _ = tiny_report
    text = (out / "index.html").read_text()
    # a table of a feature the study does not use (no rows) is named in the page's one "Not used" line
    unused = text.split("Not used by this study: ", 1)[-1].split("</p>", 1)[0] if "Not used by" in text else ""
    headings = [s.heading for s in registry.SECTIONS]
    for spec in (*registry.FIGURES.values(), *registry.TABLES.values()):
        assert spec.category in headings, spec.name
        caption = spec.caption()
        assert caption and "``" not in caption and "**" not in caption
        if spec.name not in ("lr_sensitivity", "curve_forecast") and html.escape(spec.title) not in unused:
            assert html.escape(caption) in text, spec.name  # the page shows the caption Snakemake shows
    # Figures appear in registry order, each inside its category's section.
    drawn = [spec for spec in registry.FIGURES.values() if spec.name not in ("lr_sensitivity", "curve_forecast")]
    positions = [text.index(f'data-figure="{spec.name}"') for spec in drawn]
    assert positions == sorted(positions)
    for spec in drawn:
        section = next(s for s in registry.SECTIONS if s.heading == spec.category)
        start = text.index(f'<section id="{section.id}">')
        assert start < text.index(f'data-figure="{spec.name}"') < text.index("</section>", start)
    # The frontier's caption names the Approach 2 diamonds because this figure draws them.
    assert "Black diamonds are the IsoFLOP optima (Approach 2)." in text
    assert not (REPO / "workflow" / "report").exists(), "captions live in src/scalelab/report/captions only"


def test_report_fingerprint_covers_the_package_and_the_law():
    from scalelab.store import fingerprint

    files = set(fingerprint.stage_files("report"))
    package = fingerprint.PACKAGE / "report"
    wanted = {p for p in package.rglob("*") if p.suffix in (".py", ".css", ".rst") and "__pycache__" not in p.parts}
    assert wanted <= files and package / "report.css" in files
    assert set(fingerprint.unit_files("law.py")) <= files
    assert all(f.is_file() for f in files)


def test_real_fit_json_keeps_the_written_schema(tiny, tmp_path):
    from scalelab.errors import ScalelabError
    from scalelab.laws.fitjson import check_fit_json, fit_schema

    root, fit = tiny
    check_fit_json(fit, "fit.json")
    degenerate = make_study(tmp_path, sizes=("m",), isoflop=False, extras=False, meta=False, bootstrap=0)
    check_fit_json(degenerate, "fit.json")
    assert set(fit_schema()["required"]) <= set(fit)
    check_fit_json({**fit, "hyperparameters": {"lr": 1}, "selection": [1]}, "fit.json")  # new sections allowed
    with pytest.raises(ScalelabError, match=r"^x/fit\.json: approach3\.beta is missing$"):
        check_fit_json({**fit, "approach3": {k: v for k, v in fit["approach3"].items() if k != "beta"}}, "x/fit.json")


def test_fit_variants_keep_the_schema_and_report_without_a_flops_column(tiny, tmp_path):
    """A CSV without FLOPs columns (the fit then writes columns.flops = "6*params*tokens"), no
    held-out check and no bootstrap: fit.json keeps the schema and the report draws from it."""
    from scalelab.laws.fitjson import check_fit_json

    shutil.copytree(tiny[0] / "results", tmp_path / "results", ignore=shutil.ignore_patterns("report"))
    results = tmp_path / "results"
    frame = pd.read_csv(results / "metrics.csv").drop(columns=["flops", "flops_total"])
    frame.to_csv(results / "metrics.csv", index=False)
    fit = fit_frame(frame, loss_col="val_loss", bootstrap=0, grid_points=2, workers=1, holdout="none")
    write_json(results / "fit" / "fit.json", fit)
    fit = read_json(results / "fit" / "fit.json")
    check_fit_json(fit, "fit.json")
    assert fit["columns"]["flops"] == "6*params*tokens" and fit["holdout"] is None
    assert run_report(tmp_path) == 0
    page = check_report(results / "report", fit)
    assert "frontier" not in page.missing and "holdout" not in page.missing


def test_runs_table_totals_every_training_job_and_flags_short_test_splits(tiny, tmp_path, capsys):
    """Under WSD the runs table shows each run's own time, its trunk share (the segment charged to
    it, --trunk-segments) and flops_spent, and the total is every training job's; a test split
    smaller than eval.test_tokens (eval.json) is a visible note on the page and in the summary."""
    shutil.copytree(tiny[0] / "results", tmp_path / "results", ignore=shutil.ignore_patterns("report"))
    results = tmp_path / "results"
    frame = pd.read_csv(results / "metrics.csv")
    frame["flops_spent"] = frame["flops"] * 0.6
    frame.to_csv(results / "metrics.csv", index=False)
    ok = frame[frame["status"] == "ok"]["run"].tolist()
    segments = {}
    for i, run in enumerate(ok):
        write_json(
            results / "runs" / run / "eval.json",
            {"run": run, "status": "ok", "test_tokens": 5092, "settings": {"test_tokens": 16384}},
        )
        segments[run] = str(results / "trunks" / "fam" / f"step{i}.json")
        write_json(Path(segments[run]), {"step": i, "wall_s": 2.5})
    assert run_report(tmp_path, "--trunk-segments", json.dumps(segments)) == 0
    text = html.unescape((results / "report" / "index.html").read_text())
    for heading in ("own wall time (s)", "trunk share (s)", "FLOPs spent (own + trunk share)"):
        assert f"<th>{heading}</th>" in text
    own, trunk = frame["wall_s"].sum(), 2.5 * len(ok)
    assert (
        f"every training job: {own + trunk:,.0f} s ({own:,.0f} s in the runs' own cooldown jobs + {trunk:,.0f} s"
        in text
    )
    assert f"smaller than eval.test_tokens (16,384 tokens): {len(ok)} run(s) were scored on 5,092 test tokens" in text
    summary = (results / "report" / "summary.txt").read_text()
    assert f"NOTE: {len(ok)} run(s) scored on 5,092 test tokens, fewer than eval.test_tokens 16,384" in summary
    assert "--trunk-segments: expected a JSON object" in _report_error(tmp_path, capsys, "--trunk-segments", "[1]")


def _report_error(root, capsys, *extra) -> str:
    capsys.readouterr()
    assert run_report(root, *extra) == 1
    return capsys.readouterr().err


def test_study_settings_table_comes_from_the_resolved_config(tiny, tmp_path):
    """The Study settings table shows the config after defaults and overrides, and the code fingerprints."""
    from scalelab.config import load as study_config
    from scalelab.store.fingerprint import code_fingerprint
    from scalelab.plan.resolved import study_settings

    shutil.copytree(tiny[0] / "results", tmp_path / "results", ignore=shutil.ignore_patterns("report"))
    config = study_config.validate(
        {"train": {"lr": "2e-3", "batch_size": 16}, "overrides": {"xs": {"lr": 0.01}}, "eval": {"test_tokens": "8K"}}
    )
    settings = study_settings(config)
    assert run_report(tmp_path, "--settings", json.dumps(settings)) == 0
    text = html.unescape((tmp_path / "results" / "report" / "index.html").read_text())
    table = text[text.index('id="table-settings"') :]
    table = table[: table.index("</table>")]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", table)
    rows, section = {}, ""
    for i in range(0, len(cells), 3):
        section = cells[i] or section  # a section's name is shown on its first row only
        rows[section, cells[i + 1]] = cells[i + 2]
    assert rows["train", "lr"] == "xs: 0.01; s: 0.002; m: 0.002; l: 0.002"  # the override, per model
    assert rows["train", "batch_size"] == "16" and rows["train", "schedule"] == config["train"]["schedule"]
    assert rows["eval", "test_tokens"] == "8000" and rows["grid", "tokens"].startswith("[")
    assert rows["code", "report"] == code_fingerprint("report") and rows["code", "train"] == code_fingerprint("train")
    for key in (
        ("train", "context"),
        ("train", "warmup_tokens"),
        ("train", "cooldown"),
        ("train", "val_evals"),
        ("fit", "bootstrap"),
        ("data", "tokenizer.vocab_size"),
        ("models", "xs"),
    ):
        assert key in rows, key
    # Without --settings the table says where they come from instead of being empty.
    assert run_report(tmp_path) == 0
    assert "No study settings were given" in (tmp_path / "results" / "report" / "index.html").read_text()


def test_the_next_budget_line_says_when_d_opt_is_more_than_the_train_split():
    from types import SimpleNamespace

    from scalelab.report import summary

    row = {
        "flops": 4e13,
        "n_opt": 3.8e5,
        "d_opt": 1.7e7,
        "tokens_per_param": 46,
        "loss_pred": 1.86,
        "loss_ci95": [1.6, 2.2],
        "form": "kaplan",
        "extrapolation": "N 3x above the fitted runs",
    }
    study = SimpleNamespace(
        target="val_loss", section=lambda name: ([row], None), meta={"splits": {"train": {"tokens": 1.47e7}}}
    )
    line = summary._next_budget_line(study)
    assert "N 3x above the fitted runs" in line and "1.2x the corpus's train split" in line
    study.meta = {"splits": {"train": {"tokens": 1e9}}}
    assert "train split" not in summary._next_budget_line(study)
    study.meta = None  # no meta.json: nothing to compare with
    assert "train split" not in summary._next_budget_line(study)


def test_fit_health_is_in_the_summary_and_the_page(tiny, tmp_path):
    """Issue 31 item 4: a form whose optimiser did not converge is a WARNING; the worst in-sample residual
    (and its run) and the number of held-out runs are stated, in summary.txt and on the page."""
    import shutil

    root, _ = tiny
    copy = tmp_path / "study"
    shutil.copytree(root / "results", copy / "results", ignore=shutil.ignore_patterns("report"))
    fit_json = copy / "results" / "fit" / "fit.json"
    fit = json.loads(fit_json.read_text())
    chosen = fit["chosen_form"]
    fit["forms"][chosen]["converged"] = False
    fit["forms"][chosen]["optimizer_message"] = "ABNORMAL"
    fit_json.write_text(json.dumps(fit))
    assert run_report(copy) == 0
    summary = (copy / "results" / "report" / "summary.txt").read_text()
    assert f"WARNING       {chosen}: the optimiser did NOT converge (ABNORMAL)" in summary
    from scalelab.laws.law import FORMS

    metrics = pd.read_csv(copy / "results" / "metrics.csv")
    ok = metrics[(metrics["status"] == "ok") & np.isfinite(metrics["val_loss"])]
    rel = ok["val_loss"] / FORMS[chosen].loss(fit["forms"][chosen]["params"], ok["params"], ok["tokens"]) - 1
    at = rel.abs().idxmax()
    assert f"worst in-sample residual {fmt.percent(rel[at])} ({chosen}) on {ok.loc[at, 'run']}" in summary
    n = len(fit["holdout"]["held_out"])
    assert f"held-out check on {n} run" in summary
    assert html.escape(summary) in (copy / "results" / "report" / "index.html").read_text()


def test_absent_figures_share_one_line_and_the_summary_wraps(tiny_report):
    """Issue 31 items 7 and 8: the features the study does not use are one line, not a box each; the
    summary block wraps instead of scrolling (and is not cut off in print)."""
    out, _ = tiny_report
    page = (out / "index.html").read_text()
    unused = [line for line in page.splitlines() if line.startswith('<p class="why">Not used by this study: ')]
    # the learning-rate section (no sweep, no hyperparameter laws) is one line at the end, not a section
    assert len(unused) == 1 and 'data-absent="lr_sensitivity"' in unused[0], unused
    assert "Hyperparameter laws: " in unused[0] and "<h3>Hyperparameter laws</h3>" not in page
    assert page.count("not drawn.") == 2  # each absent figure once
    for chunk in page.split("<section ")[1:]:  # within a drawn section, absent figures share one line
        section = chunk.split("</section>", 1)[0]
        assert section.count('data-absent="') == section.count('<p class="why"><span data-absent=') <= 1
    md = (out / "report.md").read_text()
    (line,) = [line for line in md.splitlines() if line.startswith("> Not used by this study: ")]
    assert "Learning-rate sensitivity: not drawn." in line and "Hyperparameter laws: " in line
    assert md.count(": not drawn.") == 2 and "### Hyperparameter laws" not in md
    css = page.split("<style>", 1)[1].split("</style>", 1)[0]
    rule = css.split("pre.summary", 1)[1].split("}", 1)[0]
    assert "pre-wrap" in rule and "overflow-x" not in rule


def test_the_frontier_draws_the_loss_envelope_not_every_run_and_keeps_the_law_inside(tiny):
    """Issue 31 item 6: the N_opt and D_opt panels show the runs on the loss envelope (labelled), not every
    run's N and D as if they were optima; the law's lines lie inside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    from scalelab.report.figures_law import ENVELOPE, LAW_GIDS, fig_frontier, loss_envelope
    from scalelab.report.inputs import load_study

    root, _ = tiny
    results = root / "results"
    s = load_study(results / "metrics.csv", results / "fit" / "fit.json", results / "runs", results / "data/meta.json")
    fig, _ = fig_frontier(s)
    best = loss_envelope(s.ok, s.c_col, s.target)
    assert 1 <= len(best) < len(s.ok)
    losses = best.sort_values(s.c_col)[s.target].to_numpy()
    assert (np.diff(losses) < 0).all()  # each envelope run beats every run of less compute
    for ax, column in zip(fig.axes[:2], (s.n_col, s.d_col)):
        (points,) = [line for line in ax.get_lines() if line.get_label() == ENVELOPE]
        assert sorted(points.get_ydata()) == sorted(best[column])
        assert not [line for line in ax.get_lines() if line.get_label() == "runs"]
        low, high = ax.get_ylim()
        for line in ax.get_lines():
            if line.get_gid() in LAW_GIDS:
                y = np.asarray(line.get_ydata(), float)
                y = y[np.isfinite(y)]
                assert low <= y.min() and y.max() <= high, line.get_gid()
    assert [line for line in fig.axes[2].get_lines() if line.get_label() == "runs"]


def _write_generations(run_dir: Path, prompts: int, rng: np.random.Generator, quality: float) -> None:
    """generations.jsonl of `prompts` pairs; each hypothesis copies each reference word with chance `quality`."""
    words = [f"w{i}" for i in range(50)]
    with (run_dir / "generations.jsonl").open("w") as out:
        for _ in range(prompts):
            reference = [str(w) for w in rng.choice(words, 12)]
            hypothesis = [w if rng.random() < quality else str(rng.choice(words)) for w in reference]
            out.write(json.dumps({"prompt": "p", "reference": " ".join(reference), "hypothesis": " ".join(hypothesis)}))
            out.write("\n")


def test_score_intervals_hold_the_score_and_narrow_with_more_prompts(tmp_path):
    """Issue 31 item 8: BLEU and ROUGE-L from a few dozen prompts get their sampling interval."""
    from sacrebleu.metrics import BLEU

    from scalelab.report.score_noise import score_intervals

    rng = np.random.default_rng(0)
    for run, prompts in (("few", 16), ("many", 400)):
        (tmp_path / run).mkdir()
        _write_generations(tmp_path / run, prompts, rng, quality=0.5)
    intervals = score_intervals(tmp_path, ["few", "many", "absent"])
    assert set(intervals) == {"few", "many"}
    rows = [json.loads(line) for line in (tmp_path / "few" / "generations.jsonl").read_text().splitlines()]
    bleu = BLEU().corpus_score([r["hypothesis"] for r in rows], [[r["reference"] for r in rows]]).score
    low, high = intervals["few"]["bleu"]
    assert low < bleu < high
    width = {run: intervals[run]["bleu"][1] - intervals[run]["bleu"][0] for run in intervals}
    assert width["many"] < 0.5 * width["few"]
    assert intervals["many"]["rougeL"][1] - intervals["many"]["rougeL"][0] < 0.5 * (
        intervals["few"]["rougeL"][1] - intervals["few"]["rougeL"][0]
    )


def test_bleu_rouge_figure_draws_prompt_noise_and_says_when_runs_differ_by_noise(tmp_path):
    from scalelab.report.figures_runs import fig_bleu_rouge
    from scalelab.report.inputs import load_study

    make_study(tmp_path, isoflop=False, extras=False)
    results = tmp_path / "results"
    metrics = pd.read_csv(results / "metrics.csv")
    rng = np.random.default_rng(1)
    for run in metrics["run"]:  # every run writes equally well: the score differences are noise
        _write_generations(results / "runs" / run, 24, rng, quality=0.5)
    # metrics.csv's scores as evaluate computes them from those generations
    from scalelab.evaluate.generation import score_generations

    for i, run in enumerate(metrics["run"]):
        rows = [json.loads(line) for line in (results / "runs" / run / "generations.jsonl").read_text().splitlines()]
        scores = score_generations([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
        metrics.loc[i, "bleu"], metrics.loc[i, "rougeL"] = scores["bleu"], scores["rougeL"]
    metrics.to_csv(results / "metrics.csv", index=False)
    study = load_study(
        results / "metrics.csv", results / "fit" / "fit.json", results / "runs", results / "data/meta.json"
    )
    fig, note = fig_bleu_rouge(study)
    from scalelab.report.plotting import artist_gids

    assert "prompt-noise" in artist_gids(fig)
    panels = [ax for ax in fig.axes if any(c.get_gid() == "prompt-noise" for c in ax.collections)]
    assert len(panels) == 4  # BLEU and ROUGE-L, against parameters and compute
    assert "sampling noise, not a trend" in note and "24 prompts" in note

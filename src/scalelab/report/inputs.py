"""What the report reads: metrics.csv, each run's curve.csv, fit.json and data/meta.json.

`load_study` reads and checks them once into a `Study`. fit.json is checked against its written
contract (scalelab.laws.fitjson, schemas/fit.schema.yaml) before anything uses it, so a damaged or
foreign fit.json is one line naming the file and the key; the columns the fit used come from its
`columns` section. Every problem with an input is a one-line ScalelabError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ScalelabError
from ..files import read_json
from ..laws.fitjson import read_fit_json
from .fmt import clause
from .settings import ReportSettings

NUMERIC = (
    "params",
    "params_total",
    "tokens",
    "flops",
    "flops_total",
    "steps",
    "train_loss",
    "val_loss",
    "wall_s",
    "tokens_per_s",
    "test_loss",
    "test_ppl",
    "test_bpb",
    "bleu",
    "rouge1",
    "rouge2",
    "rougeL",
    "seed",
    "isoflop_budget",
)
LAW_KEYS = ("E", "A", "B", "alpha", "beta")


def _csv_reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_metrics(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise ScalelabError(f"{path}: metrics CSV not found") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ScalelabError(f"{path}: not a readable CSV ({_csv_reason(exc)})") from None
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
        raise ScalelabError(f"{path}: not a readable CSV ({_csv_reason(exc)})") from None
    missing = [c for c in ("tokens", "train_loss") if c not in curve.columns]
    if missing:
        raise ScalelabError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in curve.columns:
        curve[column] = pd.to_numeric(curve[column], errors="coerce")
    curve = curve[curve["tokens"] > 0]  # step 0 has no place on a log axis
    return curve if len(curve) else None


def read_meta(path: Path) -> dict | None:
    """data/meta.json, or None when it is absent (the report then says so)."""
    if not path.exists():
        return None
    meta = read_json(path, "data description")
    if not isinstance(meta, dict):
        raise ScalelabError(f"{path}: data description should be a JSON object")
    return meta


@dataclass
class Study:
    """Everything the report shows, read once and checked."""

    metrics: pd.DataFrame  # every run of the grid, whatever its status
    fit: dict  # fit.json, checked against its schema
    curves: dict[str, pd.DataFrame]
    meta: dict | None
    settings: ReportSettings
    fit_path: Path
    meta_path: Path
    target: str = "val_loss"
    n_col: str = "params"
    d_col: str = "tokens"
    c_col: str = "flops"
    suggest: dict | None = None  # suggest.json of `scalelab suggest` (None: not given)
    suggest_path: Path | None = None
    study_settings: dict | None = None  # the resolved config (scalelab.plan.resolved), when the workflow gave it
    curve_laws: dict | None = None  # curves.json of `scalelab curves` (None: not given)
    runs_dir: Path | None = None  # the run folders (generations.jsonl: the BLEU and ROUGE noise)

    def __post_init__(self) -> None:
        columns = self.fit["columns"]
        self.target, self.n_col, self.d_col = self.fit["target"], columns["params"], columns["tokens"]
        self.c_col = columns["flops"]
        frame = self.metrics
        for column in (self.target, self.n_col, self.d_col):
            if column not in frame.columns:
                raise ScalelabError(f"metrics CSV has no column '{column}' (named by {self.fit_path})")
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        if self.c_col not in frame.columns:  # the fit used its fallback C = 6·N·D (written "6*params*tokens")
            self.c_col = "flops"
            if "flops" not in frame.columns:
                frame["flops"] = 6.0 * frame[self.n_col] * frame[self.d_col]

    @property
    def title(self) -> str:
        return self.settings.title

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
        return None if a3 is None else {k: float(a3[k]) for k in LAW_KEYS}

    def model_names(self) -> dict[float, str]:
        if "model" not in self.metrics.columns:
            return {}
        rows = self.metrics.dropna(subset=[self.n_col])
        return {float(n): str(m) for n, m in zip(rows[self.n_col], rows["model"])}


def read_suggest(path: Path | None) -> dict | None:
    """suggest.json of `scalelab suggest`, or None when no path is given; one line if unreadable."""
    if path is None:
        return None
    value = read_json(path)
    if not isinstance(value, dict) or not isinstance(value.get("runs"), list):
        raise ScalelabError(f"{path}: not a suggest.json of `scalelab suggest` (no list of runs)")
    return value


def read_curve_laws(path: Path | None) -> dict | None:
    """curves.json of `scalelab curves`, or None when no path is given; one line if unreadable."""
    if path is None:
        return None
    value = read_json(path, "curves.json")
    if not isinstance(value, dict) or not isinstance(value.get("grid"), list) or "chosen" not in value:
        raise ScalelabError(f"{path}: not a curves.json of `scalelab curves` (no grid forecast)")
    return value


def _number_or_none(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_eval_tokens(path: Path) -> tuple[float | None, float | None]:
    """(test tokens scored, eval.test_tokens asked for) from a run's eval.json, or Nones. The
    report reads eval.json for this (metrics.csv does not carry them)."""
    if not path.is_file():
        return None, None
    try:
        evaluation = read_json(path, "evaluation")
    except ScalelabError:
        return None, None  # aggregate marks such a run failed; nothing to say about its tokens
    if not isinstance(evaluation, dict):
        return None, None
    settings = evaluation.get("settings") if isinstance(evaluation.get("settings"), dict) else {}
    return _number_or_none(evaluation.get("test_tokens")), _number_or_none(settings.get("test_tokens"))


def read_trunk_wall_s(path: Path) -> float | None:
    """The wall time in a WSD trunk segment's info file (results/trunks/<family>/step<k>.json)."""
    if not path.is_file():
        return None
    info = read_json(path, "trunk segment record")
    return _number_or_none(info.get("wall_s")) if isinstance(info, dict) else None


def load_study(
    metrics: Path,
    fit: Path,
    runs: Path,
    data_meta: Path,
    settings: ReportSettings = ReportSettings(),
    suggest: Path | None = None,
    trunk_segments: dict | None = None,
) -> Study:
    """Read the study. Besides metrics.csv, each run's eval.json gives the test tokens it was
    scored on against those asked for (`test_tokens`, `test_tokens_requested`), and under WSD the
    trunk segment charged to a run (`trunk_segments`) its `trunk_wall_s`: columns of the frame."""
    frame = read_metrics(metrics)
    fit_json = read_fit_json(fit)
    curves = {}
    for run in frame["run"]:
        curve = read_curve(runs / run / "curve.csv")
        if curve is not None:
            curves[run] = curve
    tokens = [read_eval_tokens(runs / run / "eval.json") for run in frame["run"]]
    if any(used is not None for used, _ in tokens):
        frame["test_tokens"] = [np.nan if used is None else used for used, _ in tokens]
        frame["test_tokens_requested"] = [np.nan if asked is None else asked for _, asked in tokens]
    if trunk_segments:
        frame["trunk_wall_s"] = [
            np.nan if run not in trunk_segments else (read_trunk_wall_s(Path(trunk_segments[run])) or np.nan)
            for run in frame["run"]
        ]
    study = Study(frame, fit_json, curves, read_meta(data_meta), settings, fit, data_meta)
    study.suggest, study.suggest_path = read_suggest(suggest), suggest
    study.runs_dir = runs
    return study

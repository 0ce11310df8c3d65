"""How much of a run's BLEU and ROUGE-L is the luck of its prompts: a 95 % bootstrap interval over
the prompts of each run's generations.jsonl (what evaluate scored), so the report can draw the
sampling noise beside the scores instead of zig-zag lines that read as a trend.

BLEU is a corpus statistic (not a mean of sentence scores), so each resample rescores the resampled
prompts with sacrebleu, with the tokenizer the run's signature names; ROUGE-L is the mean of the
prompts' F-measures (rouge-score, Porter stemmer, as evaluate computes it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats

RESAMPLES = 200  # percentile intervals of a small-sample statistic: 200 is enough for a caveat, not a test
LEVEL = 0.95


def _generations(path: Path) -> tuple[list[str], list[str]] | None:
    """(hypotheses, references), or None for a missing or unreadable file (the figure then has no bar)."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [str(r["hypothesis"]) for r in rows], [str(r["reference"]) for r in rows]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _bleu_interval(hypotheses: list[str], references: list[str], tokenize: str) -> tuple[float, float]:
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=tokenize)

    def score(index):
        return bleu.corpus_score([hypotheses[i] for i in index], [[references[i] for i in index]]).score

    result = stats.bootstrap(
        (np.arange(len(hypotheses)),),
        score,
        vectorized=False,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _rouge_interval(hypotheses: list[str], references: list[str]) -> tuple[float, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    f_measures = np.array([scorer.score(ref, hyp)["rougeL"].fmeasure for ref, hyp in zip(references, hypotheses)])
    if np.ptp(f_measures) == 0:  # every prompt scores the same: no spread to resample
        return float(f_measures[0]), float(f_measures[0])
    result = stats.bootstrap(
        (f_measures,),
        np.mean,
        n_resamples=10 * RESAMPLES,  # a vectorised mean: cheap
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _tokenizer(signature) -> str:
    """sacrebleu's tokenizer from a BLEU signature ("nrefs:1|case:mixed|eff:no|tok:13a|..."), default 13a."""
    for part in str(signature or "").split("|"):
        if part.startswith("tok:"):
            return part[4:]
    return "13a"


def score_intervals(runs_dir: Path, runs, signatures=None) -> dict[str, dict[str, tuple[float, float]]]:
    """{run: {"bleu": (low, high), "rougeL": (low, high), "prompts": n}} for the runs whose generations
    can be read; a run with fewer than 2 prompts has no interval."""
    signatures = signatures or {}
    intervals = {}
    for run in runs:
        pairs = _generations(Path(runs_dir) / str(run) / "generations.jsonl")
        if pairs is None or len(pairs[0]) < 2:
            continue
        hypotheses, references = pairs
        intervals[run] = {
            "bleu": _bleu_interval(hypotheses, references, _tokenizer(signatures.get(run))),
            "rougeL": _rouge_interval(hypotheses, references),
            "prompts": len(hypotheses),
        }
    return intervals

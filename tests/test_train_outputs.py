"""curve.csv and the metrics read from it are written without pandas (a train job no longer
imports it): the same bytes and the same numbers as the pandas code they replace."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from scalelab.train.outputs import write_curve


def pandas_curve(train_rows, val_history, curve_csv, tokens_per_step, flops_per_tok) -> pd.DataFrame:
    """The writer before the change (scalelab/train.py at f3cff4f, `_write_curve`), verbatim."""
    train = pd.DataFrame(train_rows, columns=["step", "lr", "train_loss"]).groupby("step", as_index=False).last()
    val = pd.DataFrame(val_history, columns=["step", "val_loss"]).groupby("step", as_index=False).last()
    curve = train.merge(val, on="step", how="outer").sort_values("step")
    curve["step"] = curve["step"].astype(int)
    curve.insert(1, "tokens", curve["step"] * tokens_per_step)
    curve.insert(2, "flops", curve["tokens"].astype(float) * flops_per_tok)
    curve.to_csv(curve_csv, index=False)
    return curve


def _cases():
    rng = random.Random(0)
    steps = list(range(0, 400, 4))
    train = [(s, 3e-3 * rng.random() ** 3, rng.uniform(0.5, 11)) for s in steps]
    val = [(s, rng.uniform(1, 9)) for s in steps[::25]] + [(399, 1.25)]  # a val-only step
    yield "plain", train, val, 256, 6 * 123_457
    yield "huge flops", train, val, 2**20, 6 * 7_000_000_123
    resumed = train[:50] + train[40:]  # a resumed run replays the end of an epoch
    yield "resumed", resumed, val + val[:2], 256, 1000
    diverged = train[:30] + [(120, 1e-3, math.nan), (124, 1e-3, math.nan)]
    yield "diverged", diverged, [], 64, 10
    yield "no val", train[:5], [], 64, 10
    yield "no train rows", [], [(10, 2.5)], 64, 10
    nan_then_value = [(0, 1e-3, math.nan), (0, 1e-3, 4.0), (4, 2e-3, 3.5), (4, 2e-3, math.nan)]
    yield "nan within a step", nan_then_value, [(4, 3.0)], 8, 3


@pytest.mark.parametrize("case", list(_cases()), ids=lambda case: case[0])
def test_curve_csv_is_byte_for_byte_what_pandas_wrote(tmp_path, case):
    _, train, val, tokens_per_step, flops_per_tok = case
    before = pandas_curve(train, val, tmp_path / "before.csv", tokens_per_step, flops_per_tok)
    rows = write_curve(train, val, tmp_path / "after.csv", tokens_per_step, flops_per_tok)
    assert (tmp_path / "after.csv").read_bytes() == (tmp_path / "before.csv").read_bytes()
    # the values run_metrics reads: the last val loss, and the mean train loss of the last 10 %
    last = max((row[0] for row in rows), default=0)
    tail_before = before[before["step"] >= last * 0.9]["train_loss"].dropna()
    tail_after = [row[4] for row in rows if row[0] >= last * 0.9 and row[4] is not None]
    import numpy as np

    assert (float(np.mean(tail_after)) if tail_after else None) == (
        float(tail_before.mean()) if len(tail_before) else None
    )
    val_before = before["val_loss"].dropna()
    assert [row[5] for row in rows if row[5] is not None][-1:] == list(val_before.iloc[-1:])

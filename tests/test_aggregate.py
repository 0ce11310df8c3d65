import json
import subprocess
import sys

import pandas as pd

from scalelab.evaluate import aggregate


def test_rows_keep_every_run_with_its_status(tmp_path):
    ok, diverged, missing, broken = (tmp_path / n for n in ("a-1K-s0", "b-1K-s0", "c-1K-s0", "d-1K-s0"))
    for folder in (ok, diverged, missing, broken):
        folder.mkdir()
    (ok / "metrics.json").write_text(json.dumps({"run": ok.name, "status": "ok", "params": 10, "val_loss": 3.0}))
    (ok / "eval.json").write_text(
        json.dumps(
            {"status": "ok", "test_loss": 3.1, "bleu": 12.5, "rougeL": 0.3, "bleu_signature": "nrefs:1|case:mixed"}
        )
    )
    (diverged / "metrics.json").write_text(json.dumps({"run": diverged.name, "status": "diverged", "val_loss": None}))
    (diverged / "eval.json").write_text(json.dumps({"status": "diverged", "test_loss": None}))
    (broken / "metrics.json").write_text("{not json")
    out = tmp_path / "metrics.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "aggregate",
            "--out",
            str(out),
            str(ok / "metrics.json"),
            str(diverged),
            str(missing),
            str(broken),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out).set_index("run")
    assert table.loc["a-1K-s0", "status"] == "ok" and table.loc["a-1K-s0", "test_loss"] == 3.1
    assert table.loc["a-1K-s0", "bleu"] == 12.5
    assert table.loc["b-1K-s0", "status"] == "diverged" and pd.isna(table.loc["b-1K-s0", "test_loss"])
    assert table.loc["c-1K-s0", "status"] == "missing"
    assert table.loc["d-1K-s0", "status"] == "failed"
    for column in aggregate.EVAL_COLUMNS:
        assert column in table.columns

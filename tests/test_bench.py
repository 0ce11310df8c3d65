"""The benchmark scripts that read results or exercise a path (bench/study_overhead.py,
bench/gpu_check.py): their figures follow from their inputs, and their code paths stay alive."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Snakemake's log format (9.x), shortened: two jobs of a local run on 2 cores.
LOG = """
SNAKEMAKE
=========
  Date: 2026-12-01 10:00:00
Building DAG of jobs...
Provided cores: 2
Select jobs to execute...
[Tue Dec  1 10:00:02 2026]
rule trunk:
    output: results/trunks/f1/step12.ckpt, results/trunks/f1/step12.json
    jobid: 3
    wildcards: family=f1, step=12
    resources: tmpdir=/tmp
[Tue Dec  1 10:00:03 2026]
rule train:
    output: results/runs/a-4K-s0/model.pt
    jobid: 2
    wildcards: run=a-4K-s0
    threads: 2
[Tue Dec  1 10:00:09 2026]
Finished jobid: 3 (Rule: trunk)
[Tue Dec  1 10:00:13 2026]
Finished jobid: 2 (Rule: train)
[Tue Dec  1 10:00:14 2026]
localrule aggregate:
    jobid: 7
[Tue Dec  1 10:00:20 2026]
Finished jobid: 7 (Rule: aggregate)
"""


def test_study_overhead_derives_each_figure_from_the_log_and_the_sidecars(tmp_path):
    bench = load("study_overhead")
    (tmp_path / "results/trunks/f1").mkdir(parents=True)
    (tmp_path / "results/trunks/f1/step12.json").write_text(json.dumps({"wall_s": 2.5}))
    (tmp_path / "results/runs/a-4K-s0").mkdir(parents=True)
    (tmp_path / "results/runs/a-4K-s0/metrics.json").write_text(json.dumps({"wall_s": 4.0}))
    log = tmp_path / "x.snakemake.log"
    log.write_text(LOG)
    result = bench.summarise(tmp_path, log)
    trunk, train, aggregate = (result["rules"][r] for r in ("trunk", "train", "aggregate"))
    assert trunk == {"jobs": 1, "job_s": 7.0, "compute_s": 2.5, "startup_median_s": 4.5}  # 10:00:02 -> :09
    assert train == {"jobs": 1, "job_s": 10.0, "compute_s": 4.0, "startup_median_s": 6.0}  # 10:00:03 -> :13
    assert aggregate == {"jobs": 1, "job_s": 6.0, "compute_s": None, "startup_median_s": None}
    assert result["wall_s"] == 20.0 and result["cores"] == 2 and result["study_core_s"] == 40.0
    assert result["training_core_s"] == 2.5 * 1 + 4.0 * 2  # own compute x the job's threads
    assert result["training_share"] == pytest.approx(10.5 / 40, abs=1e-4)


@pytest.mark.e2e
def test_study_overhead_on_a_finished_study(wsd_study):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench/study_overhead.py"), str(wsd_study)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rules = result["rules"]
    assert {r: rules[r]["jobs"] for r in ("tokenize", "trunk", "train", "evaluate", "fit", "report")} == {
        "tokenize": 1,
        "trunk": 6,
        "train": 6,
        "evaluate": 6,
        "fit": 1,
        "report": 1,
    }
    for rule in ("trunk", "train", "evaluate"):
        row = rules[rule]
        # the stage's own compute is part of its jobs' time (to the log's 1-second resolution)
        assert 0 < row["compute_s"] <= row["job_s"] + row["jobs"], row
        assert row["startup_median_s"] > -1, row
    assert 0 < result["training_share"] < 1
    assert result["training_core_s"] <= result["study_core_s"]


def test_gpu_check_runs_its_path_on_the_cpu_with_a_tiny_model():
    bench = load("gpu_check")
    summary = bench.main(["--sizes", "tiny", "--steps", "4", "--warmup", "1", "--no-workflow", "--threads", "1"])
    [row] = summary["results"]
    assert row["device"].startswith("cpu") and row["bf16"] is False and row["compile"] is False
    assert row["tokens_per_s"] > 0 and row["tflops"] > 0 and row["peak_memory_mb"] > 0
    assert row["mfu"] is None and row["peak_bf16_tflops"] is None  # no known peak for a CPU
    assert math.isfinite(row["loss"]) and row["loss"] < math.log(256) + 1  # near log(vocab) after 4 steps
    assert summary["workflow"]["skipped"] == "--no-workflow"


def test_gpu_check_knows_the_peaks_it_is_asked_about():
    bench = load("gpu_check")
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("Tesla T4") is None
    assert bench.settings_for("cuda", ["100m", "1b"]) == [
        ("100m", True, True),
        ("100m", True, False),
        ("100m", False, True),
        ("100m", False, False),
        ("1b", True, True),
    ]


def test_gpu_check_skips_the_hub_workflow_point_offline(monkeypatch):
    bench = load("gpu_check")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "offline" in bench.workflow_point(timeout_s=5)["skipped"]


def test_ladders_bench_scores_a_known_law_and_counts_the_misses(tmp_path):
    """bench/ladders.py on a ladder drawn from Chinchilla's law with 0.5 % noise: fitted on the
    smaller sizes, the larger ones are predicted closely and inside their intervals; one larger
    run made 30 % worse counts as a miss above its interval, and a run trained on fewer tokens
    per parameter than any fitted run is reported apart."""
    import numpy as np
    import pandas as pd

    from scalelab.laws import synthetic

    bench = load("ladders")
    rng = np.random.default_rng(0)
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 4e8, 5), np.geomspace(1e9, 3e10, 4)))
    big_n, big_d = np.array([8e8, 8e8, 8e8, 8e8]), np.array([3e9, 1e10, 3e10, 1e8])  # the last: 0.125 tokens/param
    params, tokens = np.concatenate([n, big_n]), np.concatenate([d, big_d])
    truth = synthetic.CHINCHILLA
    loss = truth["E"] + truth["A"] / params ** truth["alpha"] + truth["B"] / tokens ** truth["beta"]
    loss = loss * np.exp(rng.normal(0, 0.005, loss.size))
    loss[-3] *= 1.3
    path = tmp_path / "ladder.jsonl"
    pd.DataFrame({"size": params, "toks": tokens, "final": loss, "name": [f"s{p:.0f}" for p in params]}).to_json(
        path, orient="records", lines=True
    )
    frame = bench.read_ladder(path, "size", "toks", "final", "name")
    assert len(frame) == 24 and frame["run"].is_unique
    row = bench.check(frame, 5e8, bootstrap=20, workers=1, overrides={"forms": ("chinchilla",), "form": "chinchilla"})
    assert (row["fitted_runs"], row["predicted_runs"]) == (20, 4)
    assert row["above_interval"] >= 1 and row["max_abs_rel_error"] > 0.2  # the run made 30 % worse
    assert row["predicted_runs_within_fitted_tokens_per_param"] == 3
    assert row["coverage_95_within"] == pytest.approx(2 / 3)  # the two true runs inside, the bad one out
    with pytest.raises(SystemExit, match="no column"):
        bench.read_ladder(path, "N", "toks", "final", None)


def test_suggest_ceiling_bounds_the_design_it_runs_and_finds_the_range_binding():
    """bench/suggest_ceiling.py, round 1 at the true law: the continuous relaxation of the choice is a bound
    (the design's own runs are a feasible point of it, so its hand-made / designed sd ratio is at least the
    design's), and dropping the trusted range lets the design narrow more than keeping it."""
    bench = load("suggest_ceiling")
    ensemble = bench.truth_ensemble()
    hand, rounds = bench.hand_rounds(1)
    hand_sd = bench.sd_at_truth(ensemble, hand[0])
    ratios = {}
    for name in ("trusted", "share_only"):
        designed = bench.oracle_rounds(ensemble, rounds, bench.RANGES[name])[0]
        assert len(designed) > len(hand[0]) - rounds[0][1]  # the design added runs
        ratios[name] = hand_sd / bench.sd_at_truth(ensemble, designed)
        bound = hand_sd / bench.relaxed_sd(ensemble, *rounds[0], bench.RANGES[name])
        assert math.isfinite(bound) and bound >= ratios[name] * 0.99
    assert ratios["share_only"] > ratios["trusted"] > 1

"""Round-4 hostile findings that need no workflow run: the store keeps models trained on other
data, damaged store manifests, a model.pt copied over another run's, prune and symbolic links, and
a study without a law."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalelab.plan import integrity
from scalelab.store import runs as store
from scalelab.errors import ScalelabError


def _run_dir(tmp_path: Path, spec: dict, weights: bytes) -> Path:
    run_dir = tmp_path / "runs" / weights.decode().replace(" ", "-")
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(weights)
    (run_dir / "curve.csv").write_text("step,val_loss\n1,3.0\n")
    (run_dir / "metrics.json").write_text(json.dumps({"run": spec["run"], "spec_sha": store.spec_sha(spec)}))
    return run_dir


# ----------------------------------------------------------------------------- the store and the data


def test_a_run_trained_on_other_data_never_replaces_the_stored_one_and_a_revert_restores_it(tmp_path):
    spec, code = {"run": "a-4K-s0", "lr": 1e-3}, "c0"
    key, entries = store.run_key(spec, code), tmp_path / "store"
    store.save(entries, key, _run_dir(tmp_path, spec, b"trained on the old corpus"), "old", spec, code)
    assert store.lookup(entries, key, "new", spec=spec) is None  # edited corpus: retrain
    store.save(entries, key, _run_dir(tmp_path, spec, b"trained on the new corpus"), "new", spec, code)
    old, new = store.lookup(entries, key, "old", spec=spec), store.lookup(entries, key, "new", spec=spec)
    assert old is not None and new is not None and old != new  # both kept
    assert (old / "model.pt").read_bytes() == b"trained on the old corpus"  # the revert restores, trains nothing
    assert (new / "model.pt").read_bytes() == b"trained on the new corpus"
    # the new data's entry retrained (a damaged copy, say) replaces only itself
    store.save(entries, key, _run_dir(tmp_path, spec, b"the new corpus, again"), "new", spec, code)
    assert (store.lookup(entries, key, "new", spec=spec) / "model.pt").read_bytes() == b"the new corpus, again"
    assert (store.lookup(entries, key, "old", spec=spec) / "model.pt").read_bytes() == b"trained on the old corpus"


@pytest.mark.parametrize("damaged", ["manifest.json", "metrics.json"])
def test_a_store_entry_whose_json_is_not_an_object_is_set_aside_not_a_traceback(tmp_path, damaged, capsys):
    spec, code = {"run": "a-4K-s0", "lr": 1e-3}, "c0"
    key, entries = store.run_key(spec, code), tmp_path / "store"
    store.save(entries, key, _run_dir(tmp_path, spec, b"w"), "d0", spec, code)
    (entries / key / damaged).write_text("[]")
    assert store.lookup(entries, key, "d0", spec=spec) is None
    assert "not a JSON object" in capsys.readouterr().out
    store.save(entries, key, _run_dir(tmp_path, spec, b"w2"), "d0", spec, code)  # the retrained run is kept
    assert store.lookup(entries, key, "d0", spec=spec) is not None


# ----------------------------------------------------------------------------- model.pt by its checksum


def _trained(results: Path, run: str, weights: bytes) -> Path:
    run_dir = results / "runs" / run
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(weights)
    (run_dir / "curve.csv").write_text("step\n1\n")
    sha = store.file_sha256(run_dir / "model.pt")
    (run_dir / "metrics.json").write_text(json.dumps({"run": run, "model_bytes": len(weights), "model_sha256": sha}))
    return run_dir


def test_a_model_copied_over_a_same_shape_run_with_cp_p_is_damaged(tmp_path, monkeypatch):
    results = tmp_path / "results"
    a, b = _trained(results, "a-1K-s0", b"A" * 64), _trained(results, "b-1K-s0", b"B" * 64)
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda path: hashed.append(path) or real(path))
    assert integrity.scan(results, ["a-1K-s0", "b-1K-s0"])[1] == []
    assert len(hashed) == 2 and (results / integrity.CHECKSUMS).exists()
    assert integrity.scan(results, ["a-1K-s0", "b-1K-s0"])[1] == [] and len(hashed) == 2  # cached: no rehash
    shutil.copy2(a / "model.pt", b / "model.pt")  # cp -p: same size, same mtime
    damaged = integrity.scan(results, ["a-1K-s0", "b-1K-s0"])[1]
    assert len(damaged) == 1 and str(b / "model.pt") in damaged[0] and "SHA-256" in damaged[0]


# ----------------------------------------------------------------------------- prune and links


def _prune(study: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scalelab", "prune", str(study), *flags], capture_output=True, text=True, timeout=120
    )


@pytest.fixture()
def study(tmp_path):
    folder = tmp_path / "study"
    (folder / "results").mkdir(parents=True)
    (folder / "config.yaml").write_text(
        "data: {source: python-stdlib}\nmodels: {a: {n_layer: 1, d_model: 16, n_head: 2}}\n"
        "grid: {models: [a], tokens: [4K], seeds: [0]}\ntrain: {context: 32, batch_size: 8}\n"
        "eval: {prompt_tokens: 8, max_new_tokens: 8}\n"
    )
    return folder


def test_prune_removes_a_linked_entry_s_link_and_never_what_it_points_to(study, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "entry"
    elsewhere.mkdir(parents=True)
    (elsewhere / "model.pt").write_bytes(b"someone's only copy")
    (study / "results" / "store").mkdir()
    (study / "results" / "store" / "0123abcd").symlink_to(elsewhere)
    proc = _prune(study, "--delete")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert not (study / "results" / "store" / "0123abcd").is_symlink()
    assert (elsewhere / "model.pt").read_bytes() == b"someone's only copy"


def test_prune_refuses_a_store_that_is_a_link_unless_told(study, tmp_path):
    shared = tmp_path / "shared-store"
    (shared / "another-study-entry").mkdir(parents=True)
    (shared / "another-study-entry" / "manifest.json").write_text(json.dumps({"run": "x-1K-s0"}))
    (study / "results" / "store").symlink_to(shared)
    proc = _prune(study, "--delete")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--shared-store" in proc.stderr
    assert (shared / "another-study-entry").is_dir()
    assert _prune(study).returncode == 0  # listing is always fine


# ----------------------------------------------------------------------------- a study without a law


def test_a_study_whose_fit_has_no_law_opens_and_only_predict_refuses(tmp_path):
    import scalelab

    results = tmp_path / "results"
    (results / "fit").mkdir(parents=True)
    rows = [
        {"run": f"{m}-{d}-s0", "params": n, "tokens": d, "val_loss": 2 + 50 / n**0.3 + 80 / d**0.3}
        for m, n in (("a", 1e4), ("b", 3e4))
        for d in (1e5, 3e5, 1e6)
    ]
    pd.DataFrame(rows).assign(status="ok").to_csv(results / "metrics.csv", index=False)
    for row in rows:
        (results / "runs" / row["run"]).mkdir(parents=True)
        (results / "runs" / row["run"] / "curve.csv").write_text(f"step,val_loss\n1,{row['val_loss']}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "fit",
            str(results / "metrics.csv"),
            "--out",
            str(results / "fit"),
            "--bootstrap",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((results / "fit" / "fit.json").read_text()).get("chosen_form") is None
    study = scalelab.load_study(tmp_path)
    assert len(study.metrics) == 6 and "no law" in repr(study)
    with pytest.raises(ScalelabError, match="no law to predict with") as raised:
        study.predict(1e5, 1e6)
    assert "\n" not in str(raised.value)
    assert np.isfinite(study.metrics["val_loss"]).all()
    assert os.path.exists(results / "fit" / "fit.json")


# ----------------------------------------------------------------------------- corpus globs


@pytest.mark.parametrize(
    "layout", ["results linked to a scratch disk", "a study inside the study", "a folder holding a study config"]
)
def test_a_corpus_glob_never_takes_a_study_s_outputs(tmp_path, layout):
    from scalelab.config.load import source_files

    study = tmp_path / "study"
    corpus = [study / "corpus" / f"doc{i}.txt" for i in range(2)]
    for path in corpus:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("some text\n")
    if layout == "results linked to a scratch disk":
        (tmp_path / "scratch/fit").mkdir(parents=True)
        (tmp_path / "scratch/fit/fit.txt").write_text("a report\n")
        (study / "results").symlink_to(tmp_path / "scratch")
    elif layout == "a study inside the study":
        (study / "studies/foo/results/fit").mkdir(parents=True)
        (study / "studies/foo/results/fit/fit.txt").write_text("a report\n")
        (study / "studies/foo/notes.txt").write_text("the other study's notes\n")
    else:
        (study / "other").mkdir()
        (study / "other/config.yaml").write_text("grid: {}\n")
        (study / "other/summary.txt").write_text("a summary\n")
    config = {"data": {"source": {"files": ["**/*.txt"]}}}
    assert sorted(source_files(config, study)) == sorted(corpus)
    cwd = os.getcwd()
    try:
        os.chdir(study)  # as the workflow calls it: a relative base
        assert sorted(source_files(config)) == sorted(p.relative_to(study) for p in corpus)
    finally:
        os.chdir(cwd)


def test_an_output_path_that_is_a_device_is_written_in_place_never_replaced(tmp_path):
    """`--out /dev/null` (or a FIFO) is written into, not renamed over: as root, an atomic rename
    over /dev/null would leave a plain file there for every process on the machine."""
    from scalelab.files import write_json

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    import threading

    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_json(fifo, {"a": 1})
    reader.join(timeout=10)
    assert fifo.is_fifo() and got and json.loads(got[0]) == {"a": 1}

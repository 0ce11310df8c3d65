"""End to end: results never silently disagree with the config, with or without Snakemake's
metadata (.snakemake/). Two tiny studies, run for real once per session and shared with other
files (tests/conftest.py): cosine_study (tests/test_workflow.py's TINY: models a, b, c x 4K, 8K)
and wsd_study (tests/test_workflow_wsd.py's WSD_TINY: 2 families x 4K, 8K, 16K). Each case works
on a copy of one (copied without .snakemake/, as anyone sharing a study copies it), asserting
from Snakemake's own dry-run job counts and from the files a real run leaves."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, make_corpus
from test_workflow import TINY, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.e2e

DOWNSTREAM = {"aggregate": 1, "fit": 1, "suggest": 1, "report": 1}
# Tests of what trains and what the stores restore rebuild up to metrics.csv: the fit, suggest and
# report after it read no model (their own identities are tested below), and would add a minute a test.
UNTIL_METRICS = ("--until", "aggregate")
AFTER_METRICS = {"fit": 1, "suggest": 1, "report": 1}


def shared_copy(study: Path, target: Path) -> Path:
    """The study as someone else receives it: config, corpus and results, no .snakemake/."""
    shutil.copytree(study, target, ignore=shutil.ignore_patterns(".snakemake"), symlinks=True)
    return target


def with_config(folder: Path, config: dict, edit=None) -> dict:
    config = copy.deepcopy(config)
    if edit:
        edit(config)
    write_config(folder, config)
    return config


def test_a_copied_finished_study_reruns_nothing_with_or_without_touch(cosine_study, tmp_path):
    copied = shared_copy(cosine_study, tmp_path / "copy")
    summary = (copied / "results/report/summary.txt").read_text()
    assert "  report        results/report/index.html" in summary and str(cosine_study) not in summary
    assert "  disk          runs " in summary and "run store" in summary and "trunk store" in summary
    assert planned_jobs(copied) == {}
    snakemake(copied, "--touch")
    assert planned_jobs(copied) == {}


@pytest.mark.parametrize(
    "how", ["copied without .snakemake", "copied with .snakemake, then removed", "touched", "mtime-edited"]
)
def test_an_lr_change_without_metadata_reruns_exactly_that_models_runs(cosine_study, tmp_path, how):
    if "removed" in how:
        folder = tmp_path / "copy"
        shutil.copytree(cosine_study, folder, symlinks=True)
        shutil.rmtree(folder / ".snakemake")
    else:
        folder = shared_copy(cosine_study, tmp_path / "copy")
    with_config(folder, TINY, lambda c: c.setdefault("overrides", {}).update(a={"lr": 7e-3}))
    if how == "touched":  # --touch marks every output up to date; the contents still disagree
        snakemake(folder, "--touch")
    if how == "mtime-edited":  # results look newer than everything
        for path in (folder / "results").rglob("*"):
            os.utime(path, (2e9, 2e9))
    proc = snakemake(folder, "--dry-run")
    assert "results/runs/a-4K-s0/metrics.json: trained with other settings" in proc.stderr
    assert planned_jobs(folder) == {"train": 2, "evaluate": 2, **DOWNSTREAM}


def test_the_rerun_writes_the_new_setting_and_restoring_it_is_a_copy(cosine_study, tmp_path):
    folder = shared_copy(cosine_study, tmp_path / "copy")
    old_sha = json.loads((folder / "results/runs/a-4K-s0/metrics.json").read_text())["spec_sha"]
    with_config(folder, TINY, lambda c: c.setdefault("overrides", {}).update(a={"lr": 7e-3}))
    snakemake(folder, *UNTIL_METRICS)
    new = json.loads((folder / "results/runs/a-4K-s0/metrics.json").read_text())
    assert new["spec_sha"] != old_sha and new["lr"] == 7e-3
    assert "restored from" not in (folder / "logs/train/a-4K-s0.log").read_text()  # trained
    assert planned_jobs(folder) == AFTER_METRICS
    with_config(folder, TINY)  # back: both of a's runs come back from the store, nothing trains
    snakemake(folder, *UNTIL_METRICS)
    assert json.loads((folder / "results/runs/a-4K-s0/metrics.json").read_text())["spec_sha"] == old_sha
    for run_id in ("a-4K-s0", "a-8K-s0"):
        assert "restored from" in (folder / f"logs/train/{run_id}.log").read_text()


def test_a_run_folder_copied_in_from_another_study_is_replaced(cosine_study, wsd_study, tmp_path):
    folder = shared_copy(cosine_study, tmp_path / "copy")
    run = folder / "results/runs/a-4K-s0"
    cosine_metrics = json.loads((run / "metrics.json").read_text())
    shutil.rmtree(run)
    shutil.copytree(wsd_study / "results/runs/a-4K-s0", run)
    assert json.loads((run / "metrics.json").read_text())["schedule"] == "wsd"
    proc = snakemake(folder, "--dry-run")
    assert "results/runs/a-4K-s0/metrics.json: trained with other settings" in proc.stderr
    assert planned_jobs(folder) == {"train": 1, "evaluate": 1, **DOWNSTREAM}
    snakemake(folder, *UNTIL_METRICS)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["schedule"] == "cosine" and metrics["spec_sha"] == cosine_metrics["spec_sha"]
    assert "restored from" in (folder / "logs/train/a-4K-s0.log").read_text()  # the store had it


def _trunk(folder: Path) -> Path:
    """A family's middle trunk segment (WSD_TINY's families end segments at steps 12, 24, 47)."""
    return sorted((folder / "results/trunks").glob("*/step24.ckpt"))[0]


class Planted:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("damage", ["truncated", "planted-pickle"])
def test_a_damaged_trunk_checkpoint_is_rebuilt_from_the_trunk_store(wsd_study, tmp_path, damage):
    folder = shared_copy(wsd_study, tmp_path / "copy")
    ckpt = _trunk(folder)
    original = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(original[: len(original) // 2])
    else:
        with open(ckpt, "wb") as f:
            pickle.dump({"global_step": 24, "x": Planted()}, f)
    proc = snakemake(folder, "--dry-run")
    assert f"{ckpt.relative_to(folder)}: " in proc.stderr and "rerunning it" in proc.stderr
    # that segment, and after it the family's later segment and the two cooldowns that branch from
    # them (newer inputs); the first segment and its cooldown stay
    assert planned_jobs(folder) == {"trunk": 2, "train": 2, "evaluate": 2, **DOWNSTREAM}
    proc = snakemake(folder, *UNTIL_METRICS)
    assert "weights_only=False" not in proc.stdout + proc.stderr
    assert ckpt.read_bytes() == original and not (folder / "PWNED").exists()
    # the rebuilt segments' logs (the damaged one and the later one; step12's is the first run's)
    logs = [log for log in (folder / "logs/trunk" / ckpt.parent.name).glob("step*.log") if int(log.stem[4:]) >= 24]
    assert len(logs) == 2 and all("restored from" in log.read_text() for log in logs)  # nothing retrained
    assert planned_jobs(folder) == AFTER_METRICS


@pytest.mark.parametrize("damage", ["truncated", "planted-pickle"])
def test_a_damaged_trunk_given_to_a_train_job_is_one_line(tmp_path, damage):
    """What the train and trunk jobs check before loading (outside the workflow too): one line
    naming the file, never the loader's advice to turn weights_only off."""
    import torch

    from scalelab.errors import ScalelabError
    from scalelab.train.resume import check_trunk_checkpoint

    ckpt = tmp_path / "step12.ckpt"
    torch.save({"global_step": 12, "state_dict": {"w": torch.zeros(64, 64)}}, ckpt)
    check_trunk_checkpoint(ckpt)  # whole: accepted
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    else:
        torch.save({"global_step": 12, "x": Planted()}, ckpt)
    with pytest.raises(ScalelabError) as caught:
        check_trunk_checkpoint(ckpt)
    message = str(caught.value)
    assert message.startswith(f"{ckpt}: damaged or not a trunk checkpoint") and "\n" not in message
    assert "weights_only" not in message and not (tmp_path / "PWNED").exists()


def test_module_checks_jobs_by_role(tmp_path):
    """Under `use rule * from scalelab as scalelab_*`, a GPU run on a machine without one is
    refused before any job, as in a plain run."""
    from scalelab.plan.cluster import gpu_here

    if gpu_here():
        pytest.skip("this machine has a GPU")
    import subprocess
    import sys

    folder = tmp_path / "other"
    make_corpus(folder / "corpus", documents=150)
    config = with_config(folder, TINY, lambda c: c["train"].update(accelerator="gpu"))
    (folder / "config").mkdir()
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n'
        f'module scalelab:\n    snakefile: "{REPO / "Snakefile"}"\n    config: config\n\n'
        "use rule * from scalelab as scalelab_*\n"
    )
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--cores", "2"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode != 0
    assert re.search(
        r"scalelab: error: train\.accelerator: [abc]-[48]K-s0 asks for a GPU but this machine has none",
        proc.stdout + proc.stderr,
    ), proc.stderr[-2000:]
    assert not (folder / "results").exists()


def prune(folder: Path, *args: str) -> str:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "scalelab", "prune", str(folder), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_prune_keeps_what_the_config_needs_and_a_restore_retrains_only_what_was_pruned(cosine_study, tmp_path):
    from scalelab.config import load as study
    from scalelab.plan.prune import needed

    folder = shared_copy(cosine_study, tmp_path / "copy")
    config = with_config(folder, TINY, lambda c: c.setdefault("overrides", {}).update(a={"lr": 7e-3}))
    snakemake(folder, *UNTIL_METRICS)  # a's two runs trained at the new lr; the old ones stay in the store
    entries = folder / "results/store"
    before = {p.name for p in entries.iterdir()}
    listed = prune(folder)
    assert listed.count("would remove") == 2 and listed.count(": a setting no current run uses") == 2
    assert "a-4K-s0" in listed and "a-8K-s0" in listed and "b-4K-s0" not in listed
    assert "would free" in listed and "run store" in listed
    assert {p.name for p in entries.iterdir()} == before  # a dry run removes nothing
    assert "0 entries" in prune(folder, "--keep", "1")  # the last other setting of each point kept
    prune(folder, "--delete")
    run_keys, _, _ = needed(study.load(folder / "config.yaml"))
    assert run_keys <= {p.name for p in entries.iterdir()} and len(before) - len(list(entries.iterdir())) == 2
    assert planned_jobs(folder) == AFTER_METRICS
    shutil.rmtree(folder / "results/runs/b-4K-s0")  # what the config needs is still in the store
    snakemake(folder, *UNTIL_METRICS)
    assert "restored from" in (folder / "logs/train/b-4K-s0.log").read_text()
    with_config(folder, TINY)  # back to a's old lr: pruned, so exactly those two runs retrain
    assert planned_jobs(folder) == {"train": 2, "evaluate": 2, **DOWNSTREAM}
    snakemake(folder, *UNTIL_METRICS)
    for run_id in ("a-4K-s0", "a-8K-s0"):
        assert "restored from" not in (folder / f"logs/train/{run_id}.log").read_text()
    assert config["overrides"]["a"]["lr"] == 7e-3


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("zz.jsonl", b'{"body": "no text field"}\n', "the first record has no field 'text'"),
        ("zz.txt", "wide text\n".encode("utf-16"), "UTF-16 text"),
    ],
)
def test_bad_corpus_content_stops_the_dag_and_keeps_the_tokens(cosine_study, tmp_path, name, content, words):
    folder = shared_copy(cosine_study, tmp_path / "copy")
    config = copy.deepcopy(TINY)
    config["data"]["source"]["files"] = ["corpus/*"]
    write_config(folder, config)
    meta = (folder / "results/data/meta.json").read_bytes()
    (folder / "corpus" / name).write_bytes(content)
    proc = snakemake(folder, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("scalelab: error:")]
    assert len(errors) == 1 and f"corpus/{name}: " in errors[0] and words in errors[0]
    assert "Traceback" not in proc.stderr
    assert (folder / "results/data/meta.json").read_bytes() == meta
    (folder / "corpus" / name).unlink()
    write_config(folder, TINY)
    assert planned_jobs(folder) == {}


@pytest.mark.parametrize("change", ["vocab_size", "a corpus file added"])
def test_a_data_change_without_metadata_retokenizes(cosine_study, tmp_path, change):
    folder = shared_copy(cosine_study, tmp_path / "copy")
    if change == "vocab_size":
        with_config(folder, TINY, lambda c: c["data"]["tokenizer"].update(vocab_size=320))
    else:
        make_corpus(folder / "more", documents=1)
        shutil.copy(folder / "more/doc0000.txt", folder / "corpus/zz-new.txt")
    proc = snakemake(folder, "--dry-run")
    assert "results/data/meta.json: tokenized from" in proc.stderr or "other data settings" in proc.stderr
    assert planned_jobs(folder) == {"tokenize": 1, "train": 6, "evaluate": 6, **DOWNSTREAM}


def test_a_corpus_edit_and_its_revert_train_nothing_the_second_time(cosine_study, tmp_path):
    """The store keeps the models of the old data beside the new ones (scalelab.store.entry_path):
    reverting a corpus edit restores every run and trains none."""
    folder = shared_copy(cosine_study, tmp_path / "copy")
    make_corpus(folder / "more", documents=1, seed=7)
    shutil.copy(folder / "more/doc0000.txt", folder / "corpus/zz-new.txt")
    snakemake(folder, *UNTIL_METRICS)
    runs = sorted(p.name for p in (folder / "results/runs").iterdir())
    assert len(runs) == 6 and not any("restored from" in (folder / f"logs/train/{r}.log").read_text() for r in runs)
    (folder / "corpus/zz-new.txt").unlink()  # the revert
    snakemake(folder, *UNTIL_METRICS)
    for run_id in runs:
        assert "restored from" in (folder / f"logs/train/{run_id}.log").read_text(), run_id
    old = json.loads((cosine_study / "results/runs" / runs[0] / "metrics.json").read_text())
    assert json.loads((folder / "results/runs" / runs[0] / "metrics.json").read_text())["val_loss"] == old["val_loss"]


# ----------------------------------------------------------------------------- every stage's identity
@pytest.mark.parametrize(
    "edit, line, expected",
    [
        (
            lambda c: c["eval"].update(test_tokens=256),
            "results/runs/a-4K-s0/eval.json: written with other settings (test_tokens)",
            {"evaluate": 6, **DOWNSTREAM},
        ),
        (
            lambda c: c["fit"].update(bootstrap=30),
            "results/fit/fit.json: written with other settings (bootstrap)",
            {"fit": 1, "suggest": 1, "report": 1},
        ),
        (
            lambda c: c["report"].update(title="another title"),
            "results/report/summary.txt: written with other settings (title)",
            {"report": 1},
        ),
    ],
    ids=["eval.test_tokens", "fit.bootstrap", "report.title"],
)
@pytest.mark.parametrize("how", ["copied", "touched"])
def test_a_changed_stage_setting_without_metadata_plans_exactly_its_jobs(
    cosine_study, tmp_path, edit, line, expected, how
):
    folder = shared_copy(cosine_study, tmp_path / "copy")
    with_config(folder, TINY, edit)
    if how == "touched":
        snakemake(folder, "--touch")
    proc = snakemake(folder, "--dry-run")
    assert line in proc.stderr
    assert planned_jobs(folder) == expected


def _same_size_edit(path: Path) -> None:
    """Change the file's bytes in place, keeping its size and mtime (as `sed -i` and a careful user would)."""
    stat = path.stat()
    text = path.read_bytes()
    path.write_bytes(text.replace(b"Document", b"XXXXXXXX", 1))
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("recorded", ["recorded by tokenize", "trusted on first sight"])
def test_a_same_size_corpus_edit_retokenizes(cosine_study, tmp_path, recorded):
    folder = shared_copy(cosine_study, tmp_path / "copy")
    if recorded == "trusted on first sight":  # a meta.json tokenized before the content digest was recorded
        meta_path = folder / "results/data/meta.json"
        stat = meta_path.stat()
        meta = json.loads(meta_path.read_text())
        del meta["corpus"]["content_sha256"]
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        os.utime(meta_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned_jobs(folder) == {}
    _same_size_edit(folder / "corpus" / "doc0007.txt")
    proc = snakemake(folder, "--dry-run")
    assert "corpus file corpus/doc0007.txt changed since it was tokenized" in proc.stderr
    assert planned_jobs(folder).get("tokenize") == 1

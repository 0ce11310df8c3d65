"""End to end: Snakemake as a subprocess on a tiny study, asserting from Snakemake's own output.

One study is run for real once (module fixture); every staleness question is then asked as a
dry run, whose job counts per rule say exactly what would rerun.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, make_corpus

pytestmark = pytest.mark.e2e
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

TINY = {
    "data": {
        "source": {"files": ["corpus/*.txt"]},
        "split": {"val": 0.1, "test": 0.1},
        "tokenizer": {"vocab_size": 300},
    },
    "models": {
        "a": {"n_layer": 1, "d_model": 16, "n_head": 2},
        "b": {"n_layer": 1, "d_model": 32, "n_head": 2},
        "c": {"n_layer": 2, "d_model": 48, "n_head": 2},
    },
    "grid": {"models": ["a", "b", "c"], "tokens": ["4K", "8K"], "seeds": [0]},
    "train": {"context": 32, "batch_size": 8, "val_tokens": 512, "val_evals": 2},
    "overrides": {"a": {"lr": 5e-3}},
    "eval": {"test_tokens": 512, "prompts": 4, "prompt_tokens": 8, "max_new_tokens": 8, "batch_size": 4},
    "fit": {"bootstrap": 20},
    # A hostile title runs through the whole workflow: it must reach no shell and no page unescaped.
    "report": {"title": "tiny <script>alert(1)</script> $(touch PWNED) '; touch PWNED2; echo '"},
}


def write_config(study: Path, config: dict) -> None:
    (study / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def snakemake(
    study: Path, *args: str, snakefile: Path = REPO / "Snakefile", config: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    command = [
        SNAKEMAKE,
        "--snakefile",
        str(snakefile),
        "--directory",
        str(study),
        "--configfile",
        str(config or study / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(study: Path, **kwargs) -> dict[str, int]:
    """Jobs per rule that a dry run would execute (empty when nothing is to be done)."""
    proc = snakemake(study, "--dry-run", **kwargs)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    counts = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M))
    counts.pop("total", None)
    counts.pop("all", None)
    return counts


@pytest.fixture(scope="module")
def study(cosine_study) -> Path:
    """The study above, finished: the session fixture `cosine_study` (tests/conftest.py), shared
    with other files. Tests here only read it or ask dry runs; one that runs jobs works on a copy."""
    return cosine_study


def copy_of(study: Path, target: Path) -> Path:
    """A copy of a finished study, metadata (.snakemake/) and file times included."""
    shutil.copytree(study, target, symlinks=True, copy_function=shutil.copy2)
    return target


@pytest.fixture()
def repo_copy(tmp_path) -> Path:
    """The workflow and package source copied, so a test can edit code without touching the repo."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("Snakefile", "workflow", "src", "config", "profiles"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(
            source, copy / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if source.is_dir() else {})
        )
    return copy


def test_first_run_completes_every_stage(study):
    table = pd.read_csv(study / "results/metrics.csv")
    assert sorted(table["run"]) == sorted(f"{m}-{t}-s0" for m in "abc" for t in ("4K", "8K"))
    assert (table["status"] == "ok").all()
    assert table["val_loss"].notna().all() and table["test_loss"].notna().all()
    for name in (
        "fit/fit.json",
        "suggest/suggest.json",
        "report/index.html",
        "data/meta.json",
        "runs/c-8K-s0/curve.csv",
    ):
        assert (study / "results" / name).exists(), name
    assert (study / "logs/train/a-4K-s0.log").exists()


def test_no_op_rerun_does_nothing(study):
    assert planned_jobs(study) == {}
    assert not (study / "PWNED").exists() and not (study / "PWNED2").exists()
    outside_code, fenced = [], False
    for line in (study / "results/report/report.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            outside_code.append(line)
    assert "<script>" not in "\n".join(outside_code)  # escaped, or inside a code block: never live HTML


def test_extending_the_grid_schedules_only_new_runs(study, tmp_path):
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["grid"]["tokens"].append("12K")
    config["models"]["d"] = {"n_layer": 2, "d_model": 64, "n_head": 4}
    config["grid"]["models"].append("d")
    path = tmp_path / "extended.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(study, config=path)
    new_runs = 4 * 3 - 3 * 2  # (a, b, c, d) x (4K, 8K, 12K) minus the six that exist
    assert jobs.get("train") == new_runs
    assert jobs.get("evaluate") == new_runs
    assert "tokenize" not in jobs
    assert jobs.get("aggregate") == jobs.get("fit") == jobs.get("suggest") == jobs.get("report") == 1


def test_changing_one_models_lr_reruns_only_its_runs(study, tmp_path):
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["overrides"]["b"] = {"lr": 1e-3}
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(study, config=path)
    assert jobs.get("train") == 2 and jobs.get("evaluate") == 2 and "tokenize" not in jobs
    detail = snakemake(study, "--dry-run", config=path).stdout
    retrained = set(re.findall(r"output: results/runs/([^/]+)/model\.pt", detail))
    assert retrained == {"b-4K-s0", "b-8K-s0"}


def test_changing_eval_settings_reruns_evaluate_not_train(study, tmp_path):
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["eval"]["max_new_tokens"] = 6
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(study, config=path)
    assert jobs.get("evaluate") == 6 and "train" not in jobs and "tokenize" not in jobs


def test_a_changed_setting_is_named_in_the_reports_rerun_reason(study, tmp_path):
    """Issue 31 item 11: the report's settings param was one JSON object of every setting, so the
    reason Snakemake printed for a rerun was that object twice (about 3 KB each)."""
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["data"]["allow_repeat"] = True  # reruns suggest and the report (test above)
    path = tmp_path / "repeat.yaml"
    path.write_text(yaml.safe_dump(config))
    # The report alone: its own reason is then the params, not "updated by another job".
    out = snakemake(study, "--dry-run", "--allowed-rules", "report", config=path).stdout
    report_job = out.split("rule report:", 1)[1].split("\n\n", 1)[0]
    reason = next(line for line in report_job.splitlines() if "reason:" in line)
    assert "Params have changed since last execution:" in reason, reason
    params = reason.split("Params have changed since last execution:", 1)[1].split(";", 1)[0]
    assert "data.allow_repeat = true" in params and "data.allow_repeat = false" in params
    assert len(params) < 400, params


def test_changing_the_tokenizer_reruns_everything(study, tmp_path):
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["data"]["tokenizer"]["vocab_size"] = 320
    path = tmp_path / "vocab.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(study, config=path)
    assert jobs.get("tokenize") == 1 and jobs.get("train") == 6 and jobs.get("evaluate") == 6


def test_choosing_trackers_reruns_nothing(study, tmp_path):
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["train"]["logger"] = ["csv", "tensorboard", "mlflow"]  # logging decides no number
    path = tmp_path / "loggers.yaml"
    path.write_text(yaml.safe_dump(config))
    # Nothing retrains or re-evaluates: the new trackers are given the finished runs' evaluations
    # (track). The report does not rerun: its settings leave the loggers out, and are compared setting
    # by setting (it reran only because the YAML written here reorders the config's keys).
    assert planned_jobs(study, config=path) == {"track": 1}


def test_allowing_repeats_reruns_nothing(study, tmp_path):
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["data"]["allow_repeat"] = True  # permits longer runs, changes no token
    path = tmp_path / "repeat.yaml"
    path.write_text(yaml.safe_dump(config))
    # Nothing retokenizes or retrains; only what to run next may now reach past the train split.
    assert planned_jobs(study, config=path) == {"suggest": 1, "report": 1}


def test_model_code_edit_reruns_all_training_but_a_comment_does_not(study, repo_copy):
    model = repo_copy / "src/scalelab/model.py"
    source = model.read_text()
    model.write_text(
        source.replace("class MLP(nn.Module):", "# a new comment\nclass MLP(nn.Module):").replace(
            '"""A GPT-style decoder', '"""A GPT-style decoder (docs edited)'
        )
    )
    assert planned_jobs(study, snakefile=repo_copy / "Snakefile") == {}
    model.write_text(source.replace('approximate="tanh"', 'approximate="none"'))
    jobs = planned_jobs(study, snakefile=repo_copy / "Snakefile")
    assert jobs.get("train") == 6 and jobs.get("evaluate") == 6 and "tokenize" not in jobs


def test_report_code_edit_reruns_only_the_report(study, repo_copy):
    report = repo_copy / "src/scalelab/report/figures.py"
    report.write_text(report.read_text() + "\n\nREPORT_EDITED = True\n")
    assert planned_jobs(study, snakefile=repo_copy / "Snakefile") == {"report": 1}


def test_snakemake_report_archive(study, tmp_path):
    study = copy_of(study, tmp_path / "study")  # the shared study stays as it was
    snakemake(study, "--report", "results/report.zip")
    assert (study / "results/report.zip").stat().st_size > 10_000


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c.update(bogus=1), ["bogus"]),
        (lambda c: c["train"].update(lr=float("nan")), ["train.lr", "finite"]),
        (lambda c: c["train"].update(logger="neptune"), ["train.logger"]),
        (lambda c: c["grid"].update(models=[]), ["grid.models"]),
        (lambda c: c["grid"].update(seeds=[1.0]), ["grid.seeds[0]", "integer"]),
        (lambda c: c["train"].update(context=10**6, val_tokens=2 * 10**6), ["train split", "context"]),
        (lambda c: c["train"].update(accelerator="gpu"), ["accelerator", "GPU"]),
        (lambda c: c["models"].update(a={"n_layer": 64, "d_model": 8192, "n_head": 64}), ["models.a", "MB"]),
        (lambda c: c["eval"].update(bleu_tokenize="13a; touch PWNED; echo"), ["eval.bleu_tokenize"]),
        (lambda c: c["grid"]["models"].append("zz"), ["grid.models", "zz"]),
        (lambda c: c["models"].update(a={"n_layer": 1, "d_model": 15, "n_head": 2}), ["models.a", "divisible"]),
        (lambda c: c["grid"].update(tokens=[0]), ["grid.tokens[0]"]),
        (lambda c: c["data"].update(source={"files": ["nowhere/*.txt"]}), ["data.source.files[0]", "nowhere"]),
        (lambda c: c["data"].update(source={"files": ["empty/*.txt"]}), ["empty"]),
        (lambda c: c["grid"].update(tokens=["50M"]), ["grid.tokens", "allow_repeat"]),
    ],
)
def test_bad_input_one_line_error_and_results_untouched(study, tmp_path, change, words):
    (study / "empty").mkdir(exist_ok=True)
    (study / "empty/blank.txt").write_text("")
    config = yaml.safe_load((study / "config.yaml").read_text())
    change(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    metrics = study / "results/metrics.csv"
    before = (metrics.read_bytes(), metrics.stat().st_mtime_ns)
    models = {p: p.read_bytes() for p in (study / "results/runs").glob("*/model.pt")}
    proc = snakemake(study, config=path, check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if "scalelab: error:" in line]
    assert len(errors) == 1, output[-3000:]
    assert {p: p.read_bytes() for p in (study / "results/runs").glob("*/model.pt")} == models
    assert not (study / "PWNED").exists()
    for word in words:
        assert word in errors[0]
    assert "Traceback" not in output
    assert (metrics.read_bytes(), metrics.stat().st_mtime_ns) == before


def test_killed_workflow_resumes_training_from_its_checkpoint(study, tmp_path):
    """Kill Snakemake and its training job mid-run; the rerun resumes the run from its checkpoint."""
    import json
    import signal
    import time

    study = copy_of(study, tmp_path / "study")  # this test trains in it: the shared study stays as it was
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["models"]["big"] = {"n_layer": 4, "d_model": 128, "n_head": 4}
    config["grid"]["models"] = ["big"]
    config["grid"]["tokens"] = ["24K"]
    config["overrides"]["big"] = {"checkpoint_every": 0.05}
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(study),
        "--configfile",
        str(path),
        "--cores",
        "2",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir = study / "results/runs/big-24K-s0"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (run_dir / "ckpt/last.ckpt").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the workflow ended before a checkpoint was written"
    time.sleep(0.3)  # a few steps past the first checkpoint; checkpoints are renamed into place, never torn
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()
    snakemake(study, "--unlock", config=path)
    snakemake(study, config=path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 94
    assert metrics["resumed_from_step"] is not None and metrics["resumed_from_step"] > 0
    assert "resuming from step" in (study / "logs/train/big-24K-s0.log").read_text()


def _string_leaves(value, path=()):
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _string_leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _string_leaves(v, path + (i,))


def _set(config, path, value):
    for key in path[:-1]:
        config = config[key]
    config[path[-1]] = value


def test_no_config_string_reaches_a_shell(study, tmp_path):
    """Every string in the config, set to a shell payload, is either refused when the DAG is built
    or travels quoted: the shell commands of every job keep it inside one argument."""
    from scalelab.config import load as study_config
    from scalelab.errors import ScalelabError
    from scalelab.plan.grid import expand_grid

    marker = tmp_path / "pwned"
    payload = f"x'; touch {marker}; echo \"$(touch {marker})\" '"
    base = study_config.validate(yaml.safe_load((study / "config.yaml").read_text()))
    accepted = []
    for path in _string_leaves(base):
        config = copy.deepcopy(base)
        _set(config, path, payload)
        try:
            study_config.validate(config)
            expand_grid(config)
            study_config.source_files(config, study)
        except ScalelabError:
            continue  # refused before any job: an enum, a pattern, a model name, a file glob
        accepted.append(path)
    assert ("report", "title") in accepted  # free text that must travel quoted
    config = copy.deepcopy(base)
    for path in accepted:
        _set(config, path, payload)
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(study, "--dry-run", "--forceall", "--printshellcmds", config=path)
    commands = [
        line.split("Shell command:", 1)[1].strip()
        for line in (proc.stdout + proc.stderr).splitlines()
        if "Shell command:" in line and "Shell command: None" not in line
    ]
    assert len(commands) >= 4, proc.stdout[-2000:]
    for command in commands:
        assert "touch" not in shlex.split(command), command
    assert not marker.exists()


def _models(study: Path) -> dict[str, str]:
    import hashlib

    return {
        p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (study / "results/runs").glob("*/model.pt")
    }


def _error_line(proc) -> str:
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if "scalelab: error:" in line]
    assert proc.returncode != 0 and len(errors) == 1 and "Traceback" not in output, output[-3000:]
    return errors[0]


def test_damaging_a_finished_study_never_loses_a_model(study, tmp_path):
    """A finished study through each damaging action: every model that existed is still there, or
    is rebuilt identically (restored from the run store, or retrained to the same weights)."""
    study = copy_of(study, tmp_path / "study")
    models = _models(study)
    # Each rebuild runs up to metrics.csv: what the models give. The fit, suggest and report after it
    # read no model and are tested elsewhere; here they would only add a minute per rebuild.
    until = ("--until", "aggregate")
    tiny_runs = [f"{m}-{t}-s0" for m in "abc" for t in ("4K", "8K")]
    assert set(tiny_runs) <= set(models) and (study / "results/store").is_dir()

    # A corrupt meta.json: one line before any job, nothing deleted; removing it re-tokenizes and
    # restores every run from the store (deterministic tokens, same data fingerprint).
    meta = study / "results/data/meta.json"
    meta_text = meta.read_text()
    meta.write_text("{garbage")
    line = _error_line(snakemake(study, check=False))
    assert "results/data/meta.json" in line and "rm results/data/meta.json" in line
    assert _models(study) == models
    meta.unlink()
    assert planned_jobs(study).get("tokenize") == 1
    snakemake(study, *until)
    assert json.loads(meta.read_text())["tokenizer"] == json.loads(meta_text)["tokenizer"]
    assert _models(study) == models
    assert all("restored from" in (study / f"logs/train/{run}.log").read_text() for run in tiny_runs)

    # A run folder deleted after the study: exactly that run is rebuilt.
    shutil.rmtree(study / "results/runs/c-8K-s0")
    assert planned_jobs(study) == {"train": 1, "evaluate": 1, "aggregate": 1, "fit": 1, "suggest": 1, "report": 1}
    snakemake(study, *until)
    # Left: at most what reads metrics.csv. Which of them is Snakemake's to say: a rebuild restored from the
    # store rewrites metrics.csv byte for byte, and Snakemake reruns a job on an updated input only when its
    # checksum differs from the one the job's metadata recorded (if it recorded exactly one): CI on fbff4d0
    # planned the report alone, a local run the fit, suggest and report.
    assert _models(study) == models and set(planned_jobs(study)) <= {"fit", "suggest", "report"}

    # A model.pt truncated in place and a corrupt eval.json: one line naming them and the command;
    # then the command rebuilds the same weights (the store keeps its own copy, not a link).
    model = study / "results/runs/b-4K-s0/model.pt"
    with open(model, "r+b") as f:
        f.truncate(100)
    (study / "results/runs/a-8K-s0/eval.json").write_text('{"run": "a-8K-s0"')
    line = _error_line(snakemake(study, check=False))
    assert "b-4K-s0/model.pt" in line and "rm " in line and "(and 1 more)" in line
    assert {k: v for k, v in _models(study).items() if k != "b-4K-s0"} == {
        k: v for k, v in models.items() if k != "b-4K-s0"
    }
    removal = line.split("To rebuild: rm ", 1)[1].split(",", 1)[0].split()
    for name in removal:
        (study / name).unlink()
    snakemake(study, *until)
    assert _models(study) == models
    assert "restored from" in (study / "logs/train/b-4K-s0.log").read_text()

    # A model copied in from another run of the same shape (cp -p keeps the size and the mtime) is
    # never used as this run: the DAG stops with one line before any job, by its recorded SHA-256.
    shutil.copy2(study / "results/runs/a-4K-s0/model.pt", study / "results/runs/a-8K-s0/model.pt")
    line = _error_line(snakemake(study, check=False))
    assert "results/runs/a-8K-s0/model.pt" in line and "SHA-256" in line and "rm results/runs/a-8K-s0/model.pt" in line
    (study / "results/runs/a-8K-s0/model.pt").unlink()
    snakemake(study, *until)
    assert _models(study) == models
    assert pd.read_csv(study / "results/metrics.csv")["status"].eq("ok").all()

    # Changing a model's lr and changing it back: the second change is a copy, not a retrain.
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["overrides"]["b"] = {"lr": 1e-3}
    changed = tmp_path / "lr.yaml"
    changed.write_text(yaml.safe_dump(config))
    snakemake(study, *until, config=changed)
    assert _models(study)["b-4K-s0"] != models["b-4K-s0"]
    snakemake(study, *until)
    assert _models(study) == models
    assert "restored from" in (study / "logs/train/b-4K-s0.log").read_text()


def test_until_fit_prints_no_stale_summary(study, tmp_path):
    """onsuccess prints the report summary only when this invocation wrote it."""
    config = yaml.safe_load((study / "config.yaml").read_text())
    config["fit"]["bootstrap"] = 10
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    first_line = (study / "results/report/summary.txt").read_text().splitlines()[0]
    copy_dir = tmp_path / "study"
    shutil.copytree(study, copy_dir, symlinks=True)
    proc = snakemake(copy_dir, "--until", "fit", config=path)
    assert "fit" in proc.stdout + proc.stderr and first_line not in proc.stdout + proc.stderr
    proc = snakemake(copy_dir, config=path)  # now the report reruns, and its summary is printed
    assert (copy_dir / "results/report/summary.txt").read_text().splitlines()[0] in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "text, words",
    [
        ("grid:\n  seeds: [0]\n  seeds: [1]\n", ["duplicate key 'seeds'", "raw.yaml"]),
        (
            "grid:\n  tokens: [&l0 [4K, 4K, 4K, 4K, 4K, 4K, 4K, 4K, 4K]"
            + "".join(f", &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9))
            + "]\n",
            ["grid.tokens", "aliases"],
        ),
    ],
)
def test_raw_yaml_traps_are_one_line(study, tmp_path, text, words):
    """Duplicate keys and alias bombs, which Snakemake's own YAML reading lets through."""
    config = yaml.safe_load((study / "config.yaml").read_text())
    path = tmp_path / "raw.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if k != "grid"}) + text)
    proc = snakemake(study, "--dry-run", config=path, check=False)
    line = _error_line(proc)
    assert len(line) < 600
    for word in words:
        assert word in line


# ----------------------------------------------------------------------------- sweeps

SWEEP = {**copy.deepcopy(TINY), "report": {"title": "tiny sweep"}}
SWEEP["grid"] = {"models": ["a", "b"], "tokens": ["4K"], "seeds": [0], "sweep": {"lr": ["1e-3", 3.0e-3]}}
# a's own sweep replaces grid.sweep's lr: factors of its own lr (5e-3 from the override)
SWEEP["overrides"] = {"a": {"lr": 5e-3, "sweep": {"lr": {"times": [0.5, 1, 2]}}}}
SWEEP_RUNS = {"a-4K-s0-lr2.5e-3", "a-4K-s0-lr5e-3", "a-4K-s0-lr1e-2", "b-4K-s0-lr1e-3", "b-4K-s0-lr3e-3"}


@pytest.fixture(scope="module")
def sweep_study(tmp_path_factory) -> Path:
    study = tmp_path_factory.mktemp("sweep")
    make_corpus(study / "corpus", documents=150)
    write_config(study, SWEEP)
    snakemake(study)
    return study


def _changed(study: Path, tmp_path: Path, change, name: str) -> Path:
    config = yaml.safe_load((study / "config.yaml").read_text())
    change(config)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _trained(study: Path, config: Path) -> set[str]:
    detail = snakemake(study, "--dry-run", config=config).stdout
    return set(re.findall(r"output: results/runs/([^/]+)/model\.pt", detail))


def test_sweep_marks_the_best_run_of_each_group_and_fits_only_those(sweep_study):
    table = pd.read_csv(sweep_study / "results/metrics.csv")
    assert set(table["run"]) == SWEEP_RUNS and (table["status"] == "ok").all()
    assert dict(zip(table["run"], table["sweep_group"])) == {run: run.split("-lr")[0] for run in SWEEP_RUNS}
    best = {}
    for group, rows in table.groupby("sweep_group"):
        assert rows["best_in_sweep"].sum() == 1
        best[group] = rows.loc[rows["val_loss"].idxmin(), "run"]
        assert rows.loc[rows["best_in_sweep"], "run"].item() == best[group]
    assert dict(zip(table["run"], table["lr"]))["a-4K-s0-lr2.5e-3"] == pytest.approx(2.5e-3)
    fit = json.loads((sweep_study / "results/fit/fit.json").read_text())
    assert fit["settings"]["select"] == "best" and fit["settings"]["sweep_keys"] == ["lr"]
    assert sorted(fit["selection"]["runs_used"]) == sorted(best.values())
    html_text = (sweep_study / "results/report/index.html").read_text()
    assert 'data-figure="lr_sensitivity"' in html_text and "Nothing was swept over the learning rate" not in html_text
    assert "Hyperparameter laws" in html_text
    assert planned_jobs(sweep_study) == {}


def test_adding_a_sweep_value_trains_only_the_new_runs(sweep_study, tmp_path):
    def change(config):
        config["grid"]["sweep"]["lr"].append(1e-2)  # b only: a has its own lr sweep
        config["overrides"]["a"]["sweep"]["lr"]["times"].append(4)

    path = _changed(sweep_study, tmp_path, change, "more.yaml")
    jobs = planned_jobs(sweep_study, config=path)
    assert jobs == {"train": 2, "evaluate": 2, "aggregate": 1, "fit": 1, "suggest": 1, "report": 1}
    assert _trained(sweep_study, path) == {"b-4K-s0-lr1e-2", "a-4K-s0-lr2e-2"}


def test_removing_a_sweep_value_drops_its_runs_and_retrains_nothing(sweep_study, tmp_path):
    path = _changed(sweep_study, tmp_path, lambda c: c["grid"]["sweep"].update(lr=[3.0e-3]), "fewer.yaml")
    assert planned_jobs(sweep_study, config=path) == {"aggregate": 1, "fit": 1, "suggest": 1, "report": 1}
    copy_dir = tmp_path / "study"
    shutil.copytree(sweep_study, copy_dir, symlinks=True)
    snakemake(copy_dir, config=path)
    table = pd.read_csv(copy_dir / "results/metrics.csv")
    assert set(table["run"]) == SWEEP_RUNS - {"b-4K-s0-lr1e-3"}
    fit = json.loads((copy_dir / "results/fit/fit.json").read_text())
    assert "b-4K-s0-lr1e-3" not in fit["selection"]["runs_used"]
    assert table.set_index("run").loc["b-4K-s0-lr3e-3", "best_in_sweep"]  # alone in its group now
    assert planned_jobs(copy_dir, config=path) == {}


def test_fit_select_all_refits_without_training(sweep_study, tmp_path):
    path = _changed(sweep_study, tmp_path, lambda c: c["fit"].update(select="all"), "all.yaml")
    assert planned_jobs(sweep_study, config=path) == {"fit": 1, "suggest": 1, "report": 1}


def _shell_specs(study: Path, config: Path | None = None) -> dict[str, list[str]]:
    """The --spec argument of every job a forced dry run prints, by rule."""
    proc = snakemake(study, "--dry-run", "--forceall", "--printshellcmds", config=config)
    specs: dict[str, list[str]] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if "Shell command:" not in line:
            continue
        words = shlex.split(line.split("Shell command:", 1)[1])
        if "--spec" in words and words[0] == "scalelab":
            specs.setdefault(words[1], []).append(words[words.index("--spec") + 1])
    return specs


def test_a_study_without_sweeps_keeps_its_train_and_fit_params(tmp_path):
    """The tiny study's train and fit params as the code before sweeps wrote them (commit 9a466f6):
    an existing study keeps every run and its fit settings."""
    make_corpus(tmp_path / "corpus", documents=150)
    write_config(tmp_path, TINY)
    specs = _shell_specs(tmp_path)
    train = hashlib.sha256("\n".join(sorted(specs["train"])).encode()).hexdigest()
    assert len(specs["train"]) == 6 and train == "5443b5869277ea7c724148d78da3540dd680af6124f6c3066f2322d293c4185d"
    assert specs["fit"] == [
        '{"bootstrap": 20, "budgets": null, "holdout": "top", "params": "non_embedding", '
        '"predict_flops": null, "seed": 0, "target": "val_loss"}'
    ]


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c["grid"].update(sweep={"devices": [1, 2]}), ["grid.sweep.devices", "cannot be swept"]),
        (lambda c: c["grid"].update(sweep={"optimizer": ["adam"]}), ["grid.sweep.optimizer", "unknown"]),
        (lambda c: c["grid"].update(sweep={"lr": []}), ["grid.sweep.lr", "empty"]),
        (lambda c: c["grid"].update(sweep={"lr": ["1e-3", 0.001]}), ["grid.sweep.lr", "same value"]),
        (lambda c: c["overrides"].update(b={"sweep": {"lr": {"times": [-1]}}}), ["overrides.b.sweep.lr.times[0]"]),
    ],
)
def test_bad_sweep_is_one_line_and_nothing_runs(sweep_study, tmp_path, change, words):
    study = sweep_study
    path = _changed(study, tmp_path, change, "bad.yaml")
    metrics = study / "results/metrics.csv"
    before = (metrics.read_bytes(), metrics.stat().st_mtime_ns)
    line = _error_line(snakemake(study, config=path, check=False))
    for word in words:
        assert word in line, line
    assert (metrics.read_bytes(), metrics.stat().st_mtime_ns) == before

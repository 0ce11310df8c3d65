"""The study seen from outside: as a Snakemake module of another workflow, through Snakemake's
own report, and from a notebook with the README's example.

One tiny study is run for real, once, the way the README's module section says (a workflow in a
temporary folder that uses scalelab's rules); every test reads that study.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, make_corpus

from scalelab.laws.law import FORMS

pytestmark = pytest.mark.e2e
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}

# Three token counts, so that Approach 3 is fitted and bootstrapped.
CONFIG = {
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
    "grid": {"models": ["a", "b", "c"], "tokens": ["4K", "8K", "12K"], "seeds": [0]},
    "train": {"context": 32, "batch_size": 8, "val_tokens": 512, "val_evals": 2},
    "overrides": {"a": {"lr": 5e-3}},
    "eval": {"test_tokens": 512, "prompts": 4, "prompt_tokens": 8, "max_new_tokens": 8, "batch_size": 4},
    "fit": {"bootstrap": 20},
}
RUNS = [f"{m}-{t}-s0" for m in "abc" for t in ("4K", "8K", "12K")]


def readme_block(heading: str, language: str) -> str:
    """The ```language blocks of the README section under `## heading`, joined."""
    readme = (REPO / "README.md").read_text()
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(rf"```{language}\n(.*?)```", section, re.S))


def run(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, *args], cwd=folder, capture_output=True, text=True, env=ENV, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def make_study_folder(folder: Path, snakefile_text: str, snakefile_path: str = "Snakefile") -> Path:
    make_corpus(folder / "corpus", documents=150)
    (folder / "config").mkdir(parents=True)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    (folder / snakefile_path).parent.mkdir(parents=True, exist_ok=True)
    (folder / snakefile_path).write_text(snakefile_text)
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study run by another workflow: the README's module example, verbatim but for the path."""
    wrapper = readme_block("Using scalelab from another workflow", "python")
    assert '"/path/to/scalelab/Snakefile"' in wrapper
    wrapper = wrapper.replace("/path/to/scalelab/Snakefile", str(REPO / "Snakefile"))
    folder = make_study_folder(tmp_path_factory.mktemp("other-workflow"), wrapper)
    proc = run(folder, "--cores", "2")
    return folder, proc.stdout + proc.stderr


def test_module_route_runs_the_study_where_the_readme_says(study):
    folder, output = study
    jobs = job_counts(output)
    assert jobs == {
        "scalelab_tokenize": 1,
        "scalelab_train": 9,
        "scalelab_evaluate": 9,
        "scalelab_aggregate": 1,
        "scalelab_fit": 1,
        "scalelab_suggest": 1,
        "scalelab_report": 1,
        "scalelab_all": 1,
        "total": 24,
    }
    # Every path of the README's results table, in the other workflow's folder.
    readme = (REPO / "README.md").read_text()
    table = readme.split("leaves everything under `results/`", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `([^`]+)` \| (.*) \|$", table, re.M)
    assert len(rows) == 5, table
    for path, what in rows:
        if "{run}" in path:
            names = re.findall(r"`([^`]+)`", what.split("per run:", 1)[1])
            assert {"metrics.json", "curve.csv", "model.pt", "eval.json"} <= set(names)
            for run_id in RUNS:
                for name in names:
                    assert (folder / path.replace("{run}", run_id) / name).is_file(), (run_id, name)
        else:
            assert (folder / path).exists(), path
    for name in ("fit/fit.txt", "fit/bootstrap.csv", "report/report.md", "data/meta.json"):
        assert (folder / "results" / name).is_file(), name
    assert (folder / "logs/train/a-4K-s0.log").is_file()
    metrics = pd.read_csv(folder / "results/metrics.csv")
    assert sorted(metrics["run"]) == sorted(RUNS) and (metrics["status"] == "ok").all()
    assert json.loads((folder / "results/fit/fit.json").read_text())["approach3"] is not None
    # The module route is as stable as a plain run: nothing reruns.
    assert "Nothing to be done" in run(folder, "--cores", "2", "--dry-run").stdout


def test_snakedeploy_layout_plans_the_whole_study(tmp_path):
    """What `snakedeploy deploy-workflow` writes (workflow/Snakefile declaring the module, no
    rename), pointed at this checkout's workflow/Snakefile: a dry run plans every job."""
    deployed = (
        'configfile: "config/config.yaml"\n\n'
        f'module scalelab:\n    snakefile:\n        "{REPO / "workflow" / "Snakefile"}"\n'
        "    config:\n        config\n\n"
        "use rule * from scalelab\n"
    )
    folder = make_study_folder(tmp_path / "deployed", deployed, "workflow/Snakefile")
    jobs = job_counts(run(folder, "--cores", "2", "--dry-run").stdout)
    assert jobs == {
        "tokenize": 1,
        "train": 9,
        "evaluate": 9,
        "aggregate": 1,
        "fit": 1,
        "suggest": 1,
        "report": 1,
        "all": 1,
        "total": 24,
    }


def test_readme_notebook_example_runs_on_the_study(study, tmp_path, monkeypatch):
    folder, _ = study
    code = readme_block("Reading a study in a notebook", "python")
    assert 'load_study("studies/foo")' in code
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "foo").symlink_to(folder)
    monkeypatch.chdir(tmp_path)
    # as with the virtualenv active, which the README assumes: its first block runs `scalelab fit`
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    study_ = namespace["study"]
    assert sorted(study_.metrics["run"]) == sorted(RUNS)
    assert set(study_.curves["run"]) == set(RUNS)
    assert namespace["fit"].law["form"] in namespace["FORMS"]  # the load_fit example ran too
    prediction = study_.predict(N=1e6, D=2e7)
    assert np.isfinite(prediction[["mean", "obs_ci_lower", "obs_ci_upper"]].to_numpy()).all()
    assert (prediction["obs_ci_lower"] <= prediction["mean_ci_lower"]).all()
    assert (prediction["mean_ci_upper"] <= prediction["obs_ci_upper"]).all()


def test_study_api_agrees_with_what_the_workflow_wrote(study):
    import scalelab

    folder, _ = study
    study_ = scalelab.load_study(folder)
    fit = json.loads((folder / "results/fit/fit.json").read_text())
    assert study_.fit == fit and len(study_.bootstrap) == 20
    # allocate() gives fit.json's allocation section, intervals included
    table = study_.allocate([row["flops"] for row in fit["allocation"]])
    for row, want in zip(table.to_dict("records"), fit["allocation"]):
        for mine, key in (("params", "n_opt"), ("tokens", "d_opt"), ("tokens_per_param",) * 2, ("loss", "loss_pred")):
            assert row[mine] == pytest.approx(want[key], rel=1e-9), key
        for mine, name in (("", "loss"), ("params_", "n_opt"), ("tokens_", "d_opt")):
            assert [row[f"{mine}low"], row[f"{mine}high"]] == pytest.approx(want[f"{name}_ci95"], rel=1e-9)
    # predict() at the held-out runs gives the law's prediction that fit.json checks them with
    metrics = study_.metrics.set_index("run")
    chosen = fit["chosen_form"]  # predictions use the law form the fit chose
    runs = metrics.loc[list(fit["holdout"]["held_out"])] if fit.get("holdout") else metrics
    predicted = study_.predict(runs["params"].to_numpy(), runs["tokens"].to_numpy())["mean"]
    expected = FORMS[chosen].loss(fit["forms"][chosen]["params"], runs["params"].to_numpy(), runs["tokens"].to_numpy())
    np.testing.assert_allclose(predicted, expected, rtol=1e-12)
    # the curves are every curve.csv, row for row
    for run_id in RUNS:
        curve = pd.read_csv(folder / "results/runs" / run_id / "curve.csv")
        mine = study_.curves[study_.curves["run"] == run_id].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, curve)


def _report_contents(archive: Path) -> tuple[set[str], dict, dict]:
    with zipfile.ZipFile(archive) as zf:  # Snakemake puts everything in a folder named after the archive
        names = {name.removeprefix(f"{archive.stem}/") for name in zf.namelist()}
        page = zf.read(f"{archive.stem}/report.html").decode()

    def script_json(name):
        text = re.search(rf'<script id="{name}">\s*var \w+ = (.*?);\s*</script>', page, re.S).group(1)
        return json.loads(text)

    return names, script_json("results"), script_json("categories")


def _plain_text(text: str) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", "", text)).replace("**", "").replace("``", "")
    return " ".join(text.split())


@pytest.mark.parametrize("route", ["module", "plain"])
def test_snakemake_report_holds_every_figure_and_table_with_caption_and_category(study, route):
    folder, _ = study
    archive = folder / f"report-{route}.zip"
    args = ["--snakefile", str(REPO / "Snakefile"), "--configfile", "config/config.yaml"] if route == "plain" else []
    run(folder, *args, "--cores", "1", "--report", archive.name)
    names, results, categories = _report_contents(archive)
    # What report.smk marks for the report (through the report's registry): path, caption file, category.
    from scalelab.report.registry import rule_outputs

    from scalelab.report.registry import FIGURES, figure_captions

    marked = []

    def mark(path, caption, category, patterns=None, labels=None):
        if patterns:  # the figures folder: each figure drawn, with its own caption and category
            for png in sorted((folder / path).glob("*.png")):
                spec = FIGURES[png.stem]
                marked.append((f"{path}/{png.name}", figure_captions()[spec.name], spec.category))
        else:
            marked.append((path, Path(caption).read_text(), category))
        return path

    rule_outputs("results/report", mark)
    assert len(marked) >= 10
    # ...which is every figure (drawn: no placeholders) and table the report stage writes, and the page.
    written = {
        str(p.relative_to(folder)) for p in (folder / "results/report").rglob("*") if p.suffix in (".png", ".html")
    }
    assert {path for path, _, _ in marked} == written
    assert set(results) == written
    for path, caption_text, category in marked:
        entry = results[path]
        assert entry["data_uri"] in names, path
        with zipfile.ZipFile(archive) as zf:
            assert zf.read(f"{archive.stem}/{entry['data_uri']}") == (folder / path).read_bytes(), path
        caption = _plain_text(caption_text)
        assert caption[:80] in _plain_text(entry["caption"]), (path, entry["caption"][:200])
        assert any(path in files for files in categories[category].values()), (path, category)

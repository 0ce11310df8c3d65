"""The install story: pyproject and environment.yml agree; the CLI and the Makefile hold together."""

import re
import subprocess
import sys
import tomllib

import yaml

from conftest import REPO


def _requirement(text: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", text)
    name = re.sub(r"[-_.]+", "-", match.group(1).lower())
    spec = (
        match.group(2).replace(" ", "").replace("=", "==", 1) if re.match(r"^=[^=]", match.group(2)) else match.group(2)
    )
    return name, ",".join(sorted(spec.replace(" ", "").split(","))) if spec else ""


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(_requirement(r) for r in project["dependencies"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    listed = {}
    for item in env["dependencies"]:
        if isinstance(item, dict):
            listed.update(_requirement(r) for r in item["pip"])
        elif not item.startswith(("python", "pip")) or item.startswith("python-"):
            listed.update([_requirement(item)])
    assert listed == wanted


def test_torch_is_pinned_and_installed_first():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^TORCH\s*\?=\s*torch==2\.13\.0$", makefile, re.M)
    install = makefile[makefile.index("$(VENV)/.installed:") :]
    assert install.index("$(TORCH)") < install.index("-e .")
    assert "torch==2.13.0" in (REPO / "pyproject.toml").read_text()


def test_ci_runs_make_test_and_readme_shows_the_two_commands():
    assert "make test" in (REPO / ".ci/run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_cli_module_and_console_script_are_the_same():
    out = subprocess.run([sys.executable, "-m", "scalelab", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for stage in ("tokenize", "train", "evaluate", "aggregate", "fit", "report"):
        assert stage in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "scalelab", "check", str(REPO / "missing.yaml")], capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "missing.yaml" in bad.stderr


def test_default_config_is_valid_and_spans_the_grid():
    """The default study's design rules (issue 10) that hold before anything trains: at least 4
    sizes over 16x in N, at least 5 token counts over 16x in the D actually trained (whole
    steps), shared WSD trunks, and at most 0.6 of the FLOPs of independent runs."""
    from scalelab.config import load as study_config
    from scalelab.plan import grid
    from scalelab.plan import wsd
    from scalelab.plan.shapes import non_embedding_params

    config = study_config.load(REPO / "config/config.yaml")
    runs = grid.expand_grid(config)
    sizes = {non_embedding_params(r.spec["n_layer"], r.spec["d_model"]) for r in runs}
    assert len(sizes) >= 4 and max(sizes) / min(sizes) >= 16
    trained = {wsd.total_steps(r.spec) * r.spec["batch_size"] * r.spec["context"] for r in runs}
    assert len(trained) >= 5 and max(trained) / min(trained) >= 16
    assert all(wsd.is_wsd(r.spec) for r in runs)
    spent, independent = wsd.config_flops(config, runs)
    assert spent <= 0.6 * independent
    for example in sorted((REPO / "config/examples").glob("*.yaml")):
        grid.expand_grid(study_config.load(example))


def test_the_built_wheel_works_outside_the_source_tree(tmp_path):
    """`pip install .` (not editable): the schema, CSS and captions ship as package data, so
    `scalelab check` and `scalelab fit` work with no source checkout in sight."""
    import os

    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("scalelab-*.whl"))
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    for name in (
        "schemas/config.schema.yaml",
        "schemas/fit.schema.yaml",
        "report/report.css",
        "report/captions/index.rst",
    ):
        assert (site / "scalelab" / name).is_file(), name
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "study.yaml").write_text((REPO / "config/config.yaml").read_text())
    where = subprocess.run(
        [sys.executable, "-c", "import scalelab; print(scalelab.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    check = subprocess.run(
        [sys.executable, "-m", "scalelab", "check", "study.yaml"], cwd=work, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0 and "valid" in check.stdout, check.stderr
    import numpy as np

    rows = ["run,params,tokens,flops,val_loss"]
    for i, n in enumerate((1e5, 3e5, 1e6, 3e6)):
        for d in (1e6, 3e6, 1e7):
            loss = 1.7 + 400 / n**0.34 + 410 / d**0.28
            rows.append(f"r{i}-{d:g},{n:g},{d:g},{6 * n * d:g},{loss * (1 + 0.003 * np.sin(n + d)):.6f}")
    (work / "ladder.csv").write_text("\n".join(rows) + "\n")
    fit = subprocess.run(
        [sys.executable, "-m", "scalelab", "fit", "ladder.csv", "--out", "out", "--bootstrap", "10"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert (work / "out/fit.json").is_file()

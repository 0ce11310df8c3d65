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
    spec = match.group(2).replace(" ", "").replace("=", "==", 1) if re.match(r"^=[^=]", match.group(2)) else match.group(2)
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
    install = makefile[makefile.index("$(VENV)/.installed:"):]
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
    bad = subprocess.run([sys.executable, "-m", "scalelab", "check", str(REPO / "missing.yaml")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "missing.yaml" in bad.stderr


def test_default_config_is_valid_and_spans_the_grid():
    from scalelab import config as study
    from scalelab.shapes import non_embedding_params

    config = study.load(REPO / "config/config.yaml")
    runs = study.expand_grid(config)
    sizes = {non_embedding_params(r.spec["n_layer"], r.spec["d_model"]) for r in runs}
    assert len(sizes) >= 4 and max(sizes) / min(sizes) >= 10
    assert len({r.tokens for r in runs}) >= 3
    for example in sorted((REPO / "config/examples").glob("*.yaml")):
        study.expand_grid(study.load(example))

"""What the Snakemake workflow catalog and snakedeploy read: the layout, the usage settings and
config/README.md, which must describe every section and key of the config schema."""

import re

import yaml

from conftest import REPO


def test_catalog_settings_and_layout():
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert set(usage["mandatory-flags"]) == {"desc", "flags"} and usage["mandatory-flags"]["desc"].strip()
    assert set(usage["software-stack-deployment"]) == {"conda", "apptainer", "apptainer+conda"}
    assert all(isinstance(v, bool) for v in usage["software-stack-deployment"].values())
    assert usage["report"] is True  # the catalog reads usage.report
    # "Standardized usage" needs workflow/Snakefile and config/README.md; rules/ must hold .smk files.
    assert 'include: "rules/common.smk"' in (REPO / "workflow/Snakefile").read_text()
    assert '"workflow/Snakefile"' in (REPO / "Snakefile").read_text()
    assert list((REPO / "workflow/rules").glob("*.smk"))
    readme = (REPO / "README.md").read_text().lower()
    assert "snakemake" in readme and "workflow" in readme


def test_config_readme_describes_every_schema_section_and_key():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    text = (REPO / "config/README.md").read_text()
    sections = dict(re.findall(r"^## `(\w+)`[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    assert set(schema["properties"]) <= set(sections), set(schema["properties"]) - set(sections)
    for name, spec in schema["properties"].items():
        for key in spec.get("properties", {}):
            assert f"`{key}`" in sections[name], f"config/README.md: {name}.{key} is not described"


def test_config_readme_states_exactly_which_train_keys_are_identity():
    """The identity table lives in code (scalelab.config.sweeps.NOT_IDENTITY); config/README states it."""
    from scalelab.config.load import validate
    from scalelab.plan.grid import spec_settings
    from scalelab.config.sweeps import NOT_IDENTITY

    text = " ".join((REPO / "config/README.md").read_text().split())
    others = ", ".join(f"`{key}`" for key in NOT_IDENTITY)
    assert f"Every `train` key except {others} is part of each run's identity" in text
    train = validate({})["train"]
    spec = spec_settings({**train, "schedule": "wsd"})
    assert set(train) - set(spec) == set(NOT_IDENTITY)  # what the sentence says is what specs hold
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]* \| (.*) \|$", (REPO / "config/README.md").read_text(), re.M))
    for key in train:
        says_not = "Not part of a run's identity" in rows[key]
        assert says_not == (key in NOT_IDENTITY), key

"""`snakemake --lint` stays clean: the one lint left (no per-rule conda environment or container)
is documented in every rule and in the README; any other lint fails this test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

KEPT = "Specify a conda environment or container for each rule."


def test_snakemake_lint_reports_only_the_documented_lint(tmp_path):
    snakemake = str(Path(sys.executable).parent / "snakemake")
    proc = subprocess.run(
        [snakemake, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--lint"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output[-3000:]
    lints = re.findall(r"^Lints for (.+?):\n((?:    \*.*\n|      .*\n)+)", output, re.M)
    titles = [
        (where, title.strip()) for where, block in lints for title in re.findall(r"^    \* (.+?):?$", block, re.M)
    ]
    unexpected = [(where, title) for where, title in titles if title.rstrip(":") != KEPT.rstrip(":")]
    assert not unexpected, unexpected
    # The README describes the output as it is: the lint once per rule, and exit status 1.
    readme = " ".join((REPO / "README.md").read_text().split())
    assert proc.returncode == 1 and "exits with status 1" in readme
    assert f'("{KEPT.rstrip(".")}", {len(titles)} times)' in readme, len(titles)
    rules = set(
        re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk")), re.M)
    )
    flagged = {re.match(r"rule (\w+)", where).group(1) for where, _ in titles if where.startswith("rule ")}
    assert flagged <= rules
    for path in (REPO / "workflow/rules").glob("*.smk"):
        text = path.read_text()
        for rule in re.findall(r"^rule (\w+):", text, re.M):
            assert re.search(rf'^# lint "conda environment or container" stays.*\nrule {rule}:', text, re.M), rule

"""Evaluate, fit, suggest and report checked against what the config and code ask for now, from
their own files (as scalelab.plan.integrity does for runs and trunk segments): Snakemake's params
and code triggers need .snakemake/, which a copied study lacks and `--touch` or an mtime edit masks.

Each output compares what it records: the spec its job was given and the stage's code fingerprint
(scalelab.store.identity, recorded since), or, for eval.json and fit.json written before, the
settings they record (a missing record is never a reason: an upgraded study reruns nothing for it).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..store.identity import REPORT_IDENTITY, recorded

FIT = "results/fit/fit.json"
SUGGEST = "results/suggest/suggest.json"
REPORT = f"results/report/{REPORT_IDENTITY}"  # not a declared output: written once the report is whole
REPORT_FORCED = "results/report/summary.txt"  # the report's output forced when its identity differs


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _settings_differ(settings, spec: dict) -> list[str]:
    """The spec's keys that settings (an output's recorded settings) hold with another value."""
    if not isinstance(settings, dict):
        return []
    return sorted(
        k for k, v in spec.items() if k in settings and settings[k] != v and (v is not None or k == "test_tokens")
    )


def why_stale(content, spec: str, code: str, what: str) -> str | None:
    """Why an output (its parsed JSON) disagrees with `spec` (canonical JSON) and `code`, or None."""
    if not isinstance(content, dict):
        return None  # missing or damaged: built anyway, or stopped elsewhere
    identity = recorded(content)
    if identity.get("code") not in (None, code):
        return f"written by other {what} code than this one"
    if "spec" in identity:
        if identity["spec"] == spec:
            return None
        differs = _settings_differ(_loads(identity["spec"]), json.loads(spec))
        return f"written with other settings ({', '.join(differs) or 'spec'}) than the config asks for"
    differs = _settings_differ(content.get("settings"), json.loads(spec))
    return f"written with other settings ({', '.join(differs)}) than the config asks for" if differs else None


def _loads(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def stale_outputs(root: Path, eval_specs: dict[str, str], specs: dict[str, str], codes: dict[str, str]):
    """(output to force, why) for each eval.json, fit.json, suggest.json and report identity that
    disagrees with the config (`eval_specs`: run id -> its eval spec; `specs` and `codes`: by stage).
    Paths are given as the rules write them ("results/..."), read under `root` (the study folder)."""
    stale = []
    for run_id, spec in eval_specs.items():
        path = f"results/runs/{run_id}/eval.json"
        content = _json(root / path)
        if isinstance(content, dict) and content.get("run") == run_id:
            why = why_stale(content, spec, codes["evaluate"], "evaluate")
            if why:
                stale.append((path, why))
    for stage, path in (("fit", FIT), ("suggest", SUGGEST), ("report", REPORT)):
        content = _json(root / path)
        if stage == "report":  # identity.json is the identity itself
            content = {"identity": content}
        if stage != "fit" and not recorded(content):
            continue  # only fit.json records its settings without an identity
        why = why_stale(content, specs[stage], codes[stage], stage)
        if why:
            stale.append((REPORT_FORCED if stage == "report" else path, why))
    return stale

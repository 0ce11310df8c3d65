"""What decided a stage's output, recorded beside it: the spec the job was given and the stage's code
fingerprint, so that the DAG can compare them with what the config and code ask for now from the
files alone (scalelab.plan.stage_identity), without Snakemake's metadata.

Recorded by the command line (scalelab.cli) once the stage's command has written its outputs, so
that the stages' own code, and with it their fingerprints, stays as it is: an `identity` key added
to eval.json, fit.json and suggest.json, and the report's own identity.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_json
from .fingerprint import code_fingerprint

REPORT_IDENTITY = "identity.json"


def _output(stage: str, args) -> Path | None:
    """The file that carries the stage's identity, or None for a stage (or mode) without one."""
    if stage == "evaluate":
        return Path(args.run) / "eval.json"
    if stage == "fit":
        return Path(args.out) / "fit.json"
    if stage == "suggest" and not getattr(args, "metric", None):
        return Path(args.out) / "suggest.json"
    if stage == "report":
        return Path(args.out) / REPORT_IDENTITY
    return None


def record(stage: str, args) -> None:
    """Add {spec, code} to the output the stage just wrote (the report: identity.json beside it)."""
    path = _output(stage, args)
    spec = getattr(args, "spec", None)
    if path is None or spec is None:
        return
    identity = {"spec": spec, "code": code_fingerprint(stage)}
    if stage == "report":
        write_json(path, identity)
        return
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # nothing written: nothing to record
    if isinstance(content, dict):
        content["identity"] = identity
        write_json(path, content)


def recorded(content) -> dict:
    """The identity an output's JSON records ({} when it was written before identities were)."""
    identity = content.get("identity") if isinstance(content, dict) else None
    return identity if isinstance(identity, dict) else {}

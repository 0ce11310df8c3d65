"""The run store: every finished run kept under the key of what decided it.

Snakemake deletes a job's outputs before it reruns the job, and again when the job fails. So
without a copy elsewhere, changing a model's lr (and changing it back), or a rerun that fails,
would cost a trained model. The train job therefore keeps each finished run in
`results/store/<key>/`, where `key` hashes the run's spec (every value that decides it) and the
code fingerprint of the training code, and looks there before it trains:

- restoring a previous setting is a copy, not a retrain;
- a rerun that fails leaves the previous result in the store, under its own key.

A store entry is used only when its files match the checksums in its `manifest.json` and it was
trained on the same tokens (`data` in the manifest: the corpus and tokenizer fingerprints and
split sizes from `results/data/meta.json`). Anything else is ignored and the run retrains.

The key does not hold the data, so that entries written before the data counted keep their
names; an entry trained on other data is never replaced: the new one goes beside it, under
`<key>~<data>` (`entry_path`). So editing the corpus and reverting the edit restores every run.

Why not Snakemake's `cache:` directive: it needs `--cache` on every invocation and a shared
`SNAKEMAKE_OUTPUT_CACHE` folder, so the protection would depend on how the user calls
Snakemake; this store needs nothing from the user. It holds a second copy of every finished
run (model weights are most of it); `rm -r results/store` reclaims that space, at the cost of
retraining what it would have restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..files import atomic_path, file_sha256, write_json

RUN_FILES = ("model.pt", "curve.csv", "metrics.json")  # metrics.json last: its presence means complete
MANIFEST = "manifest.json"
TRUNK_FILES = ("state.ckpt",)  # a WSD trunk's state after k steps (scalelab.plan.wsd.trunk_key)


def run_key(spec: dict, code: str) -> str:
    """The store key of a run: its spec (canonical JSON) and the training code fingerprint."""
    text = json.dumps({"spec": spec, "code": code}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def spec_sha(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def data_identity(meta: dict) -> str:
    """What the tokens a run trained on are: corpus, tokenizer and split sizes (from meta.json)."""
    parts = {
        "corpus": meta["corpus"]["fingerprint"],
        "tokenizer": meta["tokenizer"]["fingerprint"],
        "splits": {k: v["tokens"] for k, v in meta["splits"].items()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def copy_file(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically. A copy, not a hard link: `cp x model.pt` writes into
    the existing file, and would damage a linked store entry along with the run's own file."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


QUARANTINE = ".quarantine"  # entries whose manifest names another key, spec or run: kept, never used


def quarantine(store: Path, entry: Path, why: str) -> None:
    """Move a disagreeing entry out of the way (not deleted: it may be someone's only copy), so
    the run retrains instead of restoring it again and again."""
    target = Path(store) / QUARANTINE / f"{entry.name}.{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(entry, target)
    print(f"{entry}: {why}; moved to {target}, not used (`scalelab prune` removes it)")
    _log_quarantine(target.parent, entry, target, why)


QUARANTINE_LOG = "log.jsonl"  # in .quarantine/: one JSON line per entry moved, for the workflow's end


def _log_quarantine(folder: Path, entry: Path, target: Path, why: str) -> None:
    """Record the move where the workflow finds it after the job (its log alone is easily missed)."""
    line = json.dumps({"time": time.time(), "entry": str(entry), "moved_to": str(target), "why": why})
    try:
        with open(folder / QUARANTINE_LOG, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError:
        pass  # the job's log still has the line


def _foreign(entry: Path, manifest: dict, key: str, spec: dict) -> str | None:
    """Why an entry is not the one asked for: its manifest's key, spec or run, or its
    metrics.json's run and spec hash, disagree (a folder copied over the key)."""
    if not isinstance(manifest, dict):
        return "its manifest.json is not a JSON object"
    if manifest.get("key") != key or manifest.get("spec") != spec or manifest.get("run") != spec.get("run"):
        return f"its manifest is for another run ({manifest.get('run')!r}, key {manifest.get('key')!r})"
    if (entry / "metrics.json").exists():
        metrics = json.loads((entry / "metrics.json").read_text())
        if not isinstance(metrics, dict):
            return "its metrics.json is not a JSON object"
        if metrics.get("run") != spec.get("run") or metrics.get("spec_sha", spec_sha(spec)) != spec_sha(spec):
            return f"its metrics.json is for another run ({metrics.get('run')!r})"
    return None


def _read_manifest(entry: Path) -> dict | None:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def entry_path(store: Path, key: str, data: str) -> Path:
    """Where the entry of `key` trained on `data` is kept: `<key>`, unless that holds an entry
    trained on other data (never replaced: it may be the only copy), then `<key>~<data>`."""
    primary = Path(store) / key
    manifest = _read_manifest(primary)
    if manifest is None or manifest.get("data") in (None, data):
        return primary
    return Path(store) / f"{key}~{data}"


def lookup(
    store: Path, key: str, data: str, names: tuple[str, ...] = RUN_FILES, spec: dict | None = None
) -> Path | None:
    """The store entry for `key` if it is whole, verified and trained on the same data (`names`:
    its files; a WSD trunk state is TRUNK_FILES, kept under `<store>/trunks/`). With `spec`
    (what the entry was asked for), an entry whose manifest or metrics name another run is
    quarantined and None returned."""
    for entry in (Path(store) / key, Path(store) / f"{key}~{data}"):
        if entry.exists() and (found := _verified(store, entry, key, data, names, spec)) is not None:
            return found
    return None


def _verified(store: Path, entry: Path, key: str, data: str, names: tuple[str, ...], spec: dict | None) -> Path | None:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if spec is not None and (why := _foreign(entry, manifest, key, spec)):
            quarantine(store, entry, why)
            return None
        if not isinstance(manifest, dict) or manifest.get("data") != data:
            return None
        for name in names:
            expected = manifest["files"][name]
            path = entry / name
            if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
                print(f"{path}: damaged store entry (checksum differs); not used")
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry


def restore(entry: Path, run_dir: Path) -> dict:
    """Place a store entry's files in the run folder; returns its metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        copy_file(entry / name, run_dir / name)
    return json.loads((run_dir / "metrics.json").read_text())


def save(
    store: Path, key: str, run_dir: Path, data: str, spec: dict, code: str, names: tuple[str, ...] = RUN_FILES
) -> Path:
    """Keep a finished run's files under `key` (a complete entry appears at once, or not at all)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    entry = entry_path(store, key, data)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=store))
    try:
        files = {}
        for name in names:
            copy_file(run_dir / name, staging / name)
            files[name] = {"bytes": (staging / name).stat().st_size, "sha256": file_sha256(staging / name)}
        write_json(
            staging / MANIFEST,
            {"run": spec["run"], "key": key, "code": code, "data": data, "spec": spec, "files": files},
        )
        if entry.is_symlink():
            entry.unlink()  # a link is replaced, never followed
        elif entry.exists():
            shutil.rmtree(entry)  # an unusable entry of the same data (lookup refused it): replace it
        os.replace(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry

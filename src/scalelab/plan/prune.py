"""`scalelab prune STUDY`: bound the stores.

The run store (results/store/<key>/) keeps every run ever finished, the trunk store
(results/store/trunks/<key>/) every trunk state, and results/trunks/ the trunk checkpoints of
every family ever planned: nothing else removes them. Prune removes the entries that no run of
the current config needs (the config and code decide which: the same keys the train and trunk
jobs look up), optionally keeping the K most recent other settings of each grid point, plus
quarantined entries and the leftovers of killed saves. It is a dry run unless `--delete` is
given, and it prints what it frees.

Removing an entry only costs a retrain if its setting is asked for again: a restore after a
prune retrains exactly what was pruned.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..store.disk import human_bytes, tree_bytes, usage
from ..errors import ScalelabError


@dataclass
class Removable:
    path: Path
    why: str
    bytes: int


def needed(config: dict) -> tuple[set[str], set[str], dict[str, set[int]]]:
    """(run store keys, trunk store keys, {trunk family: branch steps}) the current config uses."""
    from ..store import runs as store
    from . import wsd
    from ..store.fingerprint import code_fingerprint
    from .grid import expand_grid

    runs = expand_grid(config)
    train_code, wsd_code = code_fingerprint("train"), code_fingerprint("train_wsd")
    run_keys = {store.run_key(r.spec, wsd_code if wsd.is_wsd(r.spec) else train_code) for r in runs}
    families = wsd.plan_families(runs, config)
    trunk_keys = {wsd.trunk_key(f.spec, step, wsd_code) for f in families.values() for step in f.points}
    return run_keys, trunk_keys, {fid: set(f.points) for fid, f in families.items()}


def _manifest(entry: Path) -> dict:
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        return manifest if isinstance(manifest, dict) else {}
    except (OSError, ValueError):
        return {}


def _grid_point(manifest: dict) -> str:
    """What `--keep` counts settings per: a run's id; a trunk state's model, seed and step."""
    spec = manifest.get("spec") or {}
    if "step" in spec:
        return f"trunk {spec.get('model')} s{spec.get('seed')} step {spec.get('step')}"
    return str(manifest.get("run"))


def _store_entries(folder: Path, keep_keys: set[str], keep_last: int, skip: set[str]) -> list[Removable]:
    """Entries of one store folder that no current run needs, less the `keep_last` most recent
    other settings of each grid point; also quarantined entries and staging leftovers."""
    if not folder.is_dir():
        return []
    removable, by_point = [], {}
    for entry in sorted(folder.iterdir()):
        if entry.name in skip or not entry.is_dir():
            continue
        if entry.name == ".quarantine":
            removable.append(Removable(entry, "quarantined entries (another run's files under a key)", tree_bytes(entry)))
        elif entry.name.startswith("."):
            removable.append(Removable(entry, "left by a save that was killed", tree_bytes(entry)))
        elif entry.name not in keep_keys:
            manifest = _manifest(entry)
            by_point.setdefault(_grid_point(manifest), []).append((entry.stat().st_mtime, entry, manifest))
    for point, entries in by_point.items():
        entries.sort(key=lambda item: item[0], reverse=True)  # newest first
        for _, entry, manifest in entries[keep_last:]:
            removable.append(Removable(entry, f"{point}: a setting no current run uses", tree_bytes(entry)))
    return removable


def _trunk_folders(trunks: Path, families: dict[str, set[int]]) -> list[Removable]:
    """Trunk checkpoints of families, or branch points, the current config no longer has."""
    if not trunks.is_dir():
        return []
    removable = []
    for folder in sorted(trunks.iterdir()):
        if not folder.is_dir():
            continue
        steps = families.get(folder.name)
        if steps is None:
            removable.append(Removable(folder, "a trunk family no current run branches from", tree_bytes(folder)))
            continue
        for path in sorted(folder.iterdir()):
            name = path.name
            if path.is_file() and name.startswith("step") and path.suffix in (".ckpt", ".json"):
                step = name[4:].split(".", 1)[0]
                if step.isdigit() and int(step) not in steps:
                    removable.append(Removable(path, "a branch point no current run uses", path.stat().st_size))
    return removable


def removable_entries(results: Path, config: dict, keep_last: int = 0) -> list[Removable]:
    """What prune would remove from `results` (a study's results folder)."""
    run_keys, trunk_keys, families = needed(config)
    store = Path(results) / "store"
    return (_store_entries(store, run_keys, keep_last, skip={"trunks"})
            + _store_entries(store / "trunks", trunk_keys, keep_last, skip=set())
            + _trunk_folders(Path(results) / "trunks", families))


def _check_idle(study: Path) -> None:
    """Never prune under a running workflow: it may be saving or restoring an entry right now."""
    locks = study / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        raise ScalelabError(f"{locks}: a workflow is running in this study (or was killed: `snakemake --unlock`); "
                            f"prune when it has finished")


def _config_path(study: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    for candidate in (study / "config.yaml", study / "config" / "config.yaml"):
        if candidate.is_file():
            return candidate
    raise ScalelabError(f"{study}: no config.yaml or config/config.yaml; name the study's config with --configfile")


def add_arguments(parser) -> None:
    parser.add_argument("study", type=Path, help="the study folder (holding results/)")
    parser.add_argument("--configfile", type=Path, default=None,
                        help="the study's config (default: STUDY/config.yaml, else STUDY/config/config.yaml)")
    parser.add_argument("--keep", type=int, default=0, metavar="K",
                        help="also keep the K most recent other settings of each grid point (default 0)")
    parser.add_argument("--delete", action="store_true", help="remove the entries (default: only list them)")


def run(args) -> None:
    from ..config.load import load

    if args.keep < 0:
        raise ScalelabError(f"--keep: {args.keep} is negative")
    results = args.study / "results"
    if not results.is_dir():
        raise ScalelabError(f"{results}: no such folder (is {args.study} a study?)")
    config = load(_config_path(args.study, args.configfile))
    if args.delete:
        _check_idle(args.study)
    entries = removable_entries(results, config, args.keep)
    before = usage(results)
    for entry in entries:
        print(f"{'removing' if args.delete else 'would remove'} {entry.path} ({human_bytes(entry.bytes)}): {entry.why}")
        if args.delete:
            if entry.path.is_dir():
                shutil.rmtree(entry.path)
            else:
                entry.path.unlink(missing_ok=True)
    freed = sum(e.bytes for e in entries)
    parts = ", ".join(f"{part} {human_bytes(n)}" for part, n in before.items())
    verb = "freed" if args.delete else "would free (rerun with --delete to remove them)"
    print(f"{len(entries)} entries, {human_bytes(freed)} {verb}; before: {parts}")

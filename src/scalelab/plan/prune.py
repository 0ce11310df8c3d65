"""`scalelab prune STUDY`: bound the stores.

The run store (results/store/<key>/) keeps every run ever finished, the trunk store
(results/store/trunks/<key>/) every trunk state, and results/trunks/ the trunk checkpoints of
every family ever planned: nothing else removes them. Prune removes the entries that no run of
the current config needs (the config and code decide which: the same keys the train and trunk
jobs look up), optionally keeping the K most recent other settings of each grid point, plus
quarantined entries and the leftovers of killed saves. It is a dry run unless `--delete` is
given, and it prints what it frees.

Removing an entry only costs a retrain if its setting is asked for again: a restore after a
prune retrains exactly what was pruned. An entry trained on other data than results/data holds
now (a corpus edited since) is a setting no current run uses, like any other.

Prune never follows a symbolic link: a linked entry or trunk folder loses only its link. A store
that is itself a link (shared by several studies) holds entries the other studies need, which
this study's config cannot know: `--delete` refuses it unless `--shared-store` says so.
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


def current_data(results: Path) -> str | None:
    """The data identity of the tokens results/data holds now (None without a readable meta.json)."""
    from ..data.corpus import read_meta
    from ..store import runs as store

    meta_path = Path(results) / "data" / "meta.json"
    meta = read_meta(meta_path) if meta_path.exists() else None
    try:
        return store.data_identity(meta) if meta else None
    except (KeyError, TypeError, AttributeError):
        return None


def _link(path: Path) -> Removable:
    return Removable(path, f"a link to {path.readlink()} (only the link is removed; it is not followed)", 0)


def _grid_point(manifest: dict) -> str:
    """What `--keep` counts settings per: a run's id; a trunk state's model, seed and step."""
    spec = manifest.get("spec") or {}
    if "step" in spec:
        return f"trunk {spec.get('model')} s{spec.get('seed')} step {spec.get('step')}"
    return str(manifest.get("run"))


def _store_entries(
    folder: Path, keep_keys: set[str], keep_last: int, skip: set[str], data: str | None = None
) -> list[Removable]:
    """Entries of one store folder that no current run needs (`data`: the current data identity,
    when known: an entry of a needed key trained on other data is not needed), less the
    `keep_last` most recent other settings of each grid point; also quarantined entries and
    staging leftovers."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    removable, by_point = [], {}
    for entry in sorted(folder.iterdir()):
        if entry.name in skip:
            continue
        if entry.is_symlink():
            if entry.name.split("~", 1)[0] not in keep_keys:
                removable.append(_link(entry))
            continue
        if not entry.is_dir():
            continue
        if entry.name == ".quarantine":
            removable.append(
                Removable(entry, "quarantined entries (another run's files under a key)", tree_bytes(entry))
            )
        elif entry.name.startswith("."):
            removable.append(Removable(entry, "left by a save that was killed", tree_bytes(entry)))
        elif entry.name.split("~", 1)[0] not in keep_keys or (
            data is not None and _manifest(entry).get("data", data) != data
        ):
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
        if folder.is_symlink():
            if folder.name not in families:
                removable.append(_link(folder))
            continue
        if not folder.is_dir():
            continue
        steps = families.get(folder.name)
        if steps is None:
            removable.append(Removable(folder, "a trunk family no current run branches from", tree_bytes(folder)))
            continue
        for path in sorted(folder.iterdir()):
            name = path.name
            if (
                path.is_file()
                and not path.is_symlink()
                and name.startswith("step")
                and path.suffix in (".ckpt", ".json")
            ):
                step = name[4:].split(".", 1)[0]
                if step.isdigit() and int(step) not in steps:
                    removable.append(Removable(path, "a branch point no current run uses", path.stat().st_size))
    return removable


def removable_entries(results: Path, config: dict, keep_last: int = 0) -> list[Removable]:
    """What prune would remove from `results` (a study's results folder)."""
    run_keys, trunk_keys, families = needed(config)
    store, data = Path(results) / "store", current_data(results)
    return (
        _store_entries(store, run_keys, keep_last, skip={"trunks"}, data=data)
        + _store_entries(store / "trunks", trunk_keys, keep_last, skip=set(), data=data)
        + _trunk_folders(Path(results) / "trunks", families)
    )


def _check_idle(study: Path) -> None:
    """Never prune under a running workflow: it may be saving or restoring an entry right now."""
    locks = study / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        raise ScalelabError(
            f"{locks}: a workflow is running in this study (or was killed: `snakemake --unlock`); "
            f"prune when it has finished"
        )


def shared_stores(results: Path) -> list[Path]:
    """The stores under `results` that are links (to a store other studies may share)."""
    return [path for path in (results / "store", results / "store" / "trunks", results / "trunks") if path.is_symlink()]


def _config_path(study: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    for candidate in (study / "config.yaml", study / "config" / "config.yaml"):
        if candidate.is_file():
            return candidate
    raise ScalelabError(f"{study}: no config.yaml or config/config.yaml; name the study's config with --configfile")


def add_arguments(parser) -> None:
    parser.add_argument("study", type=Path, help="the study folder (holding results/)")
    parser.add_argument(
        "--configfile",
        type=Path,
        default=None,
        help="the study's config (default: STUDY/config.yaml, else STUDY/config/config.yaml)",
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=0,
        metavar="K",
        help="also keep the K most recent other settings of each grid point (default 0)",
    )
    parser.add_argument("--delete", action="store_true", help="remove the entries (default: only list them)")
    parser.add_argument(
        "--shared-store",
        action="store_true",
        help="with --delete: prune a store that is a link, though other studies may use its entries",
    )


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
        shared = shared_stores(results)
        if shared and not args.shared_store:
            raise ScalelabError(
                f"{shared[0]} is a link to {shared[0].readlink()}: a store other studies may share, "
                f"whose entries this study's config cannot tell apart; nothing was removed "
                f"(--shared-store removes what this study does not need)"
            )
    entries = removable_entries(results, config, args.keep)
    before = usage(results)
    for entry in entries:
        print(f"{'removing' if args.delete else 'would remove'} {entry.path} ({human_bytes(entry.bytes)}): {entry.why}")
        if args.delete:
            if entry.path.is_dir() and not entry.path.is_symlink():
                shutil.rmtree(entry.path)
            else:
                entry.path.unlink(missing_ok=True)
    freed = sum(e.bytes for e in entries)
    parts = ", ".join(f"{part} {human_bytes(n)}" for part, n in before.items())
    verb = "freed" if args.delete else "would free (rerun with --delete to remove them)"
    print(f"{len(entries)} entries, {human_bytes(freed)} {verb}; before: {parts}")

"""Where a run starts: its inputs checked, its own last checkpoint (resume after a kill), or
its WSD trunk's state at its branch point.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..plan.cluster import is_launcher
from ..data.corpus import check_splits, read_meta
from ..errors import ScalelabError
from .plan import RunPlan
from .trainer import CKPT_NAME


def check_inputs(spec: dict, data_dir: Path, allow_repeat: bool) -> dict:
    """meta.json, checked: one line naming what is wrong, before anything is written."""
    meta = read_meta(data_dir / "meta.json")
    if meta is None:
        raise ScalelabError(
            f"{data_dir / 'meta.json'}: missing, damaged or out of step with the token files; "
            f"rebuild with `snakemake --forcerun tokenize`"
        )
    window = spec["context"] + 1
    required = {"train": window if allow_repeat else max(window, spec["tokens"]), "val": window}
    check_splits(required, {k: v["tokens"] for k, v in meta["splits"].items()}, spec["run"])
    if spec["batch_size"] % spec["devices"]:
        raise ScalelabError(
            f"{spec['run']}: batch_size {spec['batch_size']} is not divisible by devices {spec['devices']}"
        )
    if spec["accelerator"] == "gpu" and not torch.cuda.is_available():
        raise ScalelabError(
            f"{spec['run']}: train.accelerator is 'gpu' but this node has no CUDA device "
            f"(use accelerator: auto or cpu, or run on a GPU node)"
        )
    return meta


def resume_checkpoint(ckpt_dir: Path, spec: dict) -> tuple[Path, int] | None:
    """The checkpoint to resume from and its step, if it belongs to exactly this spec and loads.

    Checkpoints load with `weights_only=True`: one whose pickle would build anything but tensors
    and plain containers is refused (never executed), and the run starts over.

    Only the launching process prepares the folder: DDP workers re-run this command and must
    not delete what rank 0 is writing.
    """
    spec_file, ckpt = ckpt_dir / "spec.json", ckpt_dir / CKPT_NAME
    launcher = is_launcher()  # rank 0, whether Lightning or srun started the ranks
    try:
        same = json.loads(spec_file.read_text()) == spec
    except (OSError, ValueError):
        same = False
    if same and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
            return ckpt, int(state["global_step"])
        except Exception as exc:  # truncated by a kill, or not a plain checkpoint: never trusted
            reason = (str(exc).strip().splitlines() or [""])[0][:120]
            print(f"{ckpt}: not a usable checkpoint ({type(exc).__name__}: {reason}); starting over")
    if launcher:
        if not same:
            shutil.rmtree(ckpt_dir, ignore_errors=True)  # other settings: never resume from it
        ckpt.unlink(missing_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(spec, indent=1, sort_keys=True))
    return None


def trunk_for(plan: RunPlan, trunks_dir: Path | None) -> tuple[Path, int] | None:
    """A WSD run's trunk checkpoint at its branch point and the previous branch point (the start
    of the trunk segment charged to it), from `<trunks_dir>/<family>/step<k>.ckpt|.json`."""
    if trunks_dir is None or plan.family is None:
        return None
    branch = plan.branch_step
    folder = Path(trunks_dir) / plan.family
    ckpt, info_path = folder / f"step{branch}.ckpt", folder / f"step{branch}.json"
    try:
        info = json.loads(info_path.read_text())
        previous = int(info["from"])
        if int(info["step"]) != branch or not ckpt.is_file():
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise ScalelabError(
            f"{info_path}: missing or not this trunk's (the trunk rule writes it beside "
            f"{ckpt.name}); rerun the workflow, or train without --trunks"
        ) from None
    check_trunk_checkpoint(ckpt)
    return ckpt, previous


def check_trunk_checkpoint(ckpt: Path) -> int:
    """A trunk checkpoint's step. It must load as plain tensors and containers (`weights_only=True`):
    a truncated file or a planted pickle is one line naming the file and the fix, never a traceback
    (whose text would advise turning the safe loading off)."""
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception as exc:
        raise ScalelabError(
            f"{ckpt}: damaged or not a trunk checkpoint ({type(exc).__name__}); nothing was trained. "
            f"{damaged_trunk_advice(ckpt)}"
        ) from None


def damaged_trunk_advice(ckpt: Path) -> str:
    """What rebuilds a trunk checkpoint that does not load. A zip archive with a matching sidecar
    passes the DAG's cheap check, so a plain rerun would fail here again: the file and its sidecar
    must go; and where the trunk store's entry is the same file, a rerun would restore it again,
    so that entry must go too."""
    sidecar = ckpt.with_suffix(".json")
    remove = [str(ckpt), str(sidecar)]
    same = [entry for entry in _trunk_store_entries(ckpt, sidecar) if _same_file(entry / "state.ckpt", ckpt)]
    remove += [str(entry) for entry in same]
    rebuilt = "retrains that trunk segment" if same else "restores it from the trunk store, or retrains that segment"
    also = f" (the trunk store holds the same damaged file: {', '.join(map(str, same))})" if same else ""
    return f"To rebuild: rm -r {' '.join(remove)}{also}, then rerun the workflow: it {rebuilt}"


def _trunk_store_entries(ckpt: Path, sidecar: Path) -> list[Path]:
    """The trunk store entries this checkpoint may come from: the one its sidecar says it was restored
    from, and results/store/trunks/<key> (and `<key>~<data>`) for the key it records."""
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(info, dict):
        return []
    found = [Path(info["restored_from"])] if isinstance(info.get("restored_from"), str) else []
    if isinstance(info.get("key"), str):
        trunks = ckpt.parent.parent.parent / "store" / "trunks"  # results/trunks/<family>/step<k>.ckpt
        found += [trunks / info["key"], trunks / f"{info['key']}~{info.get('data_fingerprint')}"]
    return [entry for entry in dict.fromkeys(found) if (entry / "state.ckpt").is_file()]


def _same_file(one: Path, other: Path) -> bool:
    from ..files import file_sha256

    try:
        return one.stat().st_size == other.stat().st_size and file_sha256(one) == file_sha256(other)
    except OSError:
        return False

"""One WSD trunk segment trained: `train_trunk` and the `scalelab trunk` command.

The plan (families, branch points, the trunk store key) is scalelab.plan.wsd's; this is the training.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from ..store import runs as store
from ..plan import wsd
from ..errors import ScalelabError
from ..files import loads_json, write_json
from .batches import TokenData
from .callbacks import CurveRecorder, DivergenceGuard, ProgressLog
from .module import build_wsd_module, on_gpu
from .plan import model_shape, plan_trunk
from .resume import check_inputs, check_trunk_checkpoint, resume_checkpoint
from .trainer import build_trainer, configure_torch, quiet_lightning


def train_trunk(
    family: dict,
    step: int,
    data_dir: Path,
    out: Path,
    start: Path | None = None,
    threads: int | None = None,
    allow_repeat: bool = False,
    code: str = "",
    store_dir: Path | None = None,
) -> dict:
    """Train one WSD trunk segment: from checkpoint `start` (None: from scratch) to `step` steps at
    the family's constant lr; write the state to `out` (results/trunks/<family>/step<k>.ckpt) and
    `out` with .json (family, step, from: the segment's first step). A killed job resumes from
    its own checkpoints (`.work-step<k>/` beside `out`), as a train job does. With `store_dir`,
    the state is restored from `<store_dir>/trunks/<key>` when the family, code and step match
    (however the trunk was cut into segments before), and kept there when trained."""
    started = time.time()
    data_dir, out = Path(data_dir), Path(out)
    fid = wsd.family_id(family)
    tokens_per_step = family["batch_size"] * family["context"]
    spec = {**family, "run": f"trunk {fid} step {step}", "tokens": step * tokens_per_step, "isoflop_budget": None}
    meta = check_inputs(spec, data_dir, allow_repeat)
    start_step = _start_step(start, step)
    data = store.data_identity(meta)
    key = wsd.trunk_key(family, step, code)
    info = {
        "family": fid,
        "step": step,
        "from": start_step,
        "tokens": step * tokens_per_step,
        "key": key,
        "code": code,
        "data_fingerprint": data,
    }
    trunks_store = None if store_dir is None else Path(store_dir) / "trunks"
    out.parent.mkdir(parents=True, exist_ok=True)
    if trunks_store is not None:
        entry = store.lookup(trunks_store, key, data, store.TRUNK_FILES, spec=_trunk_store_spec(family, step))
        if entry is not None:
            return _restore(entry, out, info, started)
    configure_torch(threads)
    trainer, guard, ckpt_dir = _fit_segment(family, spec, meta, step, (start, start_step), data_dir, out)
    if not trainer.is_global_zero:
        return {}
    info.update(
        restored_from=None,
        wall_s=round(time.time() - started, 2),
        diverged_at_step=guard.diverged_at,
        bytes=out.stat().st_size,
    )  # checked at DAG-build time (scalelab.plan.integrity)
    if trunks_store is not None:
        _save_trunk(trunks_store, key, out, data, family, step, code)
    write_json(out.with_suffix(".json"), info)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return info


def _restore(entry: Path, out: Path, info: dict, started: float) -> dict:
    """A trunk state with the same family, code, step and data, copied from the trunk store."""
    store.copy_file(entry / store.TRUNK_FILES[0], out)
    info.update(restored_from=str(entry), wall_s=round(time.time() - started, 2), bytes=out.stat().st_size)
    write_json(out.with_suffix(".json"), info)
    print(
        f"{info['family']}: trunk step {info['step']} restored from {entry} (same family, code, step and data; "
        f"nothing retrained)"
    )
    return info


def _fit_segment(family: dict, spec: dict, meta: dict, step: int, start: tuple, data_dir: Path, out: Path):
    """Lightning's fit of one segment, from `start` (or the segment's own checkpoint after a kill),
    then the full state saved to `out`: (trainer, divergence guard, the segment's work folder).
    `start`: (the previous segment's checkpoint or None, its step)."""
    start, start_step = start
    model_config = model_shape(spec, meta["vocab_size"])
    plan = plan_trunk(family, step, model_config)
    steps_per_epoch = max(1, round((step - start_step) * spec["checkpoint_every"]))
    ckpt_dir = out.parent / f".work-{out.stem}"
    resume = resume_checkpoint(ckpt_dir, {**spec, "trunk_from": start_step})
    resume_from = resume[0] if resume else start
    lit = build_wsd_module(model_config, spec, plan.steps, plan.branch_step)
    recorder = CurveRecorder(every=max(1, step // 100))
    guard = DivergenceGuard(every=20 if on_gpu(spec) else 1)
    fid = wsd.family_id(family)
    print(f"{fid}: trunk steps {resume[1] if resume else start_step} to {step}")
    with quiet_lightning():
        progress = ProgressLog(f"{fid} trunk", step, spec["batch_size"] * spec["context"])
        trainer = build_trainer(spec, step, steps_per_epoch, ckpt_dir, [guard, recorder, progress], [])
        trainer.fit(
            lit,
            datamodule=TokenData(data_dir, spec, step, steps_per_epoch),
            ckpt_path=str(resume_from) if resume_from else None,
            weights_only=True,
        )
    # The full state (optimizer, loops, callbacks): branches resume from it. Atomic
    # (AtomicCheckpointIO); every rank joins, rank 0 writes.
    trainer.save_checkpoint(out, weights_only=False)
    return trainer, guard, ckpt_dir


def _start_step(start: Path | None, step: int) -> int:
    """The step of the previous segment's checkpoint `start` (0: from scratch), checked to be before `step`."""
    if start is None:
        return 0
    start_step = check_trunk_checkpoint(start)
    if start_step >= step:
        raise ScalelabError(f"{start}: at step {start_step}, not before this segment's end ({step})")
    return start_step


def _save_trunk(trunks_store: Path, key: str, ckpt: Path, data: str, family: dict, step: int, code: str) -> None:
    """Keep a trunk state in the store (store.save wants the files under their store names)."""
    with tempfile.TemporaryDirectory(dir=ckpt.parent, prefix=".store-") as tmp:
        os.link(ckpt, Path(tmp) / store.TRUNK_FILES[0])
        store.save(trunks_store, key, Path(tmp), data, _trunk_store_spec(family, step), code, names=store.TRUNK_FILES)


def _trunk_store_spec(family: dict, step: int) -> dict:
    """What a trunk store entry records as its spec (and lookup compares)."""
    return {"run": f"trunk step {step}", **family, "step": step}


# ----------------------------------------------------------------------------- `scalelab trunk`


def add_arguments(parser) -> None:
    parser.add_argument("--family", required=True, help="the family's spec as JSON (the trunk rule's params)")
    parser.add_argument("--step", required=True, type=int, help="the segment's last step (a branch point)")
    parser.add_argument("--start", default="", help="the previous segment's checkpoint ('' = from scratch)")
    parser.add_argument("--data", required=True, type=Path, help="the tokenize stage's folder (results/data)")
    parser.add_argument("--out", required=True, type=Path, help="results/trunks/<family>/step<k>.ckpt")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--allow-repeat", action="store_true", help="allow more tokens than the train split holds")
    parser.add_argument("--code", default="", help="the training code's fingerprint (part of the store key)")
    parser.add_argument("--store", type=Path, default=None, help="the run store (results/store); trunks under trunks/")


def run(args) -> None:
    family = loads_json(args.family, "--family")
    if not isinstance(family, dict) or family.get("schedule") != wsd.SCHEDULE:
        raise ScalelabError("--family: expected a WSD family's settings as a JSON object")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    info = train_trunk(
        family,
        args.step,
        args.data,
        args.out,
        Path(args.start) if args.start else None,
        args.threads,
        args.allow_repeat,
        args.code,
        args.store,
    )
    if info:
        print(f"{info['family']}: trunk at step {info['step']} (from {info['from']}) in {info.get('wall_s')} s")

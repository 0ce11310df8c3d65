"""One grid point trained: `train_run` (restore from the store, resume, branch from a WSD trunk,
fit, write the outputs) and the `scalelab train` command."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..store import runs as store
from ..plan import wsd
from ..plan.cluster import is_launcher
from ..errors import ScalelabError
from ..files import loads_json, write_json
from ..loggers import make_loggers, tracker_tags
from ..model import param_counts
from .batches import TokenData
from .callbacks import CurveRecorder, DivergenceGuard, ProgressLog
from .module import build_module, build_wsd_module, on_gpu
from .outputs import run_metrics, save_run, write_curve
from .plan import RunPlan, model_shape, plan_run
from .resume import check_inputs, resume_checkpoint, trunk_for
from .trainer import CKPT_NAME, build_trainer, configure_torch, quiet_lightning


def train_run(
    spec: dict,
    data_dir: Path,
    run_dir: Path,
    threads: int | None = None,
    allow_repeat: bool = False,
    code: str = "",
    store_dir: Path | None = None,
    loggers=("csv",),
    study: str = "scalelab study",
    trunks_dir: Path | None = None,
) -> dict:
    """Train one grid point; write model.pt, curve.csv and metrics.json into run_dir. A WSD run with
    `trunks_dir` (results/trunks) is a cooldown branch: it starts from its family's trunk checkpoint
    at its branch point (see scalelab.plan.wsd); without it, it trains from scratch.

    With `store_dir`, a finished run with the same spec, code and data is restored from the store
    instead of retrained, and a newly finished run is kept there (see scalelab.store.runs). `loggers`
    names the experiment trackers (scalelab.loggers); `study` is the study's title for them.
    `allow_repeat` permits more tokens than the train split holds (random windows then repeat)."""
    started = time.time()
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    meta = check_inputs(spec, data_dir, allow_repeat)
    data = store.data_identity(meta)
    key = store.run_key(spec, code)
    model_config = model_shape(spec, meta["vocab_size"])
    plan = plan_run(spec, model_config)
    trunk = trunk_for(plan, trunks_dir)
    flops_spent = None if trunk is None else wsd.run_flops(spec, plan.flops_per_token, trunk[1])[0]
    if store_dir is not None and is_launcher() and (entry := store.lookup(store_dir, key, data, spec=spec)) is not None:
        return _restore(entry, run_dir, spec, flops_spent)

    configure_torch(threads)
    ckpt_dir = run_dir / "ckpt"
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_from, resumed_from_step, first_step = _starting_point(spec, plan, ckpt_dir, trunk)
    if plan.family is not None:
        lit = build_wsd_module(model_config, spec, plan.steps, plan.branch_step)
    else:
        lit = build_module(model_config, spec, plan.steps)
    tags = tracker_tags(spec, param_counts(model_config)[0], plan.tokens, study)  # D as trained, whole steps
    trackers = make_loggers(loggers, run_dir, spec["run"], tags, study)
    trainer, recorder, guard, fit_s = _fit(spec, plan, lit, data_dir, ckpt_dir, trackers, resume_from)
    if not trainer.is_global_zero:
        return {}
    for tracker in trainer.loggers:
        tracker.save()
    curve = write_curve(
        recorder.rows, lit.val_history, run_dir / "curve.csv", plan.tokens_per_step, plan.flops_per_token
    )
    metrics = run_metrics(
        spec, plan, model_config, trainer, curve, guard, resumed_from_step, started, fit_s, first_step, flops_spent
    )
    metrics.update(spec_sha=store.spec_sha(spec), code=code, data_fingerprint=data)
    save_run(run_dir, spec, model_config, lit, metrics)
    if store_dir is not None:
        store.save(store_dir, key, run_dir, data, spec, code)
    if metrics["status"] == "ok":
        (ckpt_dir / CKPT_NAME).unlink(missing_ok=True)  # done: the resume state is no longer needed
    return metrics


def _starting_point(spec: dict, plan: RunPlan, ckpt_dir: Path, trunk) -> tuple:
    """(checkpoint to start from or None, the step a resumed run resumes at or None, the first step
    this job trains): the run's own checkpoint after a kill, else its trunk's state for a cooldown
    branch, else from scratch."""
    resume = resume_checkpoint(ckpt_dir, spec)
    resume_from, resumed_from_step = resume if resume else (None, None)
    first_step = resumed_from_step
    if resume_from is None and trunk is not None:  # a cooldown branch: from the trunk's state
        resume_from, first_step = trunk[0], plan.branch_step
        print(f"{spec['run']}: branching from the trunk at step {first_step} of {plan.steps} ({resume_from})")
    if resumed_from_step is not None:
        print(f"{spec['run']}: resuming from step {resumed_from_step} of {plan.steps} ({resume_from})")
    return resume_from, resumed_from_step, first_step


def _restore(entry: Path, run_dir: Path, spec: dict, flops_spent: float | None) -> dict:
    """A finished run with the same spec, code and data, copied from the store."""
    metrics = store.restore(entry, run_dir)
    if flops_spent is not None and metrics.get("flops_spent") != flops_spent:
        metrics["flops_spent"] = flops_spent  # the trunk's attribution follows today's branch points
        write_json(run_dir / "metrics.json", metrics)
    print(f"{spec['run']}: restored from {entry} (same spec, code and data; nothing retrained)")
    return metrics


def _fit(spec: dict, plan: RunPlan, lit, data_dir: Path, ckpt_dir: Path, trackers: list, resume_from):
    """Lightning's fit from `resume_from` (None: from scratch), then the final val loss if the last
    step was not measured: (trainer, curve recorder, divergence guard, seconds in fit)."""
    steps_per_epoch = max(1, round(plan.steps * spec["checkpoint_every"]))
    recorder = CurveRecorder(every=max(1, plan.steps // 100))
    tokens = TokenData(data_dir, spec, plan.steps, steps_per_epoch)
    guard = DivergenceGuard(every=20 if on_gpu(spec) else 1)
    progress = ProgressLog(spec["run"], plan.steps, plan.tokens_per_step)
    with quiet_lightning():
        trainer = build_trainer(spec, plan.steps, steps_per_epoch, ckpt_dir, [guard, recorder, progress], trackers)
        fit_started = time.time()
        trainer.fit(lit, datamodule=tokens, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
        fit_s = time.time() - fit_started
        if guard.diverged_at is None and (not lit.val_history or lit.val_history[-1][0] != trainer.global_step):
            trainer.validate(lit, datamodule=tokens, verbose=False)  # the final val loss, always measured
    return trainer, recorder, guard, fit_s


# ----------------------------------------------------------------------------- `scalelab train`


def add_arguments(parser) -> None:
    parser.add_argument("--spec", required=True, help="the run's settings as JSON (the train rule's params)")
    parser.add_argument("--data", required=True, type=Path, help="the tokenize stage's folder (results/data)")
    parser.add_argument("--out", required=True, type=Path, help="the run's folder (results/runs/{run})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--allow-repeat", action="store_true", help="allow more tokens than the train split holds")
    parser.add_argument("--code", default="", help="the training code's fingerprint (part of the store key)")
    parser.add_argument("--loggers", default="csv", help="experiment trackers: csv,tensorboard,mlflow,wandb")
    parser.add_argument("--study", default="scalelab study", help="the study's title (MLflow experiment, a tag)")
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="the run store (results/store): restore a finished run from it, keep new ones there",
    )
    parser.add_argument(
        "--trunks",
        type=Path,
        default=None,
        help="WSD trunk checkpoints (default: results/trunks beside --data, when --store is given)",
    )


def run(args) -> None:
    spec = loads_json(args.spec, "--spec")
    if not isinstance(spec, dict) or "run" not in spec:
        raise ScalelabError("--spec: expected the run's settings as a JSON object")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trunks = args.trunks or (args.data.parent / "trunks" if args.store is not None else None)
    metrics = train_run(
        spec,
        args.data,
        args.out,
        args.threads,
        args.allow_repeat,
        args.code,
        args.store,
        args.loggers,
        args.study,
        trunks,
    )
    if metrics:
        print(
            f"{metrics['run']}: {metrics['status']}, val_loss {metrics['val_loss']}, "
            f"{metrics['tokens']:,} tokens in {metrics['wall_s']} s ({metrics['tokens_per_s']} tokens/s)"
        )

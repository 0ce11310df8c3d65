"""The `train` and `trunk` stages: one grid point, or one WSD trunk segment, trained with Lightning.

The split follows Lightning's, one concern per module:

- `schedule`: the cosine/linear/constant lr schedule in optimizer steps (pure maths);
- `module`: the LightningModules (`LitGPT`, `LitWSD`): the maths of a step, the optimizer;
- `batches`: where the tokens come from (`StepBatches`, the `TokenData` data module);
- `callbacks`: what cuts across steps (divergence, the train curve, atomic checkpoints);
- `trainer`: the Trainer and what else decides the numbers (precision, torch settings);
- `plan`: a run's plan (steps, warmup, branch point, FLOPs), resolved once from its spec;
- `resume`: inputs checked, where a run starts (its checkpoint, its trunk);
- `outputs`: curve.csv, metrics.json, model.pt;
- `runs` and `trunks`: the orchestration and the `scalelab train` / `scalelab trunk` commands.

Resuming is exact: every optimizer step's batch is drawn from a generator seeded with
(seed, step), and an "epoch" is one checkpoint interval, so a run killed at any point resumes
from its last end-of-epoch checkpoint with the same data order, optimizer and schedule state.
"""

from .batches import StepBatches, TokenData
from .callbacks import AtomicCheckpointIO, CurveRecorder, DivergenceGuard
from .module import LitGPT, LitWSD, build_module, build_wsd_module, on_gpu
from .plan import RunPlan, plan_run, plan_trunk
from .runs import train_run
from .schedule import lr_factor, total_steps, warmup_steps_for
from .trainer import CKPT_NAME, build_trainer, configure_torch, resolve_precision
from .trunks import train_trunk

__all__ = [
    "AtomicCheckpointIO",
    "CKPT_NAME",
    "CurveRecorder",
    "DivergenceGuard",
    "LitGPT",
    "LitWSD",
    "RunPlan",
    "StepBatches",
    "TokenData",
    "build_module",
    "build_trainer",
    "build_wsd_module",
    "configure_torch",
    "lr_factor",
    "on_gpu",
    "plan_run",
    "plan_trunk",
    "resolve_precision",
    "total_steps",
    "train_run",
    "train_trunk",
    "warmup_steps_for",
]

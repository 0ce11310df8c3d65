"""The Lightning Trainer of a run and what decides its numbers beside the module: precision,
torch's settings, checkpoints every interval, and the warnings this design expects.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from pathlib import Path

import lightning as L
import torch

from ..plan.cluster import SRUN_WARNING, cluster_environment
from .callbacks import AtomicCheckpointIO
from .module import on_gpu

CKPT_NAME = "last.ckpt"


def resolve_precision(spec: dict) -> str:
    if spec["precision"] != "auto":
        return spec["precision"]
    return "bf16-mixed" if on_gpu(spec) else "32-true"


def configure_torch(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # Adam's second moments reach denormals, which are very slow on CPU
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def build_trainer(
    spec: dict, steps: int, steps_per_epoch: int, ckpt_dir: Path, callbacks: list, loggers: list
) -> L.Trainer:
    """The Lightning Trainer of one run; `callbacks` and `loggers` are the cross-cutting ones (no numbers)."""
    epochs = math.ceil(steps / steps_per_epoch)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        filename=CKPT_NAME.removesuffix(".ckpt"),
        every_n_epochs=1,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    return L.Trainer(
        accelerator=spec["accelerator"],
        devices=spec["devices"],
        precision=resolve_precision(spec),
        strategy="ddp" if spec["devices"] > 1 else "auto",
        max_steps=steps,
        max_epochs=-1,
        gradient_clip_val=spec["grad_clip"] or None,
        check_val_every_n_epoch=max(1, math.ceil(epochs / spec["val_evals"])),
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1,
        log_every_n_steps=max(1, steps // 100),
        logger=loggers or False,
        callbacks=[*callbacks, checkpoints, *([L.pytorch.callbacks.LearningRateMonitor("step")] if loggers else [])],
        # explicit, so Lightning neither requeues a Slurm job (Snakemake reruns it) nor guesses
        plugins=[AtomicCheckpointIO(), cluster_environment(spec["devices"])],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(ckpt_dir),
        deterministic=False,
        use_distributed_sampler=False,  # the datasets already give each rank its slice of a batch
    )


# Lightning's warnings that are expected here, each for a reason of this design. A log that
# holds only what is worth reading gets read.
EXPECTED_WARNINGS = (
    ".*does not have many workers.*",  # batches are built in-process from a memmap
    ".*Experiment logs directory.*",
    ".*Checkpoint directory .* exists and is not empty.*",  # the run's own resumable checkpoints
    ".*LeafSpec.*",
    SRUN_WARNING,
    ".*dirpath has changed.*",  # resumed from another folder's checkpoint (a trunk, a branch point)
    ".*callbacks used to create the checkpoint.*",
    # StepBatches draws every batch from (seed, global step), so a resume in mid-epoch replays
    # exactly; the resume tests check it row for row.
    ".*your dataloader is not resumable.*",
    ".*smaller than the logging interval.*",  # an epoch is one checkpoint interval, short by design
)


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips from its info log; keeps the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("\N{ELECTRIC LIGHT BULB} Tip")


@contextlib.contextmanager
def quiet_lightning():
    """Lightning without the warnings this design expects (EXPECTED_WARNINGS) and its tips."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    tips = _DropTips()
    rank_zero.addFilter(tips)
    try:
        with warnings.catch_warnings():
            for message in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        rank_zero.removeFilter(tips)

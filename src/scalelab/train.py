"""The `train` stage: one grid point trained with Lightning.

The split follows Lightning's: `LitGPT` holds the maths of a step, `TokenData` says where the
tokens come from, and callbacks handle what cuts across (divergence, checkpoints, logging).

Resuming is exact: every optimizer step's batch is drawn from a generator seeded with
(seed, step), and an "epoch" is one checkpoint interval, so a run killed at any point resumes
from its last end-of-epoch checkpoint with the same data order, optimizer and schedule state.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from . import store, wsd
from .cluster import SRUN_WARNING, cluster_environment, is_launcher
from .errors import ScalelabError
from .files import atomic_path, loads_json, write_json
from .loggers import make_loggers
from .model import GPT, GPTConfig, flops_per_token, param_counts

CKPT_NAME = "last.ckpt"


# ----------------------------------------------------------------------------- the schedule

def total_steps(tokens: int, batch_size: int, context: int) -> int:
    """Exactly ceil(D / (batch_size * context)) optimizer steps."""
    return max(1, math.ceil(tokens / (batch_size * context)))


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step`: linear warmup, then cosine/linear decay to min_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * decay


def warmup_steps_for(spec: dict, steps: int) -> int:
    tokens_per_step = spec["batch_size"] * spec["context"]
    warmup_tokens = spec["warmup_tokens"] * spec["tokens"] if spec["warmup_tokens"] <= 1 else spec["warmup_tokens"]
    return min(steps, math.ceil(warmup_tokens / tokens_per_step)) if warmup_tokens > 0 else 0


# ----------------------------------------------------------------------------- data

class StepBatches(Dataset):
    """Item i is the whole batch of optimizer step `first_step + i`: batch_size random windows of
    context+1 tokens, drawn from a generator seeded with (seed, step) so any step can be replayed."""

    def __init__(self, path: Path, dtype: str, context: int, batch_size: int, seed: int,
                 first_step: int, last_step: int, rank: int = 0, world: int = 1) -> None:
        self.path, self.dtype, self.context, self.batch_size = path, dtype, context, batch_size
        self.seed, self.first_step, self.last_step = seed, first_step, last_step
        self.rank, self.world = rank, world
        self._tokens = None
        self._window = np.arange(context + 1)

    def __len__(self) -> int:
        return self.last_step - self.first_step

    def __getitem__(self, i: int):
        if self._tokens is None:  # opened lazily: memmaps don't pickle into workers
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        rng = np.random.default_rng((self.seed, self.first_step + i))
        starts = rng.integers(0, len(self._tokens) - self.context - 1, size=self.batch_size, endpoint=True)
        starts = starts[self.rank::self.world]  # each DDP rank takes its slice of the global batch
        windows = torch.from_numpy(self._tokens[starts[:, None] + self._window].astype(np.int64))
        return windows[:, :-1], windows[:, 1:]


class TokenData(L.LightningDataModule):
    """Training batches for the next checkpoint interval (an "epoch") and fixed val windows."""

    def __init__(self, data_dir: Path, spec: dict, steps: int, steps_per_epoch: int) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.spec, self.steps, self.steps_per_epoch = spec, steps, steps_per_epoch
        meta = json.loads((self.data_dir / "meta.json").read_text())
        self.dtype, self.vocab_size = meta["dtype"], meta["vocab_size"]
        self.train_tokens = meta["splits"]["train"]["tokens"]
        self.val_tokens = meta["splits"]["val"]["tokens"]
        if self.train_tokens < spec["context"] + 1:
            raise ScalelabError(f"{self.data_dir / 'train.bin'}: {self.train_tokens} tokens, fewer than one window")

    def train_dataloader(self) -> DataLoader:
        # Batches follow the optimizer step, not Lightning's epoch/batch counters: a run resumed
        # from an end-of-epoch checkpoint replays that epoch's end with one more step, never its
        # data. Epochs end at multiples of steps_per_epoch all the same, so the resumed run
        # validates at exactly the steps an uninterrupted one does.
        first = self.trainer.global_step
        last = min(self.steps, (first // self.steps_per_epoch + 1) * self.steps_per_epoch)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        batches = StepBatches(self.data_dir / "train.bin", self.dtype, self.spec["context"], self.spec["batch_size"],
                              self.spec["seed"], first, last, rank, world)
        return DataLoader(batches, batch_size=None, shuffle=False)

    def val_windows(self) -> torch.Tensor:
        """Non-overlapping windows from the start of val.bin: the same set for every run."""
        context = self.spec["context"]
        count = min(self.spec["val_tokens"] // context, (self.val_tokens - 1) // context)
        if count < 1:
            return torch.zeros(0, context + 1, dtype=torch.long)
        tokens = np.memmap(self.data_dir / "val.bin", dtype=self.dtype, mode="r")
        starts = np.arange(count) * context
        return torch.from_numpy(tokens[starts[:, None] + np.arange(context + 1)].astype(np.int64))

    def val_dataloader(self) -> DataLoader:
        # Every rank measures all of it: val is small, the synced mean is then exactly the
        # 1-process value, and no rank is left without a batch when there are fewer than ranks.
        windows = self.val_windows()
        batches = [windows[i:i + self.spec["batch_size"]] for i in range(0, len(windows), self.spec["batch_size"])]
        return DataLoader([(b[:, :-1], b[:, 1:]) for b in batches], batch_size=None)


# ----------------------------------------------------------------------------- the model's steps

class LitGPT(L.LightningModule):
    def __init__(self, model_config: dict, spec: dict, steps: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.gpt = GPT(GPTConfig(**model_config))
        self.spec, self.steps = spec, steps
        self.warmup_steps = warmup_steps_for(spec, steps)
        self.val_history: list[tuple[int, float]] = []  # (optimizer steps done, val loss)
        # Compiled forward kept outside the module tree, so state_dict keys stay plain.
        object.__setattr__(self, "_forward", torch.compile(self.gpt) if spec["compile"] else self.gpt)

    def training_step(self, batch, batch_idx):
        x, y = batch
        _, loss, _ = self._forward(x, y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        _, loss, _ = self._forward(x, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_history.append((self.global_step, float(self.trainer.callback_metrics["val_loss"])))

    # The val history rides in the checkpoint, so a resumed run's curve.csv is complete.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["val_history"] = list(self.val_history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.val_history = [tuple(item) for item in checkpoint.get("val_history", [])]

    def lr_factor(self, step: int) -> float:
        """The multiplier of the peak lr at `step` (LitWSD overrides it with the WSD schedule)."""
        return lr_factor(step, self.steps, self.warmup_steps, self.spec["schedule"], self.spec["min_lr_ratio"])

    def configure_optimizers(self):
        # Weight decay on matrices only, as in GPT-2/nanoGPT; biases, LayerNorms stay undecayed.
        params = [p for p in self.gpt.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": self.spec["weight_decay"]},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        gpu = on_gpu(self.spec)
        # fused on GPU; the multi-tensor path on CPU, well ahead of the per-parameter loop
        optimizer = torch.optim.AdamW(groups, lr=self.spec["lr"], betas=(0.9, self.spec["beta2"]),
                                      fused=gpu, foreach=not gpu)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# ----------------------------------------------------------------------------- callbacks

class DivergenceGuard(L.Callback):
    """Stop at a non-finite loss; the run ends with status `diverged`, metrics still written.

    Reading the loss forces a GPU sync, so on a GPU it is checked every `every` steps."""

    def __init__(self, every: int = 1) -> None:
        self.every = every
        self.diverged_at: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss.detach()).all():
            self.diverged_at = trainer.global_step
            trainer.should_stop = True


class CurveRecorder(L.Callback):
    """The train rows of curve.csv: (step, lr, train_loss) every `every` steps, where `step`
    counts the optimizer steps done before the batch and lr is the rate its update used.

    The rows ride in each checkpoint (Lightning saves a callback's `state_dict`), so a run
    resumed after Ctrl-C or a kill has exactly the curve of an uninterrupted one, and a WSD
    branch's curve starts with its trunk's rows. The lr is the module's own schedule."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[tuple[int, float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step - 1
        if step % self.every and trainer.global_step != pl_module.steps:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.rows.append((step, pl_module.spec["lr"] * pl_module.lr_factor(step), float(loss.detach())))

    def state_dict(self) -> dict:
        return {"rows": [list(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [tuple(row) for row in state_dict.get("rows", [])]


class AtomicCheckpointIO(L.pytorch.plugins.TorchCheckpointIO):
    """Write each checkpoint beside its target and rename it into place (a job killed while
    saving keeps the previous one), and read checkpoints with `weights_only=True`: a resume
    state is plain tensors and containers, so a planted pickle can never run code."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


# ----------------------------------------------------------------------------- WSD (schedule: wsd)

class LitWSD(LitGPT):
    """LitGPT under warmup-stable-decay: the lr follows `scalelab.wsd.lr_factor`, constant from
    the end of warmup until `branch`, then a cooldown to `steps`. A trunk is branch == steps."""

    def __init__(self, model_config: dict, spec: dict, steps: int, branch: int) -> None:
        super().__init__(model_config, spec, steps)
        self.branch = branch
        self.warmup_steps = wsd.warmup_steps(spec)  # absolute: the same for every D of a family

    def lr_factor(self, step: int) -> float:
        return wsd.lr_factor(step, self.steps, self.warmup_steps, self.branch, self.spec.get("cooldown_shape", ""),
                             self.spec["min_lr_ratio"])


def build_wsd_module(model_config: GPTConfig, spec: dict, steps: int, branch: int) -> LitWSD:
    """The seeded WSD model: initial weights as build_module's (a trunk's first segment)."""
    L.seed_everything(spec["seed"], workers=True, verbose=False)
    return LitWSD(model_config.to_dict(), spec, steps, branch)


# ----------------------------------------------------------------------------- what decides the numbers

def on_gpu(spec: dict) -> bool:
    """Whether this run trains on a GPU: one is there and the spec does not ask for the CPU."""
    return torch.cuda.is_available() and spec["accelerator"] != "cpu"


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


def build_module(model_config: GPTConfig, spec: dict, steps: int) -> LitGPT:
    """The seeded model: the same spec gives the same initial weights."""
    L.seed_everything(spec["seed"], workers=True, verbose=False)
    return LitGPT(model_config.to_dict(), spec, steps)


def build_trainer(spec: dict, steps: int, steps_per_epoch: int, ckpt_dir: Path, callbacks: list,
                  loggers: list) -> L.Trainer:
    """The Lightning Trainer of one run; `callbacks` and `loggers` are the cross-cutting ones (no numbers)."""
    epochs = math.ceil(steps / steps_per_epoch)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir, filename=CKPT_NAME.removesuffix(".ckpt"), every_n_epochs=1, save_top_k=1,
        save_on_train_epoch_end=True, enable_version_counter=False)
    return L.Trainer(
        accelerator=spec["accelerator"], devices=spec["devices"], precision=resolve_precision(spec),
        strategy="ddp" if spec["devices"] > 1 else "auto",
        max_steps=steps, max_epochs=-1, gradient_clip_val=spec["grad_clip"] or None,
        check_val_every_n_epoch=max(1, math.ceil(epochs / spec["val_evals"])), num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1, log_every_n_steps=max(1, steps // 100),
        logger=loggers or False,
        callbacks=[*callbacks, checkpoints, *([L.pytorch.callbacks.LearningRateMonitor("step")] if loggers else [])],
        # explicit, so Lightning neither requeues a Slurm job (Snakemake reruns it) nor guesses
        plugins=[AtomicCheckpointIO(), cluster_environment(spec["devices"])],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(ckpt_dir), deterministic=False,
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


# ----------------------------------------------------------------------------- one run

def _resume_checkpoint(ckpt_dir: Path, spec: dict) -> tuple[Path, int] | None:
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


def _write_curve(train_rows: list, val_history: list, curve_csv: Path, tokens_per_step: int,
                 flops_per_tok: int) -> pd.DataFrame:
    """curve.csv (step, tokens, flops, lr, train_loss, val_loss); `step` counts the optimizer
    steps done when the value was measured (train loss before that step's update)."""
    train = pd.DataFrame(train_rows, columns=["step", "lr", "train_loss"]).groupby("step", as_index=False).last()
    val = pd.DataFrame(val_history, columns=["step", "val_loss"]).groupby("step", as_index=False).last()
    curve = train.merge(val, on="step", how="outer").sort_values("step")
    curve["step"] = curve["step"].astype(int)
    curve.insert(1, "tokens", curve["step"] * tokens_per_step)
    curve.insert(2, "flops", curve["tokens"].astype(float) * flops_per_tok)
    with atomic_path(curve_csv) as tmp:
        curve.to_csv(tmp, index=False)
    return curve


def _check_inputs(spec: dict, data_dir: Path, allow_repeat: bool) -> dict:
    """meta.json, checked: one line naming what is wrong, before anything is written."""
    from .config import check_splits, read_meta

    meta = read_meta(data_dir / "meta.json")
    if meta is None:
        raise ScalelabError(f"{data_dir / 'meta.json'}: missing, damaged or out of step with the token files; "
                            f"rebuild with `snakemake --forcerun tokenize`")
    window = spec["context"] + 1
    required = {"train": window if allow_repeat else max(window, spec["tokens"]), "val": window}
    check_splits(required, {k: v["tokens"] for k, v in meta["splits"].items()}, spec["run"])
    if spec["batch_size"] % spec["devices"]:
        raise ScalelabError(f"{spec['run']}: batch_size {spec['batch_size']} is not divisible by devices {spec['devices']}")
    if spec["accelerator"] == "gpu" and not torch.cuda.is_available():
        raise ScalelabError(f"{spec['run']}: train.accelerator is 'gpu' but this node has no CUDA device "
                            f"(use accelerator: auto or cpu, or run on a GPU node)")
    return meta


def _metrics(spec: dict, model_config: GPTConfig, trainer, curve: pd.DataFrame, guard: DivergenceGuard,
             steps: int, resumed_from_step: int | None, started: float, fit_s: float,
             first_step: int | None = None, flops_spent: float | None = None) -> dict:
    params, params_total = param_counts(model_config)
    flops_tok, flops_tok_total = flops_per_token(model_config)
    tokens_per_step = spec["batch_size"] * spec["context"]
    diverged = guard.diverged_at is not None
    trained_steps = trainer.global_step
    val = curve["val_loss"].dropna()
    tail = curve[curve["step"] >= trained_steps * 0.9]["train_loss"].dropna()
    tokens = steps * tokens_per_step
    new_steps = trained_steps - (first_step if first_step is not None else resumed_from_step or 0)
    return {
        "run": spec["run"], "model": spec["model"], "n_layer": spec["n_layer"], "d_model": spec["d_model"],
        "n_head": spec["n_head"], "vocab_size": model_config.vocab_size, "context": spec["context"],
        "params": params, "params_total": params_total,
        "tokens": tokens, "tokens_requested": spec["tokens"],
        "flops": tokens * flops_tok, "flops_total": tokens * flops_tok_total,
        "seed": spec["seed"], "isoflop_budget": spec["isoflop_budget"], "steps": trained_steps,
        "batch_size": spec["batch_size"], "lr": spec["lr"],
        # every other key a sweep may vary (scalelab.config.SWEEPABLE), so metrics.csv has its column
        **{key: spec[key] for key in ("schedule", "warmup_tokens", "min_lr_ratio", "weight_decay", "beta2",
                                      "grad_clip") if key in spec},
        "train_loss": float(tail.mean()) if len(tail) else None,
        "val_loss": None if diverged or not len(val) else float(val.iloc[-1]),
        "wall_s": round(time.time() - started, 2),
        "tokens_per_s": round(new_steps * tokens_per_step / fit_s, 1) if fit_s > 0 else None,
        "status": "diverged" if diverged else "ok",
        "diverged_at_step": guard.diverged_at,
        "resumed_from_step": resumed_from_step,
        "precision": resolve_precision(spec), "accelerator": str(trainer.accelerator.__class__.__name__),
        "devices": spec["devices"], "threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "lightning_version": L.__version__,
        **_schedule_metrics(spec, tokens * flops_tok, flops_spent),
    }


def _schedule_metrics(spec: dict, flops: float, flops_spent: float | None) -> dict:
    """schedule, branch_from_tokens (the WSD branch point; None otherwise) and flops_spent: what
    this run cost, its trunk charged by scalelab.wsd's rule (without a trunk: `flops`)."""
    branch = wsd.branch_step(spec) * spec["batch_size"] * spec["context"] if wsd.is_wsd(spec) else None
    return {"schedule": spec["schedule"], "branch_from_tokens": branch,
            "flops_spent": float(flops if flops_spent is None else flops_spent)}


def _trunk_for(spec: dict, trunks_dir: Path | None) -> tuple[Path, int] | None:
    """A WSD run's trunk checkpoint at its branch point and the previous branch point (the start
    of the trunk segment charged to it), from `<trunks_dir>/<family>/step<k>.ckpt|.json`."""
    if trunks_dir is None or not wsd.is_wsd(spec):
        return None
    branch = wsd.branch_step(spec)
    folder = Path(trunks_dir) / wsd.family_id(spec)
    ckpt, info_path = folder / f"step{branch}.ckpt", folder / f"step{branch}.json"
    try:
        info = json.loads(info_path.read_text())
        previous = int(info["from"])
        if int(info["step"]) != branch or not ckpt.is_file():
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise ScalelabError(f"{info_path}: missing or not this trunk's (the trunk rule writes it beside "
                            f"{ckpt.name}); rerun the workflow, or train without --trunks") from None
    return ckpt, previous


def _save(run_dir: Path, spec: dict, model_config: GPTConfig, lit: LitGPT, metrics: dict) -> None:
    """model.pt, then metrics.json (its presence means the run is complete). Both carry the run
    id and spec hash, and metrics.json the model file's size and checksum, so a damaged or
    foreign file is recognised as such."""
    state = {k: v.detach().cpu() for k, v in lit.gpt.state_dict().items()}
    with atomic_path(run_dir / "model.pt") as tmp:
        torch.save({"config": model_config.to_dict(), "state_dict": state, "run": spec["run"],
                    "spec_sha": metrics["spec_sha"]}, tmp)
        metrics["model_bytes"] = tmp.stat().st_size
        metrics["model_sha256"] = store.file_sha256(tmp)
    write_json(run_dir / "metrics.json", metrics)


def train_run(spec: dict, data_dir: Path, run_dir: Path, threads: int | None = None,
              allow_repeat: bool = False, code: str = "", store_dir: Path | None = None,
              loggers=("csv",), study: str = "scalelab study", trunks_dir: Path | None = None) -> dict:
    """Train one grid point; write model.pt, curve.csv and metrics.json into run_dir.

    A WSD run with `trunks_dir` (results/trunks) is a cooldown branch: it starts from its family's
    trunk checkpoint at its branch point (see scalelab.wsd); without it, it trains from scratch.

    With `store_dir`, a finished run with the same spec, code and data is restored from the store
    instead of retrained, and a newly finished run is kept there (see scalelab.store). `loggers`
    names the experiment trackers (scalelab.loggers); `study` is the study's title for them.
    `allow_repeat` permits more tokens than the train split holds (random windows then repeat)."""
    started = time.time()
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    meta = _check_inputs(spec, data_dir, allow_repeat)
    data = store.data_identity(meta)
    key = store.run_key(spec, code)
    trunk = _trunk_for(spec, trunks_dir)
    model_config = GPTConfig(vocab_size=meta["vocab_size"], context=spec["context"],
                             n_layer=spec["n_layer"], d_model=spec["d_model"], n_head=spec["n_head"])
    steps = total_steps(spec["tokens"], spec["batch_size"], spec["context"])
    flops_spent = None if trunk is None else wsd.run_flops(spec, flops_per_token(model_config)[0], trunk[1])[0]
    if store_dir is not None and is_launcher() and (entry := store.lookup(store_dir, key, data)) is not None:
        metrics = store.restore(entry, run_dir)
        if flops_spent is not None and metrics.get("flops_spent") != flops_spent:
            metrics["flops_spent"] = flops_spent  # the trunk's attribution follows today's branch points
            write_json(run_dir / "metrics.json", metrics)
        print(f"{spec['run']}: restored from {entry} (same spec, code and data; nothing retrained)")
        return metrics

    configure_torch(threads)
    steps_per_epoch = max(1, round(steps * spec["checkpoint_every"]))

    ckpt_dir = run_dir / "ckpt"
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = _resume_checkpoint(ckpt_dir, spec)
    resume_from, resumed_from_step = resume if resume else (None, None)
    first_step = resumed_from_step
    if resume_from is None and trunk is not None:  # a cooldown branch: from the trunk's state
        resume_from, first_step = trunk[0], wsd.branch_step(spec)
        print(f"{spec['run']}: branching from the trunk at step {first_step} of {steps} ({resume_from})")
    if wsd.is_wsd(spec):
        lit = build_wsd_module(model_config, spec, steps, wsd.branch_step(spec))
    else:
        lit = build_module(model_config, spec, steps)
    recorder = CurveRecorder(every=max(1, steps // 100))
    tokens = TokenData(data_dir, spec, steps, steps_per_epoch)
    guard = DivergenceGuard(every=20 if on_gpu(spec) else 1)
    tags = {"model": spec["model"], "N": param_counts(model_config)[0], "D": spec["tokens"], "seed": spec["seed"],
            "study": study}
    trackers = make_loggers(loggers, run_dir, spec["run"], tags, study)
    if resumed_from_step is not None:
        print(f"{spec['run']}: resuming from step {resumed_from_step} of {steps} ({resume_from})")
    with quiet_lightning():
        trainer = build_trainer(spec, steps, steps_per_epoch, ckpt_dir, [guard, recorder], trackers)
        fit_started = time.time()
        trainer.fit(lit, datamodule=tokens, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
        fit_s = time.time() - fit_started
        if guard.diverged_at is None and (not lit.val_history or lit.val_history[-1][0] != trainer.global_step):
            trainer.validate(lit, datamodule=tokens, verbose=False)  # the final val loss, always measured
    if not trainer.is_global_zero:
        return {}
    for tracker in trainer.loggers:
        tracker.save()
    curve = _write_curve(recorder.rows, lit.val_history, run_dir / "curve.csv",
                         spec["batch_size"] * spec["context"], flops_per_token(model_config)[0])
    metrics = _metrics(spec, model_config, trainer, curve, guard, steps, resumed_from_step, started, fit_s,
                       first_step, flops_spent)
    metrics.update(spec_sha=store.spec_sha(spec), code=code, data_fingerprint=data)
    _save(run_dir, spec, model_config, lit, metrics)
    if store_dir is not None:
        store.save(store_dir, key, run_dir, data, spec, code)
    if metrics["status"] == "ok":
        (ckpt_dir / CKPT_NAME).unlink(missing_ok=True)  # done: the resume state is no longer needed
    return metrics


def train_trunk(family: dict, step: int, data_dir: Path, out: Path, start: Path | None = None,
                threads: int | None = None, allow_repeat: bool = False, code: str = "",
                store_dir: Path | None = None) -> dict:
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
    meta = _check_inputs(spec, data_dir, allow_repeat)
    start_step = 0
    if start is not None:
        try:
            start_step = int(torch.load(start, map_location="cpu", weights_only=True, mmap=True)["global_step"])
        except Exception as exc:
            raise ScalelabError(f"{start}: not a usable trunk checkpoint ({type(exc).__name__})") from None
        if start_step >= step:
            raise ScalelabError(f"{start}: at step {start_step}, not before this segment's end ({step})")
    data = store.data_identity(meta)
    key = wsd.trunk_key(family, step, code)
    info = {"family": fid, "step": step, "from": start_step, "tokens": step * tokens_per_step, "key": key,
            "code": code, "data_fingerprint": data}
    trunks_store = None if store_dir is None else Path(store_dir) / "trunks"
    out.parent.mkdir(parents=True, exist_ok=True)
    if trunks_store is not None and (entry := store.lookup(trunks_store, key, data, store.TRUNK_FILES)) is not None:
        store._copy(entry / store.TRUNK_FILES[0], out)
        info.update(restored_from=str(entry), wall_s=round(time.time() - started, 2))
        write_json(out.with_suffix(".json"), info)
        print(f"{fid}: trunk step {step} restored from {entry} (same family, code, step and data; nothing retrained)")
        return info

    configure_torch(threads)
    model_config = GPTConfig(vocab_size=meta["vocab_size"], context=spec["context"],
                             n_layer=spec["n_layer"], d_model=spec["d_model"], n_head=spec["n_head"])
    steps_per_epoch = max(1, round((step - start_step) * spec["checkpoint_every"]))
    ckpt_dir = out.parent / f".work-{out.stem}"
    resume = _resume_checkpoint(ckpt_dir, {**spec, "trunk_from": start_step})
    resume_from = resume[0] if resume else start
    lit = build_wsd_module(model_config, spec, step, step)
    recorder = CurveRecorder(every=max(1, step // 100))
    guard = DivergenceGuard(every=20 if on_gpu(spec) else 1)
    print(f"{fid}: trunk steps {resume[1] if resume else start_step} to {step}")
    with quiet_lightning():
        trainer = build_trainer(spec, step, steps_per_epoch, ckpt_dir, [guard, recorder], [])
        trainer.fit(lit, datamodule=TokenData(data_dir, spec, step, steps_per_epoch),
                    ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    # The full state (optimizer, loops, callbacks): branches resume from it. Atomic
    # (AtomicCheckpointIO); every rank joins, rank 0 writes.
    trainer.save_checkpoint(out, weights_only=False)
    if not trainer.is_global_zero:
        return {}
    info.update(restored_from=None, wall_s=round(time.time() - started, 2), diverged_at_step=guard.diverged_at)
    if trunks_store is not None:
        _save_trunk(trunks_store, key, out, data, family, step, code)
    write_json(out.with_suffix(".json"), info)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return info


def _save_trunk(trunks_store: Path, key: str, ckpt: Path, data: str, family: dict, step: int, code: str) -> None:
    """Keep a trunk state in the store (store.save wants the files under their store names)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=ckpt.parent, prefix=".store-") as tmp:
        os.link(ckpt, Path(tmp) / store.TRUNK_FILES[0])
        store.save(trunks_store, key, Path(tmp), data, {"run": f"trunk step {step}", **family, "step": step}, code,
                   names=store.TRUNK_FILES)


def add_arguments(parser) -> None:
    parser.add_argument("--spec", required=True, help="the run's settings as JSON (the train rule's params)")
    parser.add_argument("--data", required=True, type=Path, help="the tokenize stage's folder (results/data)")
    parser.add_argument("--out", required=True, type=Path, help="the run's folder (results/runs/{run})")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--allow-repeat", action="store_true", help="allow more tokens than the train split holds")
    parser.add_argument("--code", default="", help="the training code's fingerprint (part of the store key)")
    parser.add_argument("--loggers", default="csv", help="experiment trackers: csv,tensorboard,mlflow,wandb")
    parser.add_argument("--study", default="scalelab study", help="the study's title (MLflow experiment, a tag)")
    parser.add_argument("--store", type=Path, default=None,
                        help="the run store (results/store): restore a finished run from it, keep new ones there")
    parser.add_argument("--trunks", type=Path, default=None,
                        help="WSD trunk checkpoints (default: results/trunks beside --data, when --store is given)")


def run(args) -> None:
    spec = loads_json(args.spec, "--spec")
    if not isinstance(spec, dict) or "run" not in spec:
        raise ScalelabError("--spec: expected the run's settings as a JSON object")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trunks = args.trunks or (args.data.parent / "trunks" if args.store is not None else None)
    metrics = train_run(spec, args.data, args.out, args.threads, args.allow_repeat, args.code, args.store,
                        args.loggers, args.study, trunks)
    if metrics:
        print(f"{metrics['run']}: {metrics['status']}, val_loss {metrics['val_loss']}, "
              f"{metrics['tokens']:,} tokens in {metrics['wall_s']} s ({metrics['tokens_per_s']} tokens/s)")

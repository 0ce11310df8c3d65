"""What cuts across a run's steps: divergence, the train curve, progress in the job's log, and
atomic checkpoint files. A new callback goes here.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from ..files import atomic_path


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


def duration_text(seconds: float) -> str:
    """3h 05m, 7m 25s, 42s: how long, for a person."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s" if rest >= 60 else f"{rest}s"


class ProgressLog(L.Callback):
    """One line in the job's log at every `fraction` of the run or `seconds` of wall time,
    whichever comes first: step, tokens, train loss, tokens/s and the time left. Reading the loss
    syncs a GPU, so only on the steps that print; rank 0 only. No state: checkpoints are as before."""

    def __init__(
        self, name: str, steps: int, tokens_per_step: int, seconds: float = 30.0, fraction: float = 0.05
    ) -> None:
        self.name, self.steps, self.tokens_per_step = name, steps, tokens_per_step
        self.seconds, self.every = seconds, max(1, round(steps * fraction))
        self.started = self.last_time = None
        self.first_step = self.last_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = self.last_time = time.monotonic()
        self.first_step = self.last_step = trainer.global_step  # a resumed run starts later

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, now = trainer.global_step, time.monotonic()
        due = step - self.last_step >= self.every or now - self.last_time >= self.seconds or step == self.steps
        if not due or not trainer.is_global_zero or self.started is None:
            return
        self.last_step, self.last_time = step, now
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        rate = (step - self.first_step) * self.tokens_per_step / max(now - self.started, 1e-9)
        left = (self.steps - step) * self.tokens_per_step / rate if rate > 0 else float("nan")
        print(
            f"{self.name}: step {step:,}/{self.steps:,} ({100 * step / self.steps:.0f} %), "
            f"{step * self.tokens_per_step:,} tokens, loss {float(loss.detach()):.4f}, {rate:,.0f} tokens/s, "
            f"ETA {duration_text(left) if left == left else '?'}",
            flush=True,
        )


class AtomicCheckpointIO(L.pytorch.plugins.TorchCheckpointIO):
    """Write each checkpoint beside its target and rename it into place (a job killed while
    saving keeps the previous one), and read checkpoints with `weights_only=True`: a resume
    state is plain tensors and containers, so a planted pickle can never run code."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

"""The LightningModules: `LitGPT` holds the maths of a step (loss, optimizer, schedule) and
`LitWSD` the same under warmup-stable-decay. A new loss or optimizer setting goes here.
"""

from __future__ import annotations

import lightning as L
import torch

from ..plan import wsd
from ..model import GPT, GPTConfig
from .schedule import lr_factor, warmup_steps_for


def on_gpu(spec: dict) -> bool:
    """Whether this run trains on a GPU: one is there and the spec does not ask for the CPU."""
    return torch.cuda.is_available() and spec["accelerator"] != "cpu"


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
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.spec["weight_decay"]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        gpu = on_gpu(self.spec)
        # fused on GPU; the multi-tensor path on CPU, well ahead of the per-parameter loop
        optimizer = torch.optim.AdamW(
            groups, lr=self.spec["lr"], betas=(0.9, self.spec["beta2"]), fused=gpu, foreach=not gpu
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class LitWSD(LitGPT):
    """LitGPT under warmup-stable-decay: the lr follows `scalelab.plan.wsd.lr_factor`, constant from
    the end of warmup until `branch`, then a cooldown to `steps`. A trunk is branch == steps."""

    def __init__(self, model_config: dict, spec: dict, steps: int, branch: int) -> None:
        super().__init__(model_config, spec, steps)
        self.branch = branch
        self.warmup_steps = wsd.warmup_steps(spec)  # absolute: the same for every D of a family

    def lr_factor(self, step: int) -> float:
        return wsd.lr_factor(
            step,
            self.steps,
            self.warmup_steps,
            self.branch,
            self.spec.get("cooldown_shape", ""),
            self.spec["min_lr_ratio"],
        )


def build_wsd_module(model_config: GPTConfig, spec: dict, steps: int, branch: int) -> LitWSD:
    """The seeded WSD model: initial weights as build_module's (a trunk's first segment)."""
    L.seed_everything(spec["seed"], workers=True, verbose=False)
    return LitWSD(model_config.to_dict(), spec, steps, branch)


def build_module(model_config: GPTConfig, spec: dict, steps: int) -> LitGPT:
    """The seeded model: the same spec gives the same initial weights."""
    L.seed_everything(spec["seed"], workers=True, verbose=False)
    return LitGPT(model_config.to_dict(), spec, steps)

"""Where a run's tokens come from: `StepBatches` (the batch of each optimizer step, replayable
from (seed, step)) and `TokenData`, the LightningDataModule of a run.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ScalelabError


class StepBatches(Dataset):
    """Item i is the whole batch of optimizer step `first_step + i`: batch_size random windows of
    context+1 tokens, drawn from a generator seeded with (seed, step) so any step can be replayed."""

    def __init__(
        self,
        path: Path,
        dtype: str,
        context: int,
        batch_size: int,
        seed: int,
        first_step: int,
        last_step: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
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
        starts = starts[self.rank :: self.world]  # each DDP rank takes its slice of the global batch
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
        batches = StepBatches(
            self.data_dir / "train.bin",
            self.dtype,
            self.spec["context"],
            self.spec["batch_size"],
            self.spec["seed"],
            first,
            last,
            rank,
            world,
        )
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
        batches = [windows[i : i + self.spec["batch_size"]] for i in range(0, len(windows), self.spec["batch_size"])]
        return DataLoader([(b[:, :-1], b[:, 1:]) for b in batches], batch_size=None)

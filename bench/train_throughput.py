"""Training throughput: scalelab's Lightning path against a minimal raw PyTorch loop.

Both train the same model on the same batches for the same steps (AdamW, the lr schedule,
gradient clipping), and are timed over the same steady-state steps, after warm-up. The last
line printed is a JSON object:
  lightning_tokens_per_s, raw_tokens_per_s, ratio (Lightning / raw),
  model_gflops (achieved, from the total-parameter FLOP formula), matmul_gflops (a large
  fp32 matmul on the same threads: the practical ceiling), model_vs_matmul.

    python bench/train_throughput.py                        # the default grid's largest model, CPU
    python bench/train_throughput.py --d-model 768 --n-layer 12 --n-head 12 --context 1024 \
        --batch-size 16 --steps 60 --compile                 # a ~100M model on a GPU (bf16)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lightning as L  # noqa: E402

from scalelab.model import GPT, GPTConfig  # noqa: E402
from scalelab.plan.shapes import flops_per_token  # noqa: E402
from scalelab.train import LitGPT, StepBatches, lr_factor, resolve_precision, warmup_steps_for  # noqa: E402

# Peak dense bf16 tensor throughput, for MFU on GPUs we know.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


class StepTimer(L.Callback):
    """Wall time of training steps [warmup, end), synchronised on GPU."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def matmul_gflops(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 20) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def make_tokens(path: Path, vocab: int, n: int) -> None:
    rng = np.random.default_rng(0)
    # Zipf-like ids, so the loss falls as it would on text rather than sitting at log(vocab).
    ids = np.minimum(rng.zipf(1.3, size=n) - 1, vocab - 1).astype(np.uint16)
    ids.tofile(path)


def lightning_run(spec, cfg, tokens_path, steps, warmup, device):
    lit = LitGPT(cfg.to_dict(), spec, steps)
    batches = StepBatches(tokens_path, "uint16", spec["context"], spec["batch_size"], spec["seed"], 0, steps)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=resolve_precision(spec),
        max_steps=steps,
        gradient_clip_val=spec["grad_clip"],
        logger=L.pytorch.loggers.CSVLogger(tempfile.mkdtemp(), name="", version="bench"),
        log_every_n_steps=max(1, steps // 100),
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(lit, train_dataloaders=loader)
    return (steps - warmup) * spec["batch_size"] * spec["context"] / (timer.end - timer.start)


def raw_run(spec, cfg, tokens_path, steps, warmup, device):
    torch.manual_seed(spec["seed"])
    model = GPT(cfg).to(device)
    forward = torch.compile(model) if spec["compile"] else model
    params = [p for p in model.parameters()]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=spec["lr"], betas=(0.9, spec["beta2"]), fused=device == "cuda", foreach=device != "cuda"
    )
    warmup_steps = warmup_steps_for(spec, steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, warmup_steps, spec["schedule"], spec["min_lr_ratio"])
    )
    batches = StepBatches(tokens_path, "uint16", spec["context"], spec["batch_size"], spec["seed"], 0, steps)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=resolve_precision(spec) == "bf16-mixed")
    start = None
    for step in range(steps):
        if step == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        x, y = (t.to(device, non_blocking=True) for t in batches[step])
        with autocast:
            _, loss, _ = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (steps - warmup) * spec["batch_size"] * spec["context"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8, help="untimed first steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (scalelab's default per job)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two paths this many times")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = GPTConfig(
        vocab_size=args.vocab_size, context=args.context, n_layer=args.n_layer, d_model=args.d_model, n_head=args.n_head
    )
    spec = {
        "context": args.context,
        "batch_size": args.batch_size,
        "lr": 1e-3,
        "schedule": "cosine",
        "warmup_tokens": 0.05,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.1,
        "beta2": 0.95,
        "grad_clip": 1.0,
        "precision": "auto",
        "accelerator": "auto",
        "devices": 1,
        "compile": args.compile,
        "seed": 0,
        "tokens": args.steps * args.batch_size * args.context,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tokens_path = Path(tmp) / "train.bin"
        make_tokens(tokens_path, args.vocab_size, max(2_000_000, 4 * args.batch_size * (args.context + 1)))
        lightning_rates, raw_rates = [], []
        for repeat in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            raw_rates.append(raw_run(spec, cfg, tokens_path, args.steps, args.warmup, device))
            lightning_rates.append(lightning_run(spec, cfg, tokens_path, args.steps, args.warmup, device))
            print(
                f"repeat {repeat}: raw {raw_rates[-1]:,.0f} tokens/s, lightning {lightning_rates[-1]:,.0f} tokens/s",
                flush=True,
            )
    lightning_tps, raw_tps = max(lightning_rates), max(raw_rates)
    _, flops_tok = flops_per_token(cfg)
    model_gflops = flops_tok * lightning_tps / 1e9
    dtype = torch.bfloat16 if resolve_precision(spec) == "bf16-mixed" else torch.float32
    ceiling = matmul_gflops(device, dtype, 8192 if device == "cuda" else 2048)
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({args.threads} threads)",
        "precision": resolve_precision(spec),
        "compile": args.compile,
        "model": {
            "n_layer": args.n_layer,
            "d_model": args.d_model,
            "n_head": args.n_head,
            "vocab_size": args.vocab_size,
            "context": args.context,
            "batch_size": args.batch_size,
            "params_total": sum(p.numel() for p in GPT(cfg).parameters()),
        },
        "steps_timed": args.steps - args.warmup,
        "lightning_tokens_per_s": round(lightning_tps, 1),
        "raw_tokens_per_s": round(raw_tps, 1),
        "ratio": round(lightning_tps / raw_tps, 3),
        "model_gflops": round(model_gflops, 2),
        "matmul_gflops": round(ceiling, 2),
        "model_vs_matmul": round(model_gflops / ceiling, 3),
    }
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        if peak:
            result["mfu_vs_bf16_peak"] = round(model_gflops / (peak * 1e3), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

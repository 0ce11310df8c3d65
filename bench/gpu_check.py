"""The GPU check, ready for when a GPU is lent: scalelab's Lightning training path at ~100M and
~1B parameters, with bf16 and `compile` on and off, and one grid point of the GPU example through
the workflow.

    python bench/gpu_check.py                        # on a GPU: 100M (4 settings), 1B if it fits, workflow point
    python bench/gpu_check.py --sizes 100m --steps 60 --no-workflow
    python bench/gpu_check.py --sizes tiny --steps 6 --no-workflow   # the CPU path (what the test runs)

For each model and setting it prints one JSON line: device, bf16 on/off, compile on/off,
tokens/s (steady state: the steps after --warmup), achieved TFLOP/s (scalelab.plan.shapes'
total-parameter FLOPs per token x tokens/s), MFU against the device's dense bf16 peak (known
devices only, else null), peak memory (GPU: torch.cuda.max_memory_allocated; CPU: the process's
max RSS) and the training loss after the N steps. The 1B model runs only where its weights,
gradients and Adam moments (16 bytes a parameter) plus activations fit the free GPU memory; it
is skipped with the reason otherwise.

The workflow point (config/examples/gpu-tinystories.yaml, its smallest run) needs the TinyStories
dataset from the hub, or a warm `datasets` cache: offline (HF_HUB_OFFLINE=1 or no network), and
with --no-workflow, it is skipped with the reason. The last line is a JSON object with all results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets. The first
# name contained in torch.cuda.get_device_name() wins: PCIe H100 before the SXM figure.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}

# name: (n_layer, d_model, n_head, vocab, context, batch); parameters from scalelab.plan.shapes
SIZES = {
    "tiny": (2, 32, 2, 256, 32, 4),
    "100m": (12, 768, 12, 32768, 1024, 16),  # ~111M parameters with embeddings
    "1b": (24, 2048, 16, 32768, 1024, 8),  # ~1.28B parameters with embeddings
}
WORKFLOW_CONFIG = REPO / "config/examples/gpu-tinystories.yaml"
WORKFLOW_RUN = "s1-50M-s0"


def peak_tflops(device_name: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16_TFLOPS.items() if name in device_name), None)


def settings_for(device: str, sizes: list[str]) -> list[tuple[str, bool, bool]]:
    """(size, bf16, compile) to measure. The GPU gets all four at 100M, and the goal setting (bf16
    and compile) at 1B; the CPU, the path itself in fp32 without compile."""
    if device != "cuda":
        return [(size, False, False) for size in sizes]
    out = []
    for size in sizes:
        combos = [(True, True), (True, False), (False, True), (False, False)] if size != "1b" else [(True, True)]
        out.extend((size, bf16, compile_) for bf16, compile_ in combos)
    return out


def fits(size: str, device: str) -> str | None:
    """Why this model cannot train here, or None."""
    if device != "cuda" or size == "tiny":
        return None
    import torch

    from scalelab.model import GPT, GPTConfig

    n_layer, d_model, n_head, vocab, context, batch = SIZES[size]
    with torch.device("meta"):
        params = sum(
            p.numel()
            for p in GPT(
                GPTConfig(vocab_size=vocab, context=context, n_layer=n_layer, d_model=d_model, n_head=n_head)
            ).parameters()
        )
    # weights, grads, Adam moments (fp32) + a rough bound on bf16 activations kept for backward
    need = 16 * params + batch * context * d_model * n_layer * 34
    free, _ = torch.cuda.mem_get_info()
    if need > 0.9 * free:
        return f"needs about {need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"
    return None


def measure(size: str, bf16: bool, compile_: bool, steps: int, warmup: int, device: str, threads: int) -> dict:
    import lightning as L
    import torch

    from scalelab.model import GPTConfig
    from scalelab.plan.shapes import flops_per_token
    from scalelab.train import LitGPT, StepBatches
    from train_throughput import StepTimer, make_tokens

    class LastLoss(L.Callback):
        loss = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)

    n_layer, d_model, n_head, vocab, context, batch = SIZES[size]
    cfg = GPTConfig(vocab_size=vocab, context=context, n_layer=n_layer, d_model=d_model, n_head=n_head)
    precision = "bf16-mixed" if bf16 else "32-true"
    spec = {
        "context": context,
        "batch_size": batch,
        "lr": 3e-4,
        "schedule": "cosine",
        "warmup_tokens": 0.05,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.1,
        "beta2": 0.95,
        "grad_clip": 1.0,
        "precision": precision,
        "accelerator": "gpu" if device == "cuda" else "cpu",
        "devices": 1,
        "compile": compile_,
        "seed": 0,
        "tokens": steps * batch * context,
    }
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        tokens_path = Path(tmp) / "train.bin"
        make_tokens(tokens_path, vocab, max(200_000, 4 * batch * (context + 1)))
        lit = LitGPT(cfg.to_dict(), spec, steps)
        batches = StepBatches(tokens_path, "uint16", context, batch, 0, 0, steps)
        timer, last = StepTimer(warmup), LastLoss()
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            precision=precision,
            max_steps=steps,
            gradient_clip_val=spec["grad_clip"],
            logger=False,
            callbacks=[timer, last],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        trainer.fit(lit, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    tokens_per_s = (steps - warmup) * batch * context / (timer.end - timer.start)
    _, flops_tok = flops_per_token(cfg)
    tflops = flops_tok * tokens_per_s / 1e12
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({threads} threads)"
    peak = peak_tflops(name) if device == "cuda" else None
    if device == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the process's peak
    return {
        "size": size,
        "device": name,
        "bf16": bf16,
        "compile": compile_,
        "params_total": sum(p.numel() for p in lit.parameters()),
        "n_layer": n_layer,
        "d_model": d_model,
        "context": context,
        "batch_size": batch,
        "steps": steps,
        "steps_timed": steps - warmup,
        "tokens_per_s": round(tokens_per_s, 1),
        "tflops": float(f"{tflops:.4g}"),
        "peak_bf16_tflops": peak,
        "mfu": float(f"{tflops / peak:.4g}") if peak else None,
        "peak_memory_mb": round(memory, 1),
        "loss": last.loss,
    }


def workflow_point(timeout_s: int) -> dict:
    """One grid point of the GPU example through Snakemake, in a temporary study folder."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return {
            "run": WORKFLOW_RUN,
            "skipped": "offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE): the example's corpus is a hub dataset",
        }
    snakemake = str(Path(sys.executable).parent / "snakemake")
    with tempfile.TemporaryDirectory() as study:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [
                    snakemake,
                    "--snakefile",
                    str(REPO / "Snakefile"),
                    "--directory",
                    study,
                    "--configfile",
                    str(WORKFLOW_CONFIG),
                    "--cores",
                    "all",
                    f"results/runs/{WORKFLOW_RUN}/metrics.json",
                ],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return {"run": WORKFLOW_RUN, "failed": f"did not finish within {timeout_s} s"}
        seconds = time.perf_counter() - start
        tokenize_log = Path(study) / "logs/tokenize.log"
        if proc.returncode != 0:
            tail = (tokenize_log.read_text() if tokenize_log.exists() else proc.stderr).strip().splitlines()[-1:]
            stage = "tokenize" if not (Path(study) / "results/data/meta.json").exists() else "train"
            return {
                "run": WORKFLOW_RUN,
                "skipped" if stage == "tokenize" else "failed": f"{stage} failed: {tail[0] if tail else 'no output'}",
            }
        metrics = json.loads((Path(study) / f"results/runs/{WORKFLOW_RUN}/metrics.json").read_text())
    keys = ("val_loss", "tokens", "steps", "wall_s", "tokens_per_s", "precision", "accelerator", "params")
    return {"run": WORKFLOW_RUN, "snakemake_s": round(seconds, 1), **{k: metrics.get(k) for k in keys}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="default: 100m 1b on a GPU, tiny on the CPU")
    parser.add_argument(
        "--steps", type=int, default=50, help="training steps per measurement (the loss is after these)"
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps (compilation happens here)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-workflow", action="store_true", help="skip the workflow grid point")
    parser.add_argument("--workflow-timeout", type=int, default=1800)
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 0 and less than --steps")

    import torch

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = args.sizes or (["100m", "1b"] if device == "cuda" else ["tiny"])
    results = []
    for size, bf16, compile_ in settings_for(device, sizes):
        why = fits(size, device)
        if why:
            row = {"size": size, "bf16": bf16, "compile": compile_, "skipped": why}
        else:
            row = measure(size, bf16, compile_, args.steps, args.warmup, device, args.threads)
        print(json.dumps(row), flush=True)
        results.append(row)
    workflow = (
        {"run": WORKFLOW_RUN, "skipped": "--no-workflow"} if args.no_workflow else workflow_point(args.workflow_timeout)
    )
    print(json.dumps({"workflow": workflow}), flush=True)
    summary = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "cuda": device == "cuda",
        "torch": torch.__version__,
        "results": results,
        "workflow": workflow,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

"""Greedy decoding with and without the key/value cache, on a default-grid-sized model.

    python bench/eval_kvcache.py [--n-layer 4 --d-model 128 --context 128 --batch 32
                                  --prompt-tokens 32 --new-tokens 32 --device cpu --threads N]

Without the cache every new token is a full pass over prompt + generated tokens (quadratic in
the length); with it, one single-position step. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from scalelab.evaluate.generation import greedy_generate
from scalelab.model import GPT, GPTConfig


def timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of `repeats` calls (after one warm-up), and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--checkpoint", default=None, help="a run's model.pt instead of random weights")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.checkpoint:
        from scalelab.evaluate.command import load_model

        model = load_model(args.checkpoint, device)
    else:
        torch.manual_seed(0)
        cfg = GPTConfig(
            vocab_size=args.vocab_size,
            context=args.context,
            n_layer=args.n_layer,
            d_model=args.d_model,
            n_head=args.n_head,
        )
        model = GPT(cfg).to(device).eval()
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(2, cfg.vocab_size, (args.batch, args.prompt_tokens), generator=gen).to(device)

    cached_s, cached = timed(
        lambda: greedy_generate(model, prompts, args.new_tokens, use_cache=True), device, args.repeats
    )
    full_s, full = timed(
        lambda: greedy_generate(model, prompts, args.new_tokens, use_cache=False), device, args.repeats
    )
    new_tokens = args.batch * args.new_tokens
    result = {
        "model": {
            "n_layer": cfg.n_layer,
            "d_model": cfg.d_model,
            "n_head": cfg.n_head,
            "vocab_size": cfg.vocab_size,
            "context": cfg.context,
            "weights": args.checkpoint or "random (seed 0)",
        },
        "batch": args.batch,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cached_s": round(cached_s, 4),
        "uncached_s": round(full_s, 4),
        "cached_tokens_per_s": round(new_tokens / cached_s),
        "uncached_tokens_per_s": round(new_tokens / full_s),
        "speedup": round(full_s / cached_s, 2),
        "identical_tokens": bool(torch.equal(cached, full)),
    }
    print(
        f"{new_tokens} new tokens ({args.batch} x {args.new_tokens} after {args.prompt_tokens}-token prompts): "
        f"cached {cached_s * 1e3:.1f} ms, uncached {full_s * 1e3:.1f} ms, speed-up {result['speedup']}x"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""WSD trunk + cooldown branches against independent cosine runs: one model family, same data.

One model (2 x 64 by default) is trained at several token counts D twice on the same tokens (the
same data order, seed and peak lr): (a) `schedule: wsd`, one constant-lr trunk cut at the branch
points and one cooldown per D, exactly as the workflow does it (scalelab.train.train_trunk and
train_run with trunks); (b) `schedule: cosine`, one independent run per D. For each D it prints
the WSD branch's final val loss, the cosine run's, and the FLOPs ratio (the WSD run's
`flops_spent` over its `flops`); the last line is a JSON object with every number.

    python bench/wsd_vs_cosine.py                       # ~3-4 min on 2 CPU cores
    python bench/wsd_vs_cosine.py --tokens 100K 200K 400K 800K --cooldown 0.2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scalelab.data import tokenize as data
from scalelab.plan import wsd  # noqa: E402
from scalelab.config.counts import parse_count  # noqa: E402


def spec_for(args, tokens: int, schedule: str) -> dict:
    spec = {
        "run": f"bench-{tokens}-{schedule}",
        "model": "bench",
        "n_layer": args.n_layer,
        "d_model": args.d_model,
        "n_head": args.n_head,
        "tokens": tokens,
        "seed": 0,
        "isoflop_budget": None,
        "data": "bench",
        "context": args.context,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "schedule": schedule,
        "warmup_tokens": args.warmup_tokens,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.1,
        "beta2": 0.95,
        "grad_clip": 1.0,
        "precision": "32-true",
        "accelerator": "cpu",
        "devices": 1,
        "compile": False,
        "val_tokens": 16384,
        "val_evals": 2,
        "checkpoint_every": 0.25,
    }
    if schedule == "wsd":
        spec.update(cooldown=args.cooldown, cooldown_shape=args.cooldown_shape)
    return spec


def quiet(function, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return function(*a, **k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", nargs="+", default=["100K", "200K", "400K"])
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-head", type=int, default=2)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup-tokens", type=float, default=5000, help="absolute (WSD); cosine uses the same")
    parser.add_argument("--cooldown", type=float, default=0.2)
    parser.add_argument("--cooldown-shape", default="1-sqrt", choices=["1-sqrt", "linear"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from scalelab.train import train_run, train_trunk

    tokens = sorted(parse_count(t, "--tokens") for t in args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = str(Path(sysconfig.get_paths()["stdlib"]) / "*.py")  # the stdlib's top-level modules
        started = time.time()
        quiet(
            data.tokenize,
            {
                "source": {"files": [corpus], "text_field": "text", "sample_by": "document"},
                "pairs": None,
                "split": {"val": 0.02, "test": 0.01},
                "tokenizer": {"vocab_size": 2048},
                "allow_repeat": True,
            },
            tmp / "data",
        )
        tokenize_s = time.time() - started
        specs = [spec_for(args, d, "wsd") for d in tokens]
        family = wsd.plan_families(specs)[wsd.family_id(specs[0])]
        started = time.time()
        previous = None
        for point in family.points:
            out = tmp / "trunks" / family.id / f"step{point}.ckpt"
            quiet(train_trunk, family.spec, point, tmp / "data", out, previous, args.threads)
            previous = out
        branches = {
            s["tokens"]: quiet(
                train_run, s, tmp / "data", tmp / "wsd" / s["run"], args.threads, trunks_dir=tmp / "trunks"
            )
            for s in specs
        }
        wsd_s = time.time() - started
        started = time.time()
        cosine = {
            d: quiet(train_run, spec_for(args, d, "cosine"), tmp / "data", tmp / "cosine" / str(d), args.threads)
            for d in tokens
        }
        cosine_s = time.time() - started

    rows = []
    print(f"{'D':>10} {'branch at':>10} {'WSD val':>9} {'cosine val':>10} {'diff':>8} {'FLOPs ratio':>11}")
    for d in tokens:
        w, c = branches[d], cosine[d]
        ratio = w["flops_spent"] / w["flops"]
        rows.append(
            {
                "tokens": d,
                "branch_from_tokens": w["branch_from_tokens"],
                "wsd_val_loss": w["val_loss"],
                "cosine_val_loss": c["val_loss"],
                "flops_spent": w["flops_spent"],
                "flops": w["flops"],
                "flops_ratio": round(ratio, 4),
            }
        )
        print(
            f"{d:>10,} {w['branch_from_tokens']:>10,} {w['val_loss']:>9.4f} {c['val_loss']:>10.4f} "
            f"{w['val_loss'] - c['val_loss']:>+8.4f} {ratio:>11.3f}"
        )
    spent, alone = sum(r["flops_spent"] for r in rows), sum(r["flops"] for r in rows)
    print(f"{'all':>10} {'':>10} {'':>9} {'':>10} {'':>8} {spent / alone:>11.3f}")
    print(
        json.dumps(
            {
                "rows": rows,
                "flops_spent": spent,
                "flops_independent": alone,
                "flops_ratio": round(spent / alone, 4),
                "wsd_s": round(wsd_s, 1),
                "cosine_s": round(cosine_s, 1),
                "tokenize_s": round(tokenize_s, 1),
                "model": {"n_layer": args.n_layer, "d_model": args.d_model, "n_head": args.n_head},
                "cooldown": args.cooldown,
                "cooldown_shape": args.cooldown_shape,
            }
        )
    )


if __name__ == "__main__":
    main()

"""`scalelab evaluate`: test loss, perplexity and bits per byte, then BLEU/ROUGE from greedy generations.

One run at a time. Reads `{run}/model.pt`, `{run}/metrics.json` and `results/data/`
(`test.bin`, `meta.json`, `tokenizer.json`); writes `{run}/eval.json` and
`{run}/generations.jsonl`. A run that diverged or has no usable checkpoint still gets both
files (null metrics, a `message`) so that one bad grid point never stops the workflow.

Perplexity: the test stream is cut into non-overlapping windows of the training context; each
window of `context` inputs predicts the `context` tokens that follow its first token, so every
evaluated token is predicted exactly once. `test_loss` is the token-weighted mean NLL (nats),
`test_bpb` the same total in bits divided by the UTF-8 bytes of exactly the predicted tokens.

Generation: greedy decoding with the model's key/value cache, batched; a generation stops at
`<|endoftext|>` or after R tokens. K examples are spread evenly over the test split (deterministic).
  continuation: spans of P + R tokens inside test documents; prompt = first P, reference = next R.
  pairs: documents are `source <|sep|> target <|endoftext|>`; prompt = `source <|sep|>`.
BLEU is sacrebleu's corpus BLEU (0-100, with its signature); ROUGE-1/2/L the mean F1 (0-1) of
rouge-score with the Porter stemmer; `generations.jsonl` holds what both were computed from.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ScalelabError
from ..files import read_json, write_json, write_text
from ..model import GPT, GPTConfig
from ..config.stage_settings import EVAL_TASKS as TASKS
from ..config.stage_settings import EvalSettings
from ..store.runs import file_sha256
from .generation import continuation_prompts, generate, pairs_prompts, score_generations



# ----------------------------------------------------------------------------- test loss


def eval_windows(n_tokens: int, context: int, test_tokens: int | None = None) -> list[tuple[int, int]]:
    """(start, length) of the windows to evaluate: inputs tokens[start:start+length], targets shifted by one.

    Without `test_tokens` (or when it covers the split) the windows tile the whole stream, the
    last one possibly shorter, so every token but the first is predicted exactly once. Otherwise
    ceil(test_tokens / context) full windows are spread evenly over the split (deterministic).
    """
    n_targets = n_tokens - 1
    if n_targets < 1:
        return []
    n_full = n_targets // context
    if test_tokens is None or test_tokens >= n_targets:
        windows = [(i * context, context) for i in range(n_full)]
        if n_targets % context:
            windows.append((n_full * context, n_targets % context))
        return windows
    n_pick = min(math.ceil(test_tokens / context), n_full)
    picks = (np.arange(n_pick) * n_full) // n_pick  # evenly spaced, distinct since n_pick <= n_full
    return [(int(i) * context, context) for i in picks]


@torch.no_grad()
def test_loss(
    model: GPT,
    tokens,
    context: int,
    batch_size: int,
    windows: list[tuple[int, int]] | None = None,
) -> tuple[float, int]:
    """(total_nats, n_tokens): summed next-token NLL over non-overlapping windows of `context`.

    `tokens` is a 1-D sequence of ids (numpy array, memmap or tensor); `windows` defaults to
    tiling all of it (see `eval_windows`).
    """
    if windows is None:
        windows = eval_windows(len(tokens), context)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nats, n_tokens = 0.0, 0
    # Windows of equal length batch together; in practice all full windows plus at most one tail.
    by_length: dict[int, list[int]] = {}
    for start, length in windows:
        by_length.setdefault(length, []).append(start)
    for length, starts in sorted(by_length.items(), reverse=True):
        for b in range(0, len(starts), batch_size):
            rows = [np.asarray(tokens[s : s + length + 1], dtype=np.int64) for s in starts[b : b + batch_size]]
            batch = torch.from_numpy(np.stack(rows)).to(device)
            logits, _, _ = model(batch[:, :-1])
            nats = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
            total_nats += float(nats.double())  # accumulate in double: millions of tokens
            n_tokens += batch[:, 1:].numel()
    model.train(was_training)
    return total_nats, n_tokens


# ----------------------------------------------------------------------------- bytes per token


def token_byte_lengths(tokenizer, path: str = "tokenizer.json") -> np.ndarray:
    """UTF-8 bytes of each token id of a byte-level BPE; special tokens count 0 (they are not text).

    Each byte-level token stands for a fixed byte string, so the bytes of any token sequence are
    the sum of this table: exact even where a window cuts a multi-byte character in two.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = set(ByteLevel.alphabet())  # the 256 printable characters that stand for the 256 bytes
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    lengths = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    for token, token_id in vocab.items():
        if token in special:
            continue
        if any(c not in alphabet for c in token):
            raise ScalelabError(f"{path}: token {token!r} is not byte-level BPE; bits per byte need one")
        lengths[token_id] = len(token)  # one character per byte
    return lengths



# ----------------------------------------------------------------------------- one run


METRIC_KEYS = ("test_loss", "test_ppl", "test_bpb", "test_tokens", "test_bytes", "bleu", "bleu_signature",
               "rouge1", "rouge2", "rougeL", "n_generations")


def _pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ScalelabError("--device cuda was asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def load_model(path: Path, device: torch.device, run_id: str | None = None) -> GPT:
    """The GPT in `model.pt` (of run `run_id`, when given); any problem raises ValueError naming it."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if run_id is not None and ckpt.get("run", run_id) != run_id:
            raise ValueError(f"it holds run {ckpt['run']!r}, not {run_id!r}")
        cfg = GPTConfig(**ckpt["config"])
        # torch.compile wraps the module as `_orig_mod`; its state_dict keys carry the prefix.
        state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["state_dict"].items()}
        model = GPT(cfg)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise ValueError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # a truncated zip, a pickle error, wrong keys or shapes: all mean unusable
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path}: checkpoint is unreadable ({type(exc).__name__}: {first_line})") from None
    return model.to(device).float().eval()


def _load_data(data_dir: Path):
    meta = read_json(data_dir / "meta.json", "data meta")
    for key in ("dtype", "eot_id", "vocab_size"):
        if key not in meta:
            raise ScalelabError(f"{data_dir / 'meta.json'}: missing key {key!r}")
    test_path = data_dir / "test.bin"
    if not test_path.exists():
        raise ScalelabError(f"{test_path}: test split not found (run `scalelab tokenize` first)")
    try:
        dtype = np.dtype(meta["dtype"])
        if test_path.stat().st_size % dtype.itemsize:
            raise ValueError(f"size is not a multiple of {dtype.itemsize} bytes")
        tokens = np.memmap(test_path, dtype=dtype, mode="r") if test_path.stat().st_size else np.zeros(0, dtype)
    except (TypeError, ValueError) as exc:
        raise ScalelabError(f"{test_path}: cannot read as {meta['dtype']} tokens ({exc})") from None
    if len(tokens) < 2:
        raise ScalelabError(f"{test_path}: the test split has {len(tokens)} tokens; at least 2 are needed")
    from tokenizers import Tokenizer

    tok_path = data_dir / "tokenizer.json"
    recorded = (meta.get("tokenizer") or {}).get("fingerprint")
    try:
        if recorded and hashlib.sha256(tok_path.read_bytes()).hexdigest()[:16] != recorded:
            raise ValueError(f"not the tokenizer {data_dir / 'meta.json'} records")
        tokenizer = Tokenizer.from_file(str(tok_path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ScalelabError(f"{tok_path}: cannot load the tokenizer ({first}); to rebuild: "
                            f"rm {data_dir / 'meta.json'}, then rerun the workflow") from None
    return meta, tokens, tokenizer


def _not_evaluated(run_id, status: str, message: str, settings: EvalSettings, started: float) -> dict:
    return {"run": run_id, "status": status, **{k: None for k in METRIC_KEYS}, "task": settings.task,
            "eval_s": time.perf_counter() - started, "message": message, "settings": asdict(settings)}


def score_test_split(model: GPT, tokens, tokenizer, settings: EvalSettings, tokenizer_path: Path) -> dict:
    """Test loss, perplexity and bits per byte over exactly the predicted tokens."""
    context = model.cfg.context
    windows = eval_windows(len(tokens), context, settings.test_tokens)
    total_nats, n_tokens = test_loss(model, tokens, context, settings.batch_size, windows)
    byte_lengths = token_byte_lengths(tokenizer, str(tokenizer_path))
    n_bytes = int(sum(byte_lengths[np.asarray(tokens[s + 1 : s + 1 + n], dtype=np.int64)].sum() for s, n in windows))
    loss = total_nats / n_tokens
    return {"test_loss": loss, "test_ppl": math.exp(min(loss, 700.0)),  # min: no OverflowError from a broken model
            "test_bpb": total_nats / math.log(2) / max(n_bytes, 1), "test_tokens": n_tokens, "test_bytes": n_bytes}


def generate_examples(model: GPT, tokens, tokenizer, meta: dict, settings: EvalSettings, data_dir: Path) -> list[dict]:
    """Greedy generations for the task's prompts: [{prompt, reference, hypothesis}] as text."""
    context, eot_id = model.cfg.context, meta["eot_id"]
    if settings.task == "continuation":
        if settings.prompt_tokens + settings.max_new_tokens > context:
            raise ScalelabError(f"eval settings: prompt_tokens {settings.prompt_tokens} + max_new_tokens "
                                f"{settings.max_new_tokens} exceed the model context of {context}")
        examples = continuation_prompts(np.asarray(tokens), eot_id, settings.prompts, settings.prompt_tokens,
                                        settings.max_new_tokens)
        if settings.prompts and not examples:
            raise ScalelabError(f"{data_dir / 'test.bin'}: no test document has the {settings.prompt_tokens} + "
                                f"{settings.max_new_tokens} tokens a continuation prompt needs; lower eval.prompt_tokens")  # noqa: E501
    else:
        examples = pairs_prompts(np.asarray(tokens), eot_id, meta["sep_id"], settings.prompts)
        examples = [(p, r) for p, r in examples if len(p) < context]  # a source that fills the context leaves no room
    new_ids = generate(model, [p for p, _ in examples], settings.max_new_tokens, eot_id, settings.batch_size)

    def text(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    return [{"prompt": text(p[:-1] if settings.task == "pairs" else p), "reference": text(r), "hypothesis": text(h)}
            for (p, r), h in zip(examples, new_ids)]


def evaluate_run(run_dir, data_dir, settings: EvalSettings | dict | None = None) -> dict:
    """Evaluate one run; write `eval.json` and `generations.jsonl` in `run_dir` and return the eval dict."""
    started = time.perf_counter()
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if not isinstance(settings, EvalSettings):
        settings = EvalSettings.from_dict(settings)
    settings.check()

    def give_up(status: str, message: str) -> dict:
        result = _not_evaluated(run_id, status, message, settings, started)
        write_text(run_dir / "generations.jsonl", "")
        write_json(run_dir / "eval.json", result)
        print(f"scalelab evaluate: {run_dir}: not evaluated: {message}", file=sys.stderr)
        return result

    run_id = run_dir.name
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        run_id = metrics.get("run", run_id)
        status = metrics["status"]
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        return give_up("failed", f"{run_dir / 'metrics.json'} is missing or unreadable ({type(exc).__name__})")
    if status != "ok":
        return give_up(status, f"training status is {status!r} (see {run_dir / 'metrics.json'}); nothing to evaluate")
    model_path = run_dir / "model.pt"
    if metrics.get("model_sha256") and model_path.exists() and file_sha256(model_path) != metrics["model_sha256"]:
        return give_up("failed", f"{model_path} is not the model {run_dir / 'metrics.json'} records (damaged, or "
                                 f"copied from another run); to rebuild: rm {model_path}, then rerun the workflow")

    meta, tokens, tokenizer = _load_data(data_dir)
    if settings.task == "pairs" and (meta.get("format") != "pairs" or meta.get("sep_id") is None):
        raise ScalelabError(f"{data_dir / 'meta.json'}: eval task 'pairs' needs a pairs corpus (format is {meta.get('format')!r})")  # noqa: E501
    device = _pick_device(settings.device)
    try:
        model = load_model(model_path, device, run_id)
    except ValueError as exc:
        return give_up("failed", str(exc))
    if model.cfg.vocab_size < meta["vocab_size"]:
        raise ScalelabError(f"{run_dir / 'model.pt'}: vocabulary of {model.cfg.vocab_size} is smaller than the "
                            f"tokenizer's {meta['vocab_size']} in {data_dir / 'meta.json'}; retrain the run")

    loaded = time.perf_counter()
    perplexity = score_test_split(model, tokens, tokenizer, settings, data_dir / "tokenizer.json")
    scored = time.perf_counter()
    generations = generate_examples(model, tokens, tokenizer, meta, settings, data_dir)
    generated = time.perf_counter()
    scores = score_generations([g["hypothesis"] for g in generations], [g["reference"] for g in generations],
                               settings.bleu_tokenize)

    result = {
        "run": run_id, "status": "ok", **perplexity, **scores, "task": settings.task, "n_generations": len(generations),
        "eval_s": time.perf_counter() - started, "message": None, "settings": asdict(settings),
        # Where the time went: loading (data, tokenizer, checkpoint), test loss, generation, BLEU/ROUGE
        # (the last mostly importing rouge-score and with it nltk, once per process).
        "timings": {"load_s": loaded - started, "test_loss_s": scored - loaded, "generate_s": generated - scored,
                    "score_s": time.perf_counter() - generated},
    }
    write_text(run_dir / "generations.jsonl", "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in generations))
    write_json(run_dir / "eval.json", result)
    return result


# ----------------------------------------------------------------------------- CLI


def _test_tokens(value: str) -> int | None:
    """`--test-tokens 16384` (or 16K, 1.6e4); `all` (or none/null/0) means the whole test split."""
    if value.strip().lower() in ("all", "none", "null", "0"):
        return None
    from ..config.counts import parse_count

    try:
        return parse_count(value, "--test-tokens")
    except ScalelabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = EvalSettings()
    parser.add_argument("--run", required=True, type=Path, help="run directory, results/runs/{run}")
    parser.add_argument("--data", required=True, type=Path, help="data directory, results/data")
    parser.add_argument("--spec", default="{}", help="the eval settings as JSON (the workflow's way); flags below override")  # noqa: E501
    parser.add_argument("--test-tokens", type=_test_tokens, default=argparse.SUPPRESS,
                        help=f"test tokens to score, or 'all' (default {d.test_tokens})")
    parser.add_argument("--task", choices=TASKS, default=argparse.SUPPRESS, help=f"generation task (default {d.task})")
    parser.add_argument("--prompts", type=int, default=argparse.SUPPRESS, help=f"K generations (default {d.prompts})")
    parser.add_argument("--prompt-tokens", type=int, default=argparse.SUPPRESS,
                        help=f"P, continuation prompt length (default {d.prompt_tokens})")
    parser.add_argument("--max-new-tokens", type=int, default=argparse.SUPPRESS,
                        help=f"R, tokens generated per prompt at most (default {d.max_new_tokens})")
    parser.add_argument("--batch-size", type=int, default=argparse.SUPPRESS, help=f"(default {d.batch_size})")
    parser.add_argument("--bleu-tokenize", default=argparse.SUPPRESS, help=f"sacrebleu tokenizer (default {d.bleu_tokenize})")  # noqa: E501
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=argparse.SUPPRESS, help="(default auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run(args: argparse.Namespace) -> None:
    from ..files import loads_json

    values = loads_json(args.spec, "--spec")
    if not isinstance(values, dict):
        raise ScalelabError("--spec: expected the eval settings as a JSON object")
    flags = {k: v for k, v in vars(args).items() if k not in ("run", "data", "spec", "threads")}
    settings = EvalSettings.from_dict({**values, **flags})
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.run.is_dir():
        raise ScalelabError(f"{args.run}: run directory not found")
    result = evaluate_run(args.run, args.data, settings)
    if result["status"] == "ok":
        print(f"{result['run']}: test_loss {result['test_loss']:.4f}  ppl {result['test_ppl']:.2f}  "
              f"bpb {result['test_bpb']:.4f}  bleu {result['bleu'] if result['bleu'] is None else round(result['bleu'], 2)}  "  # noqa: E501
              f"rougeL {result['rougeL'] if result['rougeL'] is None else round(result['rougeL'], 4)}  "
              f"({result['eval_s']:.2f} s)")

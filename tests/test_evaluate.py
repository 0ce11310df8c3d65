"""The evaluate stage: exact test loss and bits per byte, KV-cached greedy decoding, BLEU/ROUGE, bad runs."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from tokenizers import Tokenizer

from scalelab import cli
from scalelab.evaluate.command import (
    EvalSettings,
    eval_windows,
    evaluate_run,
    test_loss as eval_test_loss,  # not collected as a test
    token_byte_lengths,
)
from scalelab.evaluate.generation import generate, greedy_generate
from scalelab.errors import ScalelabError
from scalelab.model import GPT, GPTConfig

EOT, SEP = "<|endoftext|>", "<|sep|>"
WORDS = "the quick brown fox jumps over a lazy dog while seven tired cats watch from the old red barn".split()


def tiny_model(vocab_size=50, context=16, n_layer=2, d_model=32, n_head=4, seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(vocab_size=vocab_size, context=context, n_layer=n_layer, d_model=d_model, n_head=n_head)
    ).eval()


def byte_level_tokenizer(texts, vocab_size=300) -> Tokenizer:
    """The production tokenizer (scalelab.data.tokenize.train_tokenizer), not a copy of it."""
    from scalelab.data.tokenize import train_tokenizer

    tok = train_tokenizer(texts, vocab_size)
    assert tok.token_to_id(EOT) == 0 and tok.token_to_id(SEP) == 1
    return tok


def corpus_texts(n_docs=120, seed=0) -> list[str]:
    """Repetitive documents (so a model trained for seconds continues them well), a few non-ASCII."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        start = int(rng.integers(0, 4))
        sentence = " ".join(WORDS[start:] + WORDS[:start])
        docs.append(f"{sentence}. {sentence}. café № {i % 7} — {sentence}.")
    return docs


def write_data(data_dir, tok: Tokenizer, test_docs: list[str], fmt="text") -> np.ndarray:
    data_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(data_dir / "tokenizer.json"))
    ids = []
    for doc in test_docs:
        ids += tok.encode(doc).ids + [0]
    tokens = np.array(ids, dtype=np.uint16)
    tokens.tofile(data_dir / "test.bin")
    meta = {
        "vocab_size": tok.get_vocab_size(),
        "dtype": "uint16",
        "eot_id": 0,
        "sep_id": 1,
        "format": fmt,
        "splits": {
            "test": {
                "documents": len(test_docs),
                "tokens": len(tokens),
                "bytes": sum(len(d.encode()) for d in test_docs),
            }
        },
    }
    (data_dir / "meta.json").write_text(json.dumps(meta))
    return tokens


def write_run(run_dir, model: GPT, status="ok") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"config": model.cfg.to_dict(), "state_dict": model.state_dict(), "run": run_dir.name}, run_dir / "model.pt"
    )
    (run_dir / "metrics.json").write_text(json.dumps({"run": run_dir.name, "status": status}))


def train_briefly(model: GPT, tokens: np.ndarray, steps=60, batch=16, lr=3e-3, seed=0) -> GPT:
    """A few seconds of AdamW on random windows: enough for the model to continue repetitive text."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(tokens.astype(np.int64))
    ctx = model.cfg.context
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - ctx - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + ctx + 1] for s in starts.tolist()])
        _, loss, _ = model(x[:, :-1], targets=x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose 10-100x when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = EvalSettings(test_tokens=None, prompts=12, prompt_tokens=8, max_new_tokens=8, batch_size=5, device="cpu")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A data directory and a briefly trained run (context 32) on a repetitive corpus."""
    root = tmp_path_factory.mktemp("eval")
    texts = corpus_texts()
    tok = byte_level_tokenizer(texts)
    tokens = write_data(root / "data", tok, texts[100:])
    train_tokens = np.array([i for t in texts[:100] for i in tok.encode(t).ids + [0]], dtype=np.int64)
    model = tiny_model(vocab_size=tok.get_vocab_size(), context=32, n_layer=2, d_model=48)
    write_run(root / "runs" / "trained", train_briefly(model, train_tokens))
    return {"root": root, "data": root / "data", "run": root / "runs" / "trained", "tok": tok, "tokens": tokens}


# ----------------------------------------------------------------------------- test loss and bytes


def test_test_loss_matches_hand_arithmetic():
    model = tiny_model(vocab_size=11, context=4, d_model=16, n_head=2)
    tokens = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7])  # 13 targets: windows of 4, 4, 4, 1
    windows = eval_windows(len(tokens), context=4)
    assert windows == [(0, 4), (4, 4), (8, 4), (12, 1)]
    total, n = eval_test_loss(model, tokens, context=4, batch_size=2, windows=windows)
    by_hand = 0.0
    for start, length in windows:
        x = torch.tensor(tokens[start : start + length])[None]
        with torch.no_grad():
            logits = model(x)[0][0].double()
        for t in range(length):
            target = int(tokens[start + t + 1])
            by_hand -= math.log(math.exp(logits[t, target]) / sum(math.exp(v) for v in logits[t].tolist()))
    assert n == 13
    assert total == pytest.approx(by_hand, rel=1e-5)
    # The default windows are the same tiling; batch size does not change the result.
    assert eval_test_loss(model, tokens, 4, batch_size=7) == pytest.approx((by_hand, 13), rel=1e-5)


def test_eval_windows_spread_deterministically():
    windows = eval_windows(10_001, context=100, test_tokens=1_000)
    assert windows == eval_windows(10_001, context=100, test_tokens=1_000)
    assert len(windows) == 10 and all(n == 100 for _, n in windows)
    starts = [s for s, _ in windows]
    assert starts == sorted(set(starts)) and starts[0] == 0 and starts[-1] >= 9_000  # spread over the split
    assert all(s % 100 == 0 for s in starts)  # on the grid of non-overlapping windows
    assert sum(n for _, n in eval_windows(10_001, 100, test_tokens=None)) == 10_000
    assert sum(n for _, n in eval_windows(10_001, 100, test_tokens=50_000)) == 10_000


def test_token_byte_lengths_are_exact():
    texts = ["naïve café — 東京 🚀 ok", "plain ascii text", "Ünïcödé ümläuts and emoji 🎉🎉"]
    tok = byte_level_tokenizer(corpus_texts(30) + texts, vocab_size=280)
    lengths = token_byte_lengths(tok)
    for text in texts:
        ids = tok.encode(text).ids
        assert lengths[ids].sum() == len(text.encode("utf-8"))
    # Special tokens are not text; a split inside a multi-byte character still adds up.
    assert lengths[0] == 0 and lengths[1] == 0
    ids = tok.encode("東京🚀").ids
    assert sum(lengths[ids[:1]]) + sum(lengths[ids[1:]]) == len("東京🚀".encode())


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_greedy_decoding_equals_uncached(dtype):
    model = tiny_model(vocab_size=64, context=32, n_layer=3, d_model=48, n_head=4, seed=1).to(dtype)
    with torch.no_grad():  # larger weights than the 0.02 init, so greedy choices are not near-ties
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    prompts = torch.randint(2, 64, (6, 9), generator=torch.Generator().manual_seed(0))
    cached = greedy_generate(model, prompts, 23, use_cache=True)
    uncached = greedy_generate(model, prompts, 23, use_cache=False)
    assert cached.shape == (6, 23)
    assert torch.equal(cached, uncached)
    assert len(set(cached.flatten().tolist())) > 5  # not a degenerate repetition of one token
    # With an end token: identical, and padded with it after it appears.
    eos = int(cached[0, 5])
    cached_eos = greedy_generate(model, prompts, 23, eos_id=eos, use_cache=True)
    assert torch.equal(cached_eos, greedy_generate(model, prompts, 23, eos_id=eos, use_cache=False))
    first = cached_eos[0].tolist().index(eos)
    assert all(t == eos for t in cached_eos[0, first:].tolist())


def test_generate_handles_mixed_prompt_lengths_and_context():
    model = tiny_model(vocab_size=40, context=12, seed=2)
    prompts = [[5, 6, 7], [8, 9], [5, 6, 7], list(range(2, 12)), list(range(2, 14))]
    out = generate(model, prompts, max_new_tokens=6, eos_id=None, batch_size=2)
    one_by_one = [
        greedy_generate(model, torch.tensor([p]), min(6, 12 - len(p)))[0].tolist() if len(p) < 12 else []
        for p in prompts
    ]
    assert out == one_by_one
    assert [len(o) for o in out] == [6, 6, 6, 2, 0]  # limited by the context
    with pytest.raises(ValueError, match="context"):
        greedy_generate(model, torch.tensor([list(range(10))]), 3)


# ----------------------------------------------------------------------------- one run


def test_eval_json_scores_recompute_from_generations(study):
    result = evaluate_run(study["run"], study["data"], SMALL)
    on_disk = json.loads((study["run"] / "eval.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["message"] is None
    for key in (
        "run",
        "status",
        "test_loss",
        "test_ppl",
        "test_bpb",
        "test_tokens",
        "test_bytes",
        "bleu",
        "bleu_signature",
        "rouge1",
        "rouge2",
        "rougeL",
        "task",
        "n_generations",
        "eval_s",
    ):
        assert key in on_disk
    assert on_disk["test_loss"] == pytest.approx(result["test_loss"])
    gens = [json.loads(line) for line in (study["run"] / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == on_disk["n_generations"] == 12
    assert all(set(g) == {"prompt", "reference", "hypothesis"} for g in gens)
    hyps, refs = [g["hypothesis"] for g in gens], [g["reference"] for g in gens]
    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a")
    assert on_disk["bleu"] == pytest.approx(bleu.score, abs=1e-9)
    assert on_disk["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, h) for r, h in zip(refs, hyps)]
    for key in ("rouge1", "rouge2", "rougeL"):
        assert on_disk[key] == pytest.approx(np.mean([s[key].fmeasure for s in scores]), abs=1e-12)
        assert 0 <= on_disk[key] <= 1
    assert on_disk["bleu"] > 10  # the trained model continues the repetitive text: the check is not 0 == 0
    # Perplexity over the whole split (test_tokens None), bytes of exactly the predicted tokens.
    tokens = study["tokens"]
    assert on_disk["test_tokens"] == len(tokens) - 1
    assert on_disk["test_bytes"] == token_byte_lengths(study["tok"])[tokens[1:].astype(np.int64)].sum()
    n_text_bytes = sum(len(d.encode()) for d in corpus_texts()[100:])
    first_bytes = token_byte_lengths(study["tok"])[int(tokens[0])]
    assert on_disk["test_bytes"] == n_text_bytes - first_bytes  # all document text but the unpredicted first token
    assert on_disk["test_ppl"] == pytest.approx(math.exp(on_disk["test_loss"]))
    assert on_disk["test_bpb"] == pytest.approx(
        on_disk["test_loss"] * on_disk["test_tokens"] / math.log(2) / on_disk["test_bytes"]
    )


def test_evaluation_is_deterministic(study, tmp_path):
    settings = EvalSettings(test_tokens=200, prompts=7, prompt_tokens=8, max_new_tokens=10, batch_size=3, device="cpu")
    first = evaluate_run(study["run"], study["data"], settings)
    gens = (study["run"] / "generations.jsonl").read_text()
    second = evaluate_run(study["run"], study["data"], settings)
    assert (study["run"] / "generations.jsonl").read_text() == gens
    for key in ("eval_s", "timings"):  # wall times are the only difference allowed
        first.pop(key), second.pop(key)
    assert first == second
    assert first["test_tokens"] == 224  # 200 rounded up to whole windows of the context (32)


def test_cli_writes_outputs(study, tmp_path, capsys):
    code = cli.main(
        [
            "evaluate",
            "--run",
            str(study["run"]),
            "--data",
            str(study["data"]),
            "--test-tokens",
            "all",
            "--prompts",
            "4",
            "--prompt-tokens",
            "8",
            "--max-new-tokens",
            "8",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    result = json.loads((study["run"] / "eval.json").read_text())
    assert result["n_generations"] == 4 and result["settings"]["test_tokens"] is None
    assert "test_loss" in capsys.readouterr().out
    # Prompt + new tokens beyond the context is a one-line error.
    code = cli.main(
        [
            "evaluate",
            "--run",
            str(study["run"]),
            "--data",
            str(study["data"]),
            "--prompt-tokens",
            "30",
            "--max-new-tokens",
            "8",
            "--device",
            "cpu",
        ]
    )
    assert code == 1
    assert "exceed the model context of 32" in capsys.readouterr().err


def test_settings_from_the_config_block():
    settings = EvalSettings.from_dict({"test_tokens": "16K", "task": "pairs", "prompts": 8})
    assert settings.test_tokens == 16_000 and settings.task == "pairs" and settings.prompts == 8
    assert settings.max_new_tokens == EvalSettings().max_new_tokens
    assert EvalSettings.from_dict({"test_tokens": None}).test_tokens is None
    with pytest.raises(ScalelabError, match="unknown keys"):
        EvalSettings.from_dict({"test_token": 5})
    with pytest.raises(ScalelabError, match="task"):
        EvalSettings.from_dict({"task": "translate"}).check()


@pytest.mark.parametrize("problem", ["diverged", "missing", "corrupt", "wrong_keys", "no_metrics"])
def test_bad_runs_get_null_metrics_not_a_crash(study, tmp_path, capsys, problem):
    run_dir = tmp_path / "runs" / f"xs-1K-s0-{problem}"
    write_run(run_dir, tiny_model(vocab_size=300, context=32), status="diverged" if problem == "diverged" else "ok")
    if problem == "missing":
        (run_dir / "model.pt").unlink()
    elif problem == "corrupt":
        data = (run_dir / "model.pt").read_bytes()
        (run_dir / "model.pt").write_bytes(data[: len(data) // 2])
    elif problem == "wrong_keys":
        torch.save({"config": {"vocab_size": 300}, "state_dict": {}}, run_dir / "model.pt")
    elif problem == "no_metrics":
        (run_dir / "metrics.json").unlink()
    code = cli.main(["evaluate", "--run", str(run_dir), "--data", str(study["data"]), "--device", "cpu"])
    assert code == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["status"] == ("diverged" if problem == "diverged" else "failed")
    assert all(result[k] is None for k in ("test_loss", "test_ppl", "test_bpb", "bleu", "rouge1", "rouge2", "rougeL"))
    assert result["message"]
    assert (run_dir / "generations.jsonl").read_text() == ""
    err = capsys.readouterr().err
    assert "not evaluated" in err and "Traceback" not in err


def test_bad_data_is_a_one_line_error(study, tmp_path, capsys):
    code = cli.main(["evaluate", "--run", str(study["run"]), "--data", str(tmp_path / "nowhere"), "--device", "cpu"])
    assert code == 1
    assert "meta.json" in capsys.readouterr().err
    code = cli.main(
        ["evaluate", "--run", str(study["run"]), "--data", str(study["data"]), "--task", "pairs", "--device", "cpu"]
    )
    assert code == 1
    assert "pairs corpus" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a tiny pairs study

SOURCE_WORDS = "ka lo mi su te ra no pi vu ze".split()
TARGET_WORDS = "red blue green black white pink gold grey brown cyan".split()  # ka -> red, lo -> blue, ...


def write_pairs_corpus(path, n_pairs=1500, seed=0) -> None:
    """A toy translation task: 3-6 distinct source words in a fixed order, each mapped to its target word.

    The fixed word order lets a 2-layer model learn the task in a couple of hundred steps by content
    alone (next target = the translation of the next source word present); the ~800 distinct
    pairs leave the test split with pairs never seen in training.
    """
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for _ in range(n_pairs):
            idx = np.sort(rng.choice(len(SOURCE_WORDS), size=int(rng.integers(3, 7)), replace=False))
            source = " ".join(SOURCE_WORDS[i] for i in idx)
            target = " ".join(TARGET_WORDS[i] for i in idx)
            f.write(json.dumps({"source": source, "target": target}) + "\n")


def test_tiny_pairs_study_beats_an_untrained_model(tmp_path):
    from scalelab.data.tokenize import tokenize
    from scalelab.train import train_run

    write_pairs_corpus(tmp_path / "pairs.jsonl")
    data_cfg = {
        "source": {"files": [str(tmp_path / "pairs.jsonl")], "text_field": "text"},
        "pairs": {"source_field": "source", "target_field": "target"},
        "split": {"val": 0.05, "test": 0.05},
        "tokenizer": {"vocab_size": 300},
        "allow_repeat": True,
    }
    meta = tokenize(data_cfg, tmp_path / "data")
    assert meta["format"] == "pairs" and meta["sep_id"] == 1
    spec = {
        "run": "pairs-205K-s0",
        "model": "s",
        "n_layer": 2,
        "d_model": 64,
        "n_head": 4,
        "tokens": 200 * 32 * 32,
        "seed": 0,
        "context": 32,
        "batch_size": 32,
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup_tokens": 0.05,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.1,
        "beta2": 0.95,
        "grad_clip": 1.0,
        "precision": "32-true",
        "accelerator": "cpu",
        "devices": 1,
        "compile": False,
        "val_tokens": 1024,
        "val_evals": 1,
        "checkpoint_every": 1.0,
        "isoflop_budget": None,
    }
    metrics = train_run(spec, tmp_path / "data", tmp_path / "runs" / spec["run"], threads=1, allow_repeat=True)
    assert metrics["status"] == "ok" and metrics["steps"] == 200

    untrained = GPT(GPTConfig(vocab_size=meta["vocab_size"], context=32, n_layer=2, d_model=64, n_head=4))
    write_run(tmp_path / "runs" / "untrained", untrained)
    settings = EvalSettings(test_tokens=None, task="pairs", prompts=64, max_new_tokens=24, batch_size=32, device="cpu")
    trained = evaluate_run(tmp_path / "runs" / spec["run"], tmp_path / "data", settings)
    baseline = evaluate_run(tmp_path / "runs" / "untrained", tmp_path / "data", settings)

    assert trained["n_generations"] == baseline["n_generations"] == min(64, meta["splits"]["test"]["documents"])
    assert trained["test_loss"] < baseline["test_loss"] - 2
    assert trained["bleu"] > baseline["bleu"] + 30, (trained["bleu"], baseline["bleu"])
    assert trained["rougeL"] > baseline["rougeL"] + 0.3
    gens = [
        json.loads(line) for line in (tmp_path / "runs" / spec["run"] / "generations.jsonl").read_text().splitlines()
    ]
    assert all(g["prompt"].split()[0] in SOURCE_WORDS and g["reference"].split()[0] in TARGET_WORDS for g in gens)
    assert trained["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu([g["hypothesis"] for g in gens], [[g["reference"] for g in gens]]).score
    )

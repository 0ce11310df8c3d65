"""Greedy generation with the model's key/value cache, the prompts it completes, and the text
metrics of what it wrote (BLEU with sacrebleu, ROUGE with rouge-score): see scalelab.evaluate.command."""

from __future__ import annotations

import sys

import numpy as np
import torch

from ..model import GPT


# ----------------------------------------------------------------------------- generation


@torch.no_grad()
def greedy_generate(
    model: GPT,
    prompts: torch.Tensor,
    max_new_tokens: int,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Greedy continuation of equal-length prompts (batch, P) -> new tokens (batch, max_new_tokens).

    With the cache each new token costs one single-position forward step; without it, a full
    pass over prompt + generated tokens. After `eos_id` a row is padded with `eos_id`; decoding
    stops early once every row has ended.
    """
    batch, prompt_len = prompts.shape
    if prompt_len + max_new_tokens > model.cfg.context:
        raise ValueError(
            f"prompt of {prompt_len} + {max_new_tokens} new tokens exceeds the context of {model.cfg.context}"
        )
    was_training = model.training
    model.eval()
    out = torch.empty(batch, 0, dtype=torch.long, device=prompts.device)
    done = torch.zeros(batch, dtype=torch.bool, device=prompts.device)
    cache = None
    next_input = prompts
    for _ in range(max_new_tokens):
        if use_cache:
            logits, _, cache = model(next_input, cache=cache)
        else:
            logits, _, _ = model(torch.cat([prompts, out], dim=1))
        next_token = logits[:, -1].argmax(dim=-1)
        if eos_id is not None:
            next_token = torch.where(done, torch.full_like(next_token, eos_id), next_token)
            done |= next_token == eos_id
        out = torch.cat([out, next_token[:, None]], dim=1)
        next_input = next_token[:, None]
        if eos_id is not None and bool(done.all()):
            break
    if out.shape[1] < max_new_tokens:  # every row ended early
        out = torch.cat([out, out.new_full((batch, max_new_tokens - out.shape[1]), eos_id)], dim=1)
    model.train(was_training)
    return out


def generate(
    model: GPT,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_id: int | None,
    batch_size: int,
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy generations for prompts of any length, each cut at `eos_id` (excluded).

    The model has absolute positions and no padding mask, so only prompts of equal length share
    a batch; each prompt gets at most min(max_new_tokens, context - len(prompt)) new tokens.
    """
    device = next(model.parameters()).device
    results: list[list[int]] = [[] for _ in prompts]
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, indices in sorted(by_length.items()):
        n_new = min(max_new_tokens, model.cfg.context - length)
        if n_new < 1:
            continue
        for b in range(0, len(indices), batch_size):
            chunk = indices[b : b + batch_size]
            batch = torch.tensor([prompts[i] for i in chunk], dtype=torch.long, device=device)
            new = greedy_generate(model, batch, n_new, eos_id=eos_id, use_cache=use_cache).tolist()
            for i, row in zip(chunk, new):
                results[i] = row[: row.index(eos_id)] if eos_id is not None and eos_id in row else row
    return results


def _documents(tokens: np.ndarray, eot_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the documents in a token stream, each end at its end-of-text token."""
    ends = np.flatnonzero(tokens == eot_id)
    if len(ends) == 0 or ends[-1] != len(tokens) - 1:
        ends = np.append(ends, len(tokens))  # a tail without end-of-text still counts
    starts = np.concatenate([[0], ends[:-1] + 1])
    return starts, ends


def _spread(n_items: int, k: int) -> np.ndarray:
    """k indices evenly spread over range(n_items) (all of them when k >= n_items)."""
    if k >= n_items:
        return np.arange(n_items)
    return (np.arange(k) * n_items) // k


def continuation_prompts(tokens: np.ndarray, eot_id: int, k: int, prompt_tokens: int, new_tokens: int):
    """K (prompt, reference) id lists: spans of P + R tokens inside documents, spread over the split."""
    span = prompt_tokens + new_tokens
    starts, ends = _documents(tokens, eot_id)
    n_spans = (ends - starts) // span  # non-overlapping spans per document
    doc_of_span = np.repeat(np.arange(len(starts)), n_spans)
    first_span = np.cumsum(n_spans) - n_spans
    offset = (np.arange(int(n_spans.sum())) - first_span[doc_of_span]) * span
    span_starts = starts[doc_of_span] + offset
    pairs = []
    for s in span_starts[_spread(len(span_starts), k)]:
        ids = tokens[s : s + span].astype(np.int64).tolist()
        pairs.append((ids[:prompt_tokens], ids[prompt_tokens:]))
    return pairs


def pairs_prompts(tokens: np.ndarray, eot_id: int, sep_id: int, k: int):
    """K (source + sep, target) id lists from `source <sep> target <eot>` documents, spread over the split."""
    starts, ends = _documents(tokens, eot_id)
    examples = []
    for i in _spread(len(starts), k):
        doc = tokens[starts[i] : ends[i]].astype(np.int64).tolist()
        if sep_id in doc:  # every document of a pairs corpus has one
            cut = doc.index(sep_id) + 1
            examples.append((doc[:cut], doc[cut:]))
    return examples


def _import_rouge_scorer():
    """`rouge_score.rouge_scorer`, imported without letting nltk pull in scipy.

    rouge-score imports all of nltk for its Porter stemmer, and nltk imports scipy.stats when it
    can: CPU time per process that ROUGE never uses, more than all the rest of evaluating a small
    run (docs/benchmarks.md, the cosine study's evaluation). nltk treats scipy as optional, so hide
    it during the import (and only then).
    """
    if "scipy" in sys.modules or "nltk" in sys.modules:
        from rouge_score import rouge_scorer

        return rouge_scorer
    sys.modules["scipy"] = None  # makes `import scipy...` raise ImportError
    try:
        from rouge_score import rouge_scorer
    except ImportError:  # a future nltk that needs scipy: pay for the plain import
        rouge_scorer = None
    finally:
        if sys.modules.get("scipy", 0) is None:
            del sys.modules["scipy"]
    if rouge_scorer is None:
        from rouge_score import rouge_scorer
    return rouge_scorer


def score_generations(hypotheses: list[str], references: list[str], bleu_tokenize: str = "13a") -> dict:
    """Corpus BLEU (sacrebleu, 0-100) and mean ROUGE-1/2/L F1 (rouge-score, Porter stemmer)."""
    if not hypotheses:
        return {"bleu": None, "bleu_signature": None, "rouge1": None, "rouge2": None, "rougeL": None}
    from sacrebleu.metrics import BLEU

    rouge_scorer = _import_rouge_scorer()
    bleu = BLEU(tokenize=bleu_tokenize)  # what sacrebleu.corpus_bleu runs, kept for its signature
    bleu_score = bleu.corpus_score(hypotheses, [references]).score
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, hyp) for ref, hyp in zip(references, hypotheses)]
    rouge = {k: float(np.mean([s[k].fmeasure for s in scores])) for k in ("rouge1", "rouge2", "rougeL")}
    return {"bleu": bleu_score, "bleu_signature": str(bleu.get_signature()), **rouge}

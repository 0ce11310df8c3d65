"""Peak memory and speed of the tokenize stage, in-memory build against streaming build, at 1
and 2 tokenizers threads, for one corpus laid out two ways: one large file (split into documents
by data.source.max_document_bytes) and many small files; optionally (--unsplit-mb) a smaller
file as one document (max_document_bytes: 0, the layout that used to exhaust memory).

    python bench/tokenize_memory.py [--mb 1000] [--files 10000] [--layouts one,many]
                                    [--builds memory,stream] [--threads 1,2] [--unsplit-mb 0]

Each run tokenizes in a fresh process (scalelab.data.command.tokenize_corpus, as `scalelab
tokenize` runs it, with the build forced); its peak resident memory is that process's ru_maxrss.
Both builds of a layout must give the same tokenizer and corpus fingerprints and token counts
(printed). The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def words(seed: int = 0, n: int = 5000) -> list[str]:
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    return ["".join(rng.choice(letters[: rng.randint(6, 26)]) for _ in range(rng.randint(2, 9))) for _ in range(n)]


def paragraphs(total_bytes: int, seed: int = 0):
    """Paragraphs of sentences over a Zipf-like vocabulary, until `total_bytes`."""
    rng, vocab = random.Random(seed), words(seed)
    # cumulative weights once (the same draws as weights=, without summing 5,000 weights a sentence)
    cum_weights = list(itertools.accumulate(1 / (i + 1) for i in range(len(vocab))))
    made = 0
    while made < total_bytes:
        sentences = [
            " ".join(rng.choices(vocab, cum_weights=cum_weights, k=rng.randint(6, 16))).capitalize() + "."
            for _ in range(rng.randint(3, 8))
        ]
        text = " ".join(sentences) + "\n\n"
        made += len(text)
        yield text


def write_one_file(folder: Path, mb: float) -> None:
    folder.mkdir(parents=True)
    with open(folder / "all.txt", "w") as f:
        for text in paragraphs(int(mb * 1e6)):
            f.write(text)


def write_many_files(folder: Path, mb: float, files: int) -> None:
    folder.mkdir(parents=True)
    per_file = int(mb * 1e6 / files)
    source = paragraphs(int(mb * 1e6) + files * 2000)
    for i in range(files):
        text, size = [], 0
        while size < per_file:
            piece = next(source)
            text.append(piece)
            size += len(piece)
        (folder / f"doc{i:05d}.txt").write_text("".join(text))


def measure(corpus: Path, out: Path, max_document_bytes: int, build: str | None = None, threads: int = 1) -> dict:
    """Tokenize in a fresh process with `threads` tokenizers threads; its peak RSS, wall time and
    token counts. build: "memory" (scalelab.data.tokenize), "stream" (scalelab.data.stream) or
    None (as `scalelab tokenize` chooses for this corpus)."""
    code = f"""
import json, resource, time
from pathlib import Path
from scalelab.data.command import tokenize_corpus
cfg = {{"source": {{"files": [{str(corpus / "*.txt")!r}], "text_field": "text", "sample_by": "document",
                   "max_document_bytes": {max_document_bytes}}},
       "pairs": None, "split": {{"val": 0.01, "test": 0.01}}, "tokenizer": {{"vocab_size": 2048}}}}
start = time.perf_counter()
meta = tokenize_corpus(cfg, Path({str(out)!r}), build={build!r})
seconds = time.perf_counter() - start
tokens = sum(s["tokens"] for s in meta["splits"].values())
print(json.dumps({{"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds),
                  "build": meta["corpus"].get("build", "memory"), "documents": meta["corpus"]["documents"],
                  "corpus_mb": round(meta["corpus"]["file_bytes"] / 1e6, 1),
                  "val_tokens": meta["splits"]["val"]["tokens"], "test_tokens": meta["splits"]["test"]["tokens"],
                  "tokenizer": meta["tokenizer"]["fingerprint"], "corpus": meta["corpus"]["fingerprint"]}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={
            "PYTHONPATH": str(REPO / "src"),
            "PATH": "/usr/bin:/bin",
            "TOKENIZERS_PARALLELISM": "true",
            "RAYON_NUM_THREADS": str(threads),
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(out.parent / "hf"),
        },
    )
    if proc.returncode != 0:
        return {"failed": (proc.stderr.strip().splitlines() or ["killed"])[-1][:200], "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(tmp: Path, args) -> dict:
    """name -> (corpus folder, max_document_bytes, build, threads); writes the corpora."""
    runs = {}
    layouts = {
        "one": (f"one_file_{args.mb:g}mb", lambda f: write_one_file(f, args.mb)),
        "many": (f"many_files_{args.files}_{args.mb:g}mb", lambda f: write_many_files(f, args.mb, args.files)),
    }
    for layout in args.layouts.split(","):
        name, write = layouts[layout]
        write(tmp / layout)
        for build in args.builds.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                runs[f"{name}_{build}_{threads}t"] = (tmp / layout, 1_000_000, build, threads)
    if args.unsplit_mb:
        write_one_file(tmp / "one-small", args.unsplit_mb)
        runs[f"one_file_{args.unsplit_mb:g}mb_split"] = (tmp / "one-small", 1_000_000, "memory", 1)
        runs[f"one_file_{args.unsplit_mb:g}mb_unsplit"] = (tmp / "one-small", 0, "memory", 1)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1000, help="corpus size of the one-file and many-file layouts")
    parser.add_argument("--files", type=int, default=10_000, help="files of the many-file layout")
    parser.add_argument("--layouts", default="one,many", help="one (one large file), many (--files files), or both")
    parser.add_argument("--builds", default="memory,stream", help="tokenize builds to measure: memory, stream")
    parser.add_argument("--threads", default="1,2", help="tokenizers threads (RAYON_NUM_THREADS) to measure")
    parser.add_argument(
        "--unsplit-mb",
        type=float,
        default=0,
        help="also a corpus of this size as one unsplit document, in memory (0: not measured)",
    )
    args = parser.parse_args()
    result = {"machine_cpus": len(__import__("os").sched_getaffinity(0)), "mb": args.mb}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (corpus, limit, build, threads) in plan(tmp, args).items():
            started = time.perf_counter()
            result[name] = measure(corpus, tmp / f"out-{name}", limit, build, threads)
            print(f"{name}: {result[name]} ({time.perf_counter() - started:.0f} s with start-up)", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

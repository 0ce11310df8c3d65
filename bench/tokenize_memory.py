"""Peak memory and speed of the tokenize stage for one corpus laid out three ways: one large
file (split into documents by data.source.max_document_bytes), the same file as one document
(max_document_bytes: 0, the layout that used to exhaust memory), and many small files.

    python bench/tokenize_memory.py [--mb 50] [--files 10000] [--unsplit-mb 10]

Each layout is tokenized in a fresh process (scalelab.data.tokenize.tokenize, as `scalelab tokenize`
runs it); its peak resident memory is that process's ru_maxrss. The unsplit one-file layout is
measured on a smaller corpus (--unsplit-mb), since it grows fastest. The last line printed is a
JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
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
    weights = [1 / (i + 1) for i in range(len(vocab))]
    made = 0
    while made < total_bytes:
        sentences = [" ".join(rng.choices(vocab, weights, k=rng.randint(6, 16))).capitalize() + "."
                     for _ in range(rng.randint(3, 8))]
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


def measure(corpus: Path, out: Path, max_document_bytes: int) -> dict:
    """Tokenize in a fresh process; its peak RSS, wall time and token counts."""
    code = f"""
import json, resource, time
from pathlib import Path
from scalelab.data import tokenize as data
cfg = {{"source": {{"files": [{str(corpus / '*.txt')!r}], "text_field": "text", "sample_by": "document",
                   "max_document_bytes": {max_document_bytes}}},
       "pairs": None, "split": {{"val": 0.01, "test": 0.01}}, "tokenizer": {{"vocab_size": 2048}}}}
start = time.perf_counter()
meta = data.tokenize(cfg, Path({str(out)!r}))
seconds = time.perf_counter() - start
tokens = sum(s["tokens"] for s in meta["splits"].values())
print(json.dumps({{"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds),
                  "documents": meta["corpus"]["documents"], "corpus_mb": round(meta["corpus"]["file_bytes"] / 1e6, 1),
                  "val_tokens": meta["splits"]["val"]["tokens"], "test_tokens": meta["splits"]["test"]["tokens"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "true",
                               "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(out.parent / "hf")})
    if proc.returncode != 0:
        return {"failed": (proc.stderr.strip().splitlines() or ["killed"])[-1][:200], "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50, help="corpus size for the split one-file and many-file layouts")
    parser.add_argument("--files", type=int, default=10_000, help="files of the many-file layout")
    parser.add_argument("--unsplit-mb", type=float, default=10, help="corpus size for the unsplit one-file layout")
    args = parser.parse_args()
    result = {"machine_cpus": len(__import__("os").sched_getaffinity(0))}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_one_file(tmp / "one", args.mb)
        write_one_file(tmp / "one-small", args.unsplit_mb)
        write_many_files(tmp / "many", args.mb, args.files)
        runs = {
            f"one_file_{args.mb:g}mb_split": (tmp / "one", 1_000_000),
            f"many_files_{args.files}_{args.mb:g}mb": (tmp / "many", 1_000_000),
            f"one_file_{args.unsplit_mb:g}mb_split": (tmp / "one-small", 1_000_000),
            f"one_file_{args.unsplit_mb:g}mb_unsplit": (tmp / "one-small", 0),
        }
        for name, (corpus, limit) in runs.items():
            started = time.perf_counter()
            result[name] = measure(corpus, tmp / f"out-{name}", limit)
            print(f"{name}: {result[name]} ({time.perf_counter() - started:.0f} s with start-up)", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

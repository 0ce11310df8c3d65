"""`scalelab tokenize`: the tokenize stage, by the build scalelab.data.stages chooses for the
corpus, as the workflow gives the job that build's code fingerprint: in memory
(scalelab.data.tokenize, a small corpus) or streaming (scalelab.data.stream, a large one).
Both write the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ScalelabError
from ..files import loads_json

BUILDS = ("memory", "stream")


def tokenize_corpus(
    data_cfg: dict,
    out_dir: Path,
    require: dict[str, int] | None = None,
    base: Path = Path("."),
    build: str | None = None,
) -> dict:
    """Tokenize `data_cfg`'s corpus into out_dir; meta.json's dict. `build`: None (by the corpus, as
    the workflow chooses), "memory" or "stream" (benchmarks and tests)."""
    from ..config.load import source_files
    from .stages import tokenize_stage
    from .stream import tokenize_streaming
    from .tokenize import tokenize

    if build is None:
        build = (
            "stream"
            if tokenize_stage(data_cfg, source_files({"data": data_cfg}, base)) == "tokenize_stream"
            else "memory"
        )
    if build not in BUILDS:
        raise ScalelabError(f"tokenize: build {build!r} is not one of {', '.join(BUILDS)}")
    return (tokenize_streaming if build == "stream" else tokenize)(data_cfg, Path(out_dir), require, base)


def add_arguments(parser) -> None:
    parser.add_argument("--spec", required=True, help="the data section of the config, as JSON")
    parser.add_argument("--out", required=True, type=Path, help="output folder (results/data)")
    parser.add_argument(
        "--require",
        default="{}",
        help='tokens each split must hold, as JSON: {"train": N, "val": N, "test": N} '
        "(a check: the workflow passes what the grid needs)",
    )


def run(args) -> None:
    data_cfg = loads_json(args.spec, "--spec")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    # the job's threads: Snakemake sets OMP_NUM_THREADS to them; tokenizers' pool reads RAYON_NUM_THREADS
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        os.environ.setdefault("RAYON_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    require = loads_json(args.require, "--require")
    if not isinstance(require, dict) or not all(isinstance(v, int) for v in require.values()):
        raise ScalelabError('--require: expected a JSON object of token counts, e.g. {"train": 100000}')
    meta = tokenize_corpus(data_cfg, args.out, require)
    from ..config.load import source_files
    from . import content

    # the corpus by content, beside its identity (which stays as it was): scalelab.data.content
    content.record(Path(args.out) / "meta.json", data_cfg, source_files({"data": data_cfg}))
    s = meta["splits"]
    print(
        f"tokenized {meta['corpus']['documents']:,} documents ({meta['corpus']['bytes'] / 1e6:.1f} MB) "
        f"in {meta['corpus']['tokenize_s']:.1f} s: train {s['train']['tokens']:,}, val {s['val']['tokens']:,}, "
        f"test {s['test']['tokens']:,} tokens; {meta['bytes_per_token']['train']:.2f} bytes/token"
    )

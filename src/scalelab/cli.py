"""`scalelab <stage> ...`: one subcommand per stage, each owned by its own module.

Each stage module defines `add_arguments(parser)` and `run(args)`. Modules are imported
lazily so that `scalelab fit` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

STAGES = {
    "tokenize": ("scalelab.data.command", "train the BPE tokenizer and write the token memmaps"),
    "train": ("scalelab.train.runs", "train one grid point with Lightning"),
    "trunk": ("scalelab.train.trunks", "train one WSD trunk segment (schedule: wsd)"),
    "evaluate": ("scalelab.evaluate.command", "test perplexity, bits per byte, BLEU and ROUGE for one run"),
    "aggregate": ("scalelab.evaluate.aggregate", "collect every run into results/metrics.csv"),
    "fit": ("scalelab.fit", "fit scaling laws to a metrics CSV"),
    "curves": ("scalelab.curves", "fit schedule-aware laws to the runs' loss curves; predict any run's final loss"),
    "suggest": ("scalelab.suggest.command", "the next runs that most narrow the interval of the compute-optimal N"),
    "report": ("scalelab.report", "plots, tables and HTML for a study"),
    "track": ("scalelab.loggers", "add each run's evaluation to the trackers it trained with"),
    "check": ("scalelab.plan.check", "validate a config file and list its runs"),
    "prune": ("scalelab.plan.prune", "list (or --delete) store and trunk entries that no current run needs"),
}
# The job commands a study runs dozens of: run from the command line, each goes through a warm
# worker that has imported torch and Lightning once (scalelab.warm; SCALELAB_WARM=0: never).
WARM_STAGES = ("train", "trunk", "evaluate")
# The stages whose outputs record their spec and code once written (train records its own).
IDENTITY_STAGES = ("evaluate", "fit", "suggest", "report")


def version_text() -> str:
    """`scalelab --version`: the version and each stage's code fingerprint (the hash a run's
    outputs depend on; a change reruns that stage), so two installs can be compared."""
    from .version import __version__
    from .store.fingerprint import STAGE_CODE, code_fingerprint

    lines = [f"scalelab {__version__}", "code fingerprints:"]
    lines += [f"  {stage:<10} {code_fingerprint(stage)}" for stage in STAGE_CODE]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] and sys.argv[1] in WARM_STAGES:
        from . import warm

        code = warm.run_in_worker(
            sys.argv, entry="scalelab.cli:main", preload=[STAGES[stage][0] for stage in WARM_STAGES]
        )
        if code is not None:
            return code
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(version_text())
        return 0
    top = argparse.ArgumentParser(prog="scalelab", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="store_true", help="print the version and the code fingerprints")
    top.add_argument("stage", choices=sorted(STAGES), help="the stage to run")
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        top.print_help() if not argv or argv[0] in ("-h", "--help") else top.parse_args(argv[:1])
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    stage, rest = argv[0], argv[1:]
    module_name, help_text = STAGES[stage]
    if stage == "fit" and "numpy" not in sys.modules:
        # The fit's workers are processes; one BLAS thread each (scalelab.fit says why). Snakemake
        # exports OPENBLAS_NUM_THREADS=<the job's threads>, which slowed the default study's fit
        # job about threefold (docs/benchmarks.md, "Where a study's time goes").
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"scalelab {stage}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)

    from .errors import ScalelabError

    try:
        module.run(args)
        if stage in IDENTITY_STAGES:  # what decided the outputs, beside them (scalelab.store.identity)
            from .store import identity

            identity.record(stage, args)
    except ScalelabError as exc:
        print(f"scalelab {stage}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"scalelab {stage}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The study's workflow plan: everything the Snakefile computes, built once per invocation.

`StudyPlan.build(config, ...)` checks the config and the corpus, expands the grid, plans the WSD
families, takes the code fingerprints and finds finished outputs that disagree with the config
(`stale`) or went missing (`rebuild`). The rules then only look values up: each rule param is a
plain str (canonical JSON, a fingerprint), byte for byte what the rule had before this module
existed, so that moving the logic here reran nothing. The parts that must touch Snakemake's
internals are in `snakemake_adapter`; nothing here imports Snakemake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import load as config_file
from ..config.stage_settings import FitSettings, ReportSettings
from ..data import corpus, corpus_check, stages
from ..errors import ScalelabError
from ..loggers import check_available, logger_names
from ..store.fingerprint import code_fingerprint
from ..store.runs import data_identity, spec_sha
from . import cluster, endpoints, grid, integrity, resolved, stage_identity, wsd
from . import resources as job_resources
from .grid import Run
from .wsd import Family

DATA = "results/data"  # shell commands spell these paths out (their globals are not theirs as a module)
# The role of each of this workflow's rules, by the file it writes: a module renames them (`use rule *
# from scalelab as scalelab_*`, or any other pattern) but keeps their outputs.
RULE_ROLES = {
    "results/runs/{run}/model.pt": "train",
    "results/trunks/{family}/step{step}.ckpt": "trunk",
    "results/data/meta.json": "tokenize",
}


def trunk_path(family: str, step: int | str) -> str:
    return f"results/trunks/{family}/step{step}.ckpt"


def rule_role(outputs: list[str]) -> str | None:
    """ "train", "trunk", "tokenize" or None for a rule of this workflow, by its output patterns
    (without their wildcard constraints), whatever a module named the rule."""
    for path in (Path(output) for output in outputs):
        for pattern, role in RULE_ROLES.items():
            parts = Path(pattern).parts
            if path.parts[-len(parts) :] == parts:  # a module may prefix its paths
                return role
    return None


def capped_cores(cores, limit: int) -> int:
    """All local cores up to `limit`: never a submitting machine's core count on a cluster
    (where --cores may be unset, or larger than any node)."""
    try:
        return max(1, min(int(cores), limit))
    except Exception:  # a cluster executor without --cores
        return limit


@dataclass
class StudyPlan:
    """What every rule of one Snakemake invocation looks up (see the module docstring)."""

    config: dict
    runs: dict[str, Run]
    corpus_files: list[Path]
    tokenize_mem_mb: int
    tokenize_code: str
    train_code: str
    train_wsd_code: str
    families: dict[str, Family]
    rebuild: list[str]
    stale: dict[str, str]  # output path -> why it disagrees with the config
    # grid.trained_cooldowns: the runs not trained, whose endpoints the curve law predicts ([]: none)
    predicted_ids: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls, config: dict, configfiles: list, main_process: bool = True, results: Path = Path("results")
    ) -> StudyPlan:
        """Check and plan a study (ScalelabError: one line naming the key or file). Only the main
        process checks the corpus files and the finished outputs; a job's own Snakemake does not."""
        for path in configfiles:  # read again to refuse duplicate keys and non-UTF-8 text
            config_file.read_yaml(path)
        config_file.validate(config)
        runs = {run.id: run for run in grid.expand_grid(config)}
        trained, predicted = endpoints.split_runs(config, runs.values())  # a bad grid.trained_cooldowns: one line now
        files = config_file.source_files(config)  # a file glob that matches nothing fails now, before any job
        if main_process:  # and a bad corpus file, before Snakemake deletes results/data for it
            corpus_check.check_files(config["data"], files)
        # "tokenize", "tokenize_chunked" (a text file over data.source.max_document_bytes) or
        # "tokenize_stream" (a large corpus; one tokenized in memory before keeps its stage): data.stages
        meta = corpus.read_meta(results / "data" / "meta.json")
        stage = stages.tokenize_stage(config["data"], files, meta)
        corpus.check_corpus_budget(config, runs.values(), meta)
        check_available(logger_names(config))  # a missing tracker package: one line, now
        rebuild, damaged = integrity.scan(results, trained) if main_process else ([], [])
        if damaged:
            raise ScalelabError(integrity.damage_message(damaged))
        plan = cls(
            config=config,
            runs=runs,
            corpus_files=files,
            tokenize_mem_mb=job_resources.tokenize_mem_mb(stages.held_bytes(files, stage)),
            tokenize_code=code_fingerprint(stage),
            train_code=code_fingerprint("train"),
            train_wsd_code=code_fingerprint("train_wsd"),
            families=wsd.plan_families(runs.values(), config),
            rebuild=rebuild,
            stale={},
            predicted_ids=predicted,
        )
        if main_process:
            plan.stale = plan.find_stale(results)
        plan.fit_spec()  # an unknown form, or form not in forms: one line now
        return plan

    def find_stale(self, results: Path) -> dict[str, str]:
        """Each finished run and trunk segment checked against what the config asks for, from its
        own files (scalelab.plan.integrity): Snakemake's params and code triggers need .snakemake/,
        which a copied study or a removed .snakemake/ lacks and --touch masks."""
        meta = corpus.read_meta(results / "data" / "meta.json")
        data = data_identity(meta) if meta and meta.get("settings") == corpus.data_settings(self.config) else None
        stale = dict(
            integrity.stale_runs(
                results,
                {
                    run_id: {"spec_sha": spec_sha(run.spec), "code": self.run_code(run_id), "data_fingerprint": data}
                    for run_id, run in self.runs.items()
                },
            )
        )
        stale.update(integrity.stale_trunks(results, self.families, self.train_wsd_code, data))
        why = integrity.stale_data(
            meta, corpus.data_settings(self.config), self.corpus_files, results, self.config["data"]
        )
        if why:
            stale[f"{DATA}/meta.json"] = why
        stale.update(self.stale_stage_outputs(results))
        return stale

    def stale_stage_outputs(self, results: Path) -> dict[str, str]:
        """eval.json, fit.json, suggest.json and the report's identity against the config and code
        (scalelab.plan.stage_identity)."""
        stages = ("evaluate", "fit", "suggest", "report")
        return dict(
            stage_identity.stale_outputs(
                Path(results).parent,
                {run_id: self.eval_spec(run_id) for run_id in self.runs},
                {"fit": self.fit_spec(), "suggest": self.suggest_spec(), "report": self.report_spec()},
                {stage: code_fingerprint(stage) for stage in stages},
            )
        )

    def notices(self) -> list[str]:
        """What the user is told at DAG-build time about outputs rebuilt or rerun."""
        lines = [
            f"scalelab: {path}: outputs missing since the last run; rebuilding them"
            for path in sorted({str(Path(p).parent) for p in self.rebuild})
        ]
        stored = ("/metrics.json", ".ckpt")  # a run or trunk segment: its job restores it from the store if it can
        lines += [
            f"scalelab: {path}: {why}; rerunning it"
            + (" (restored from the store when it holds this setting)" if path.endswith(stored) else "")
            for path, why in self.stale.items()
        ]
        return lines

    # --- the whole study ---
    @property
    def run_ids(self) -> list[str]:
        """The runs trained: every run of the grid, less those whose endpoint is predicted
        (grid.trained_cooldowns; their trunk segments are trained all the same)."""
        predicted = set(self.predicted_ids)
        return [run for run in self.runs if run not in predicted]

    @property
    def sweep_keys(self) -> list[str]:
        return grid.sweep_keys(self.runs.values())  # [] for a study without sweeps

    @property
    def vocab_size(self) -> int:
        return self.config["data"]["tokenizer"]["vocab_size"]

    @property
    def trunk_segments(self) -> dict[str, str]:
        """WSD: run -> the info file of the trunk segment charged to it (the one ending at its branch point)."""
        return {
            run: f"results/trunks/{fid}/step{step}.json"
            for fid, family in self.families.items()
            for step, run in family.branches.items()
        }

    def job_environment(self) -> dict[str, str]:
        return cluster.job_environment(self.config, self.runs.values())

    # --- one run ---
    def run_spec(self, run: str) -> str:
        """The values that decide one run, as canonical JSON (a plain str, so params compare exactly)."""
        return self.runs[run].spec_json

    def run_code(self, run: str) -> str:
        return self.train_wsd_code if wsd.is_wsd(self.runs[run].spec) else self.train_code

    def branch_inputs(self, run: str) -> dict[str, str]:
        """A WSD run's trunk checkpoint at its branch point (and its .json); nothing for other runs."""
        spec = self.runs[run].spec
        if not wsd.is_wsd(spec):
            return {}
        ckpt = trunk_path(wsd.family_id(spec), wsd.branch_step(spec))
        return {"trunk": ckpt, "trunk_info": ckpt.removesuffix(".ckpt") + ".json"}

    def train_resources(self, run: str, threads: int | None = None) -> job_resources.JobResources:
        return job_resources.train_resources(self.runs[run].spec, self.vocab_size, threads)

    def evaluate_resources(self, run: str, with_batch: bool = True) -> job_resources.JobResources:
        if not with_batch:
            return job_resources.evaluate_resources(self.runs[run].spec, self.vocab_size)
        return job_resources.evaluate_resources(self.runs[run].spec, self.vocab_size, self.config["eval"]["batch_size"])

    def train_launcher(self, run: str, threads: int, slurm: bool) -> str:
        """How a train job of several ranks starts them: "" for one rank, and outside Slurm
        (Lightning then starts the ranks itself); under Slurm an srun with explicit counts (the
        job step's environment carries no SLURM_NTASKS)."""
        tasks = self.train_resources(run).tasks
        if tasks == 1 or not slurm:
            return ""
        cpus = self.train_resources(run, threads).cpus_per_task
        return f"srun --kill-on-bad-exit=1 --ntasks={tasks} --ntasks-per-node={tasks} --cpus-per-task={cpus}"

    def eval_spec(self, run: str) -> str:
        """The eval settings as canonical JSON (a plain str param; parsed and checked once, in Python).
        A run trained on the CPU is evaluated on the CPU, whatever the machine has."""
        settings = dict(self.config["eval"])  # counts are ints already (config.validate parses them once)
        settings.pop("extra", None)  # a study's own scores join at aggregate, never part of a run's evaluation
        settings["device"] = "cpu" if self.runs[run].spec["accelerator"] == "cpu" else "auto"
        return json.dumps(settings, sort_keys=True)

    # --- one WSD trunk segment ---
    def family(self, family: str, step: int | str) -> Family:
        found = self.families.get(family)
        if found is None or int(step) not in found.branches:
            raise ValueError(f"results/trunks/{family}/step{step}: not a branch point of this study")
        return found

    def trunk_family(self, family: str, step: int | str) -> str:
        """What decides a trunk (the family's spec, canonical JSON; a plain str param)."""
        return json.dumps(self.family(family, step).spec, sort_keys=True)

    def trunk_start(self, family: str, step: int | str) -> str:
        """The previous branch point's checkpoint ('' for the first segment)."""
        previous = self.family(family, step).previous(int(step))
        return trunk_path(family, previous) if previous else ""

    def trunk_run(self, family: str, step: int | str) -> str:
        """A run of the family, standing in for it in the resource estimates (same shape and settings)."""
        return self.family(family, step).branches[int(step)]

    # --- fit and suggest ---
    def fit_spec(self) -> str:
        """The fit settings as canonical JSON (counts are ints already; `scalelab fit` checks them again)."""
        f, config = self.config["fit"], self.config
        spec = {
            "target": f["target"],
            "params": f["params"],
            "bootstrap": f["bootstrap"],
            "seed": f["seed"],
            "holdout": f["holdout"],
            "predict_flops": f["predict_flops"] or None,
            "budgets": config["grid"]["isoflop"]["budgets"] if config["grid"].get("isoflop") else None,
        }
        # Sweeps: fit the best run of each (fit.select) and fit laws of the swept keys. Written only when
        # they say something, so that a study without sweeps keeps its fit params, and its fit, as they were.
        if self.sweep_keys or f["select"] != "best":
            spec.update(select=f["select"], sweep_keys=self.sweep_keys)
        # The law forms: likewise written only when they differ from the defaults (every form, auto).
        for key, default in (("forms", None), ("form", "auto"), ("allow_any_loss", False)):
            if f.get(key, default) != default:
                spec[key] = f[key]
        FitSettings.from_dict(spec, where="config fit")
        return json.dumps(spec, sort_keys=True)

    def suggest_spec(self) -> str:
        """`scalelab suggest --spec`: the config's fit.suggest keys, and what the workflow knows that a
        CSV does not (the shapes, the step, and under WSD the cooldown, which lets runs share trunks)."""
        spec = resolved.suggest_spec(self.config)
        return json.dumps(spec, sort_keys=True)

    def report_spec(self) -> str:
        """The report settings as canonical JSON (config `report:`), as the report rule passes them."""
        return ReportSettings.from_spec(json.dumps(self.config.get("report") or {}), "config report").to_spec()

    # --- checks at start, once Snakemake knows its executor ---
    def check_jobs_fit(self, jobs, memory_mb: float, gpu_here: bool) -> None:
        """Jobs executed on this machine must fit it: `accelerator: gpu` needs a GPU here, and a
        train (or tokenize) job's memory estimate must not exceed the machine's memory. `jobs`:
        (role, wildcards) of the jobs to run."""
        for role, wildcards in jobs:
            if role == "tokenize" and self.tokenize_mem_mb > memory_mb:
                raise ScalelabError(
                    f"data.source: tokenizing this corpus needs about {self.tokenize_mem_mb:,} MB, "
                    f"more than this machine's {memory_mb:,.0f} MB; tokenize on a larger machine or a "
                    f"cluster profile (nothing was run)"
                )
            if role not in ("train", "trunk"):
                continue
            # a trunk job trains its family's shape with its settings: checked as one of its runs
            run = wildcards.run if role == "train" else self.trunk_run(wildcards.family, wildcards.step)
            if self.runs[run].spec["accelerator"] == "gpu" and not gpu_here:
                raise ScalelabError(
                    f"train.accelerator: {run} asks for a GPU but this machine has none; "
                    f"use accelerator: auto, or a cluster profile (nothing was run)"
                )
            mem_mb = self.train_resources(run).mem_mb
            if mem_mb > memory_mb:
                raise ScalelabError(
                    f"models.{self.runs[run].model}: {run} needs about {mem_mb:,} MB "
                    f"to train, more than this machine's {memory_mb:,.0f} MB (nothing was run)"
                )

    def submission_resources(self) -> dict[str, list[tuple]]:
        """Each job's (mem_mb, runtime, gpus, cpus) by rule, for scalelab.plan.grouping's array check."""

        def kind(r):
            return (r.mem_mb, r.runtime, r.gpus, r.cpus)

        runs = self.runs.values()
        return {
            "train": [kind(self.train_resources(run.id)) for run in runs],
            "evaluate": [kind(self.evaluate_resources(run.id)) for run in runs],
            "trunk": [
                kind(self.train_resources(run)) for family in self.families.values() for run in family.branches.values()
            ],
        }

"""What the DAG cannot see: run outputs deleted or damaged after a study finished.

Snakemake rebuilds a missing file only when a job that needs it has to run anyway, so a run
folder deleted after the study finished would go unnoticed, and a truncated or foreign file is
just a file with a date. At DAG-build time the Snakefile asks `scan` (cheap: small JSON files,
file sizes, and each model.pt's SHA-256 against the one its metrics.json records, hashed again only
when the file's size, mtime, inode or ctime changed (`results/.checksums.json`); no model loading)
and then

- asks for every missing output of a run that the last `aggregate` listed, so exactly those
  runs are rebuilt (from the run store when it has them, see scalelab.store.runs);
- stops with one line naming each damaged file and the command that rebuilds it, before any
  job can mistake it for a result.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

from ..files import file_sha256, write_json

CHECKSUMS = ".checksums.json"  # in results/: {path: [size, mtime_ns, inode, ctime_ns, sha256]}

TRAIN_OUTPUTS = ("model.pt", "metrics.json", "curve.csv")
EVAL_OUTPUTS = ("eval.json", "generations.jsonl")


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def aggregated_runs(metrics_csv: Path) -> set[str]:
    """Run ids the last aggregate wrote (empty when there is no metrics.csv yet)."""
    try:
        with open(metrics_csv, newline="") as f:
            return {row["run"] for row in csv.DictReader(f) if row.get("run")}
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return set()


def check_data(data_dir: Path) -> str | None:
    """Why results/data is damaged (meta.json unreadable or out of step with the files beside
    it, tokenizer.json not the one meta.json records), or None when it is whole or absent."""
    from ..data.corpus import read_meta

    meta_path = data_dir / "meta.json"
    if not meta_path.exists():
        return None
    meta = read_meta(meta_path)
    if meta is None:
        return f"{meta_path} is damaged or does not match the token files beside it"
    try:
        tokenizer = (data_dir / "tokenizer.json").read_bytes()
    except OSError:
        return f"{data_dir / 'tokenizer.json'} is missing"
    if hashlib.sha256(tokenizer).hexdigest()[:16] != meta["tokenizer"]["fingerprint"]:
        return f"{data_dir / 'tokenizer.json'} is not the tokenizer that {meta_path} records"
    return None


def cached_sha256(path: Path, checksums: dict | None = None) -> str:
    """SHA-256 of `path`, from `checksums` while the file's size, mtime, inode and ctime are those
    recorded (ctime too: `cp -p` over a file keeps its size, mtime and inode)."""
    stat = os.stat(path)
    key = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
    cached = (checksums or {}).get(str(path))
    if isinstance(cached, list) and cached[:4] == key:
        return cached[4]
    digest = file_sha256(path)
    if checksums is not None:
        checksums[str(path)] = [*key, digest]
    return digest


def check_run(run_dir: Path, run_id: str, checksums: dict | None = None) -> tuple[list[str], list[str]]:
    """(missing output files, reasons the present ones are damaged) of one run (`checksums`: the
    cache of cached_sha256)."""
    missing = [str(run_dir / n) for n in TRAIN_OUTPUTS + EVAL_OUTPUTS if not (run_dir / n).exists()]
    damaged = []
    metrics_path, model_path, eval_path = run_dir / "metrics.json", run_dir / "model.pt", run_dir / "eval.json"
    metrics = _json(metrics_path) if metrics_path.exists() else {}
    if not isinstance(metrics, dict) or (metrics and metrics.get("run") != run_id):
        damaged.append(f"{metrics_path} is damaged or belongs to another run")
    elif metrics.get("model_bytes") is not None and model_path.exists():
        size = model_path.stat().st_size
        if size != metrics["model_bytes"]:
            damaged.append(f"{model_path} has {size:,} bytes where {metrics_path} records {metrics['model_bytes']:,}")
        elif metrics.get("model_sha256") and cached_sha256(model_path, checksums) != metrics["model_sha256"]:
            damaged.append(
                f"{model_path} is not the model {metrics_path} records (its SHA-256 differs): "
                f"another run's weights, or damaged"
            )
    if eval_path.exists():
        evaluation = _json(eval_path)
        if not isinstance(evaluation, dict) or evaluation.get("run") != run_id or "status" not in evaluation:
            damaged.append(f"{eval_path} is damaged or belongs to another run")
    return missing, damaged


def scan(results: Path, run_ids) -> tuple[list[str], list[str]]:
    """(files to rebuild, damaged-file reasons) for a study's results folder.

    A missing file is rebuilt when its run was aggregated before (a new grid point needs no
    help: the workflow builds it anyway)."""
    results = Path(results)
    rebuild, damaged = [], []
    why = check_data(results / "data")
    if why:
        damaged.append(why)
    aggregated = aggregated_runs(results / "metrics.csv")
    cached = _json(results / CHECKSUMS)
    checksums = dict(cached) if isinstance(cached, dict) else {}
    for run_id in run_ids:
        run_dir = results / "runs" / run_id
        if run_id not in aggregated and not run_dir.exists():
            continue
        missing, broken = check_run(run_dir, run_id, checksums)
        damaged.extend(broken)
        if run_id in aggregated or any((run_dir / n).exists() for n in TRAIN_OUTPUTS + EVAL_OUTPUTS):
            rebuild.extend(missing)
    if checksums != cached and results.is_dir():
        _save_checksums(results / CHECKSUMS, checksums)
    return rebuild, damaged


def _save_checksums(path: Path, checksums: dict) -> None:
    try:
        write_json(path, checksums)
    except OSError:
        pass  # a read-only results folder: hashed again next time


def damage_message(damaged: list[str]) -> str:
    """One line: what is damaged and the command that rebuilds it (remove it; the workflow then
    rebuilds exactly what is missing, restoring runs from the store where it can)."""
    paths = [reason.split(" ", 1)[0] for reason in damaged]
    more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
    return (
        f"{damaged[0]}{more}; nothing was run. To rebuild: rm {' '.join(paths)}, then rerun "
        f"the workflow (only what is missing is rebuilt)"
    )


# ----------------------------------------------------------------------------- identity
# Snakemake notices a changed spec or code only through its metadata records (.snakemake/),
# which a copied study, a removed .snakemake/ or `--touch` lose or mask. Every run's metrics.json
# and every trunk segment's sidecar record what decided them, so the DAG compares those itself;
# a disagreeing file is forced to rerun (`stale` returns the outputs to force), and its job then
# restores the matching run or trunk state from the store when the store holds it.


def _differs(recorded: dict, expected: dict) -> list[str]:
    return [name for name, value in expected.items() if value is not None and recorded.get(name) != value]


def stale_runs(results: Path, expected: dict[str, dict]) -> list[tuple[str, str]]:
    """(metrics.json to force, why) for each finished run whose recorded spec, code or data
    differ from what the config asks for (`expected`: run id -> {spec_sha, code,
    data_fingerprint}; a None value is not compared, e.g. the data when it will be rebuilt)."""
    stale = []
    what = {"spec_sha": "settings", "code": "training code", "data_fingerprint": "tokens"}
    for run_id, identity in expected.items():
        path = Path(results) / "runs" / run_id / "metrics.json"
        metrics = _json(path) if path.is_file() else None
        if not isinstance(metrics, dict) or metrics.get("run") != run_id:
            continue  # missing (built anyway) or damaged (check_run stops the workflow)
        differs = _differs(metrics, identity)
        if differs:
            stale.append(
                (
                    str(path),
                    f"trained with other {', '.join(what[d] for d in differs)} than the config "
                    f"asks for (changed since, or copied from another study)",
                )
            )
    return stale


def _recorded_bytes(info: dict, store_entry: Path) -> int | None:
    """A trunk checkpoint's size: from its sidecar, or (sidecars before it was recorded) from the
    trunk store's manifest of the same key."""
    if isinstance(info.get("bytes"), int):
        return info["bytes"]
    manifest = _json(store_entry / "manifest.json")
    try:
        return int(manifest["files"]["state.ckpt"]["bytes"])
    except (TypeError, KeyError, ValueError):
        return None


def trunk_checkpoint_damage(ckpt: Path, info: dict, store_entry: Path) -> str | None:
    """Why a trunk checkpoint is damaged (size differs from the record, or not a torch zip
    archive: truncated, or a planted legacy pickle), or None. Cheap: no unpickling."""
    import zipfile

    size = ckpt.stat().st_size
    recorded = _recorded_bytes(info, store_entry)
    if recorded is not None and size != recorded:
        return f"{ckpt} has {size:,} bytes where {recorded:,} were written"
    if not zipfile.is_zipfile(ckpt):
        return f"{ckpt} is not a checkpoint archive (truncated, or not written by the trunk rule)"
    return None


def stale_trunks(results: Path, families: dict, code: str, data: str | None) -> list[tuple[str, str]]:
    """(trunk checkpoint to force, why) for each existing trunk segment whose sidecar records
    another family, step, code or data, or whose checkpoint is damaged; its job then restores the
    state from the trunk store (results/store/trunks) or retrains the segment."""
    from .wsd import trunk_key

    stale = []
    for fid, family in families.items():
        for step in family.points:
            ckpt = Path(results) / "trunks" / fid / f"step{step}.ckpt"
            info_path = ckpt.with_suffix(".json")
            if not ckpt.is_file() or not info_path.is_file():
                continue  # missing: Snakemake builds it
            info = _json(info_path)
            key = trunk_key(family.spec, step, code)
            if not isinstance(info, dict):
                stale.append((str(ckpt), f"{info_path} is damaged"))
                continue
            differs = _differs(info, {"key": key, "data_fingerprint": data})
            if differs:
                stale.append((str(ckpt), "trained for another family, step, code or tokens than the config asks for"))
                continue
            why = trunk_checkpoint_damage(ckpt, info, Path(results) / "store" / "trunks" / key)
            if why:
                stale.append((str(ckpt), why.split(" ", 1)[1]))
    return stale


def stale_data(
    meta: dict | None, settings: dict, files: list[Path], results: Path | None = None, data_cfg: dict | None = None
) -> str | None:
    """Why results/data (its meta.json) disagrees with the config's data settings or with the
    corpus files (their count and total size, for a `files` source; then, given `results` and
    `data_cfg`, their content: scalelab.data.content), or None."""
    if meta is None:
        return None  # missing or damaged: rebuilt, or stopped by check_data
    if meta.get("settings") != settings:
        return "tokenized with other data settings than the config asks for"
    corpus = meta.get("corpus") or {}
    if files and (
        corpus.get("files") != len(files) or corpus.get("file_bytes") != sum(p.stat().st_size for p in files)
    ):
        return (
            f"tokenized from {corpus.get('files')} corpus files of {corpus.get('file_bytes')} bytes, where "
            f"data.source.files now matches {len(files)} of {sum(p.stat().st_size for p in files)}"
        )
    if results is not None and data_cfg is not None:
        from ..data import content

        return content.why_changed(results, meta, data_cfg, files)
    return None


# ----------------------------------------------------------------------------- quarantine
# A train or trunk job that finds another run's files under its store key moves them to
# <store>/.quarantine/ and says so in its own log only; the workflow repeats it at its end.


def quarantined_since(results: Path, since: float) -> list[str]:
    """One line per store entry (run or trunk) a job of this invocation quarantined (`since`: when
    it started), from the store's .quarantine/log.jsonl."""
    from ..store.runs import QUARANTINE, QUARANTINE_LOG

    lines = []
    for store in (Path(results) / "store", Path(results) / "store" / "trunks"):
        try:
            records = (store / QUARANTINE / QUARANTINE_LOG).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for text in records.splitlines():
            record = _json_line(text)
            if record and isinstance(record.get("time"), (int, float)) and record["time"] >= since:
                lines.append(
                    f"scalelab: {record.get('entry')}: {record.get('why')}; moved to {record.get('moved_to')}, "
                    f"not used (`scalelab prune --delete` removes it)"
                )
    return lines


def _json_line(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None

"""Round-3 hostile findings that need no workflow run: a foreign store entry, a corpus glob over
the study's own outputs, a grid too large to plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_corpus
from scalelab.config import load as study
from scalelab.data import corpus
from scalelab.plan import grid
from scalelab.store import runs as store
from scalelab.errors import ScalelabError


# ----------------------------------------------------------------------------- the run store


def _entry(tmp_path: Path, spec: dict, code: str = "c0", data: str = "d0") -> str:
    """A store entry for `spec` made the way the train job makes one; returns its key."""
    run_dir = tmp_path / "runs" / spec["run"]
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(b"weights of " + spec["run"].encode())
    (run_dir / "curve.csv").write_text("step,val_loss\n1,3.0\n")
    (run_dir / "metrics.json").write_text(json.dumps({"run": spec["run"], "spec_sha": store.spec_sha(spec)}))
    key = store.run_key(spec, code)
    store.save(tmp_path / "store", key, run_dir, data, spec, code)
    return key


def test_store_restores_a_whole_entry_of_the_run_asked_for(tmp_path):
    spec = {"run": "a-4K-s0", "lr": 1e-3}
    key = _entry(tmp_path, spec)
    assert store.lookup(tmp_path / "store", key, "d0", spec=spec) == tmp_path / "store" / key


def test_store_quarantines_an_entry_copied_over_another_key_and_never_loops(tmp_path, capsys):
    mine, other = {"run": "a-4K-s0", "lr": 1e-3}, {"run": "b-4K-s0", "lr": 1e-3}
    key = _entry(tmp_path, mine)
    other_key = _entry(tmp_path, other)
    entries = tmp_path / "store"
    # another run's whole entry (manifest, checksums and all) copied over this run's key
    import shutil

    shutil.rmtree(entries / key)
    shutil.copytree(entries / other_key, entries / key)
    assert store.lookup(entries, key, "d0", spec=mine) is None
    out = capsys.readouterr().out
    assert f"{entries / key}: its manifest is for another run ('b-4K-s0'" in out and "moved to" in out
    assert not (entries / key).exists()  # out of the way: the run now retrains, then saves its own
    moved = [p for p in (entries / store.QUARANTINE).iterdir() if p.name != store.QUARANTINE_LOG]
    assert len(moved) == 1
    assert store.lookup(entries, key, "d0", spec=mine) is None  # asked again: nothing to restore
    assert store.lookup(entries, other_key, "d0", spec=other) == entries / other_key  # the real one is fine


def test_store_quarantines_an_entry_whose_metrics_name_another_run(tmp_path):
    mine = {"run": "a-4K-s0", "lr": 1e-3}
    key = _entry(tmp_path, mine)
    entry = tmp_path / "store" / key
    metrics = entry / "metrics.json"
    metrics.write_text(json.dumps({"run": "b-4K-s0"}))
    manifest = json.loads((entry / store.MANIFEST).read_text())  # checksums made to agree
    manifest["files"]["metrics.json"] = {"bytes": metrics.stat().st_size, "sha256": store.file_sha256(metrics)}
    (entry / store.MANIFEST).write_text(json.dumps(manifest))
    assert store.lookup(tmp_path / "store", key, "d0", spec=mine) is None
    assert not entry.exists()


# ----------------------------------------------------------------------------- corpus globs


def _files_config(*patterns: str) -> dict:
    return {"data": {"source": {"files": list(patterns)}}}


def test_a_corpus_glob_never_matches_the_studys_own_outputs(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", documents=3)
    for name in ("results/fit/fit.txt", "results/report/summary.txt", "logs/tokenize.txt", ".snakemake/log/x.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a report, not corpus\n")
    files = study.source_files(_files_config("**/*.txt"), tmp_path)
    assert sorted(files) == sorted(corpus)
    # the same from inside the study folder, as the workflow calls it (relative base)
    import os

    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert sorted(study.source_files(_files_config("**/*.txt"))) == sorted(p.relative_to(tmp_path) for p in corpus)
    finally:
        os.chdir(cwd)


def test_a_corpus_glob_of_only_outputs_is_one_line(tmp_path):
    (tmp_path / "results/fit").mkdir(parents=True)
    (tmp_path / "results/fit/fit.txt").write_text("x\n")
    with pytest.raises(ScalelabError) as caught:
        study.source_files(_files_config("results/**/*.txt"), tmp_path)
    message = str(caught.value)
    assert message.startswith("config: data.source.files[0]: 'results/**/*.txt' matches only the study's own outputs")
    assert "\n" not in message


# ----------------------------------------------------------------------------- grid size


def _grid(tokens: int, seeds: int, sweep: dict | None = None, **keys) -> dict:
    config = {
        "models": {"a": {"n_layer": 1, "d_model": 16, "n_head": 2}},
        "grid": {
            "models": ["a"],
            "tokens": [f"{k + 1}K" for k in range(tokens)],
            "seeds": list(range(seeds)),
            **({"sweep": sweep} if sweep else {}),
            **keys,
        },
    }
    return study.validate(config)


def test_a_grid_above_the_ceiling_is_one_line_before_any_run_is_built():
    config = _grid(tokens=100, seeds=20, sweep={"lr": [1e-3 * (k + 1) for k in range(10)]})  # 20,000 runs
    with pytest.raises(ScalelabError) as caught:
        grid.expand_grid(config)
    message = str(caught.value)
    assert "up to 20,000 runs" in message and "grid.max_runs (10,000)" in message and "\n" not in message
    config = _grid(tokens=100, seeds=20, sweep={"lr": [1e-3 * (k + 1) for k in range(10)]}, max_runs=20_000)
    assert grid.grid_size(config) == 20_000  # raised: allowed (not expanded here: that is the slow part)


def test_the_ceiling_counts_isoflop_runs_and_is_an_upper_bound():
    config = _grid(tokens=3, seeds=2, isoflop={"budgets": ["1e9", "2e9"]})
    assert len(grid.expand_grid(config)) <= grid.grid_size(config) == (3 + 2) * 2


def test_check_summarises_a_large_grid(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"source": "python-stdlib"},
                "models": {
                    "a": {"n_layer": 1, "d_model": 16, "n_head": 2},
                    "b": {"n_layer": 1, "d_model": 32, "n_head": 2},
                },
                "grid": {"models": ["a", "b"], "tokens": [4096 * (k + 1) for k in range(150)], "seeds": [0, 1]},
            }
        )
    )
    proc = subprocess.run([sys.executable, "-m", "scalelab", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("valid, 600 runs") and len(lines) < 10
    assert any(line.strip().startswith("a: 300 runs, 4,096 to 614,400 tokens, 2 seed(s)") for line in lines)


# ----------------------------------------------------------------------------- corpus content at DAG time


def test_the_dag_time_check_knows_every_file_type_tokenize_reads():
    from scalelab.data import tokenize as data
    from scalelab.data.corpus_check import SUPPORTED

    assert SUPPORTED == set(data._BUILDERS)


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("notes.docx", b"PK\x03\x04", "unsupported file type"),
        ("wide.txt", "hello world\n".encode("utf-16"), "UTF-16 text; the corpus must be UTF-8"),
        ("blob.txt", bytes(range(256)) * 4, "binary, not text"),
        ("latin.txt", "caf\xe9 au lait\n".encode("latin-1"), "not UTF-8 text"),
        ("rows.jsonl", b'{"body": "no text field"}\n', "the first record has no field 'text' (fields: body)"),
        ("empty.jsonl", b"\n\n", "empty (no records)"),
        ("list.jsonl", b'["a", "b"]\n', "the first record is a JSON list"),
        ("broken.jsonl", b"{not json\n", "the first line is not a JSON record"),
        ("array.json", b'[{"body": 1}]', "the first record has no field 'text'"),
        ("table.csv", b"id,body\n1,hello\n", "no column 'text' (columns: id, body)"),
        ("fake.parquet", b"not parquet at all", "not a parquet file"),
    ],
)
def test_bad_corpus_content_is_one_line_naming_the_file(tmp_path, name, content, words):
    from scalelab.data.corpus_check import check_files

    good = make_corpus(tmp_path / "c", documents=2)
    (tmp_path / "c" / "good.jsonl").write_text('{"text": "fine"}\n')
    bad = tmp_path / "c" / name
    bad.write_bytes(content)
    cfg = {"source": {"files": ["c/*"], "text_field": "text"}, "pairs": None}
    check_files(cfg, [*good, tmp_path / "c" / "good.jsonl"])  # the good ones pass
    with pytest.raises(ScalelabError) as caught:
        check_files(cfg, [*good, bad])
    assert str(caught.value).startswith(f"{bad}: ") and words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_good_structured_files_pass(tmp_path):
    import pandas as pd

    from scalelab.data.corpus_check import check_files

    pd.DataFrame({"text": ["a", "b"]}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text("text,id\nhello,1\n")
    (tmp_path / "t.json").write_text('[{"text": "a"}]')
    (tmp_path / "lines.json").write_text('{"text": "a"}\n{"text": "b"}\n')
    (tmp_path / "cut.txt").write_bytes(("é" * (1 << 16)).encode())  # a character cut by the head: fine
    check_files(
        {"source": {"files": ["*"]}, "pairs": None},
        [tmp_path / n for n in ("t.parquet", "t.csv", "t.json", "lines.json", "cut.txt")],
    )


# ----------------------------------------------------------------------------- large text files


def test_a_large_file_is_cut_into_documents_at_blank_lines_without_losing_text(tmp_path):
    from scalelab.data.chunking import file_documents

    paragraphs = [f"paragraph {i} " + "word " * (i % 37) for i in range(2000)]
    text = "\n\n".join(paragraphs) + "\n"
    path = tmp_path / "book.txt"
    path.write_text(text)
    documents = list(file_documents(path, 1000))
    assert "".join(documents) == text
    assert all(len(d.encode()) <= 1000 for d in documents) and len(documents) > 50
    assert all(d.endswith("\n\n") or d is documents[-1] for d in documents)  # whole paragraphs


def test_a_cut_without_any_separator_never_splits_a_character(tmp_path):
    from scalelab.data.chunking import file_documents

    text = "é€𝄞" * 5000  # 2, 3 and 4 bytes a character, no space or newline
    path = tmp_path / "one-line.txt"
    path.write_text(text)
    documents = list(file_documents(path, 1001))
    assert "".join(documents) == text and all(len(d.encode()) <= 1001 for d in documents)


def test_a_one_file_corpus_gets_val_and_test_splits(tmp_path):
    from scalelab.data import tokenize as data

    make_corpus(tmp_path / "parts", documents=400)
    whole = tmp_path / "corpus" / "all.txt"
    whole.parent.mkdir()
    whole.write_text("\n\n".join(p.read_text() for p in sorted((tmp_path / "parts").glob("*.txt"))))
    cfg = {
        "source": {"files": [str(whole)], "text_field": "text", "sample_by": "document", "max_document_bytes": 2000},
        "pairs": None,
        "split": {"val": 0.1, "test": 0.1},
        "tokenizer": {"vocab_size": 300},
    }
    meta = data.tokenize(cfg, tmp_path / "out")
    assert meta["corpus"]["split_files"] == 1 and meta["corpus"]["documents"] > 100
    assert meta["splits"]["val"]["tokens"] > 0 and meta["splits"]["test"]["tokens"] > 0


def test_only_a_corpus_with_a_large_text_file_takes_the_chunked_path(tmp_path):
    from scalelab.data import chunking
    from scalelab.store.fingerprint import code_fingerprint

    small = make_corpus(tmp_path / "c", documents=3)
    big = tmp_path / "c" / "big.txt"
    big.write_text("x " * 600_000)
    cfg = {"source": {"files": ["c/*.txt"], "sample_by": "document"}, "pairs": None}
    assert chunking.large_files(cfg, small) == [] and chunking.large_files(cfg, [*small, big]) == [big]
    assert chunking.large_files({**cfg, "source": {**cfg["source"], "max_document_bytes": 0}}, [big]) == []
    assert chunking.large_files({**cfg, "source": {**cfg["source"], "sample_by": "paragraph"}}, [big]) == []
    assert code_fingerprint("tokenize_chunked") != code_fingerprint("tokenize")


def test_max_document_bytes_at_its_default_leaves_the_data_fingerprint_as_it_was():
    config = study.validate({"data": {"source": {"files": ["c/*.txt"]}}})
    explicit = study.validate({"data": {"source": {"files": ["c/*.txt"], "max_document_bytes": 1_000_000}}})
    other = study.validate({"data": {"source": {"files": ["c/*.txt"], "max_document_bytes": 4096}}})
    assert "max_document_bytes" not in corpus.data_settings(config)["source"]
    assert corpus.data_fingerprint(explicit) == corpus.data_fingerprint(config) != corpus.data_fingerprint(other)


def test_tokenize_declares_memory_by_corpus_size():
    from scalelab.plan.resources import TOKENIZE_MIN_MB, tokenize_mem_mb

    assert tokenize_mem_mb(None) == tokenize_mem_mb(20_000_000) == TOKENIZE_MIN_MB
    assert tokenize_mem_mb(2_000_000_000) > tokenize_mem_mb(1_000_000_000) > TOKENIZE_MIN_MB


# ----------------------------------------------------------------------------- prune


def test_prune_plans_only_what_no_current_run_needs(tmp_path):
    from scalelab.plan import prune
    from scalelab.plan import wsd

    config = study.validate(
        {
            "data": {"source": "python-stdlib"},
            "models": {"a": {"n_layer": 1, "d_model": 16, "n_head": 2}},
            "grid": {"models": ["a"], "tokens": ["4K", "8K"], "seeds": [0]},
            "train": {"context": 32, "batch_size": 8, "schedule": "wsd", "warmup_tokens": 512, "cooldown": 0.25},
            "eval": {"prompt_tokens": 8, "max_new_tokens": 8},
        }
    )
    run_keys, trunk_keys, families = prune.needed(config)
    ((fid, steps),) = families.items()
    results = tmp_path / "results"

    def entry(folder: Path, run: str, spec: dict, mtime: float):
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"run": run, "spec": spec}))
        (folder / "state.ckpt").write_bytes(b"x" * 100)
        import os

        os.utime(folder, (mtime, mtime))

    for i, key in enumerate(sorted(run_keys)):
        entry(results / "store" / key, f"run{i}", {"run": f"run{i}"}, 1000)
    for key in trunk_keys:
        entry(results / "store/trunks" / key, "trunk", {"model": "a", "seed": 0, "step": 1}, 1000)
    entry(results / "store/old1", "a-4K-s0", {"run": "a-4K-s0"}, 1000)  # two older settings of one run
    entry(results / "store/old2", "a-4K-s0", {"run": "a-4K-s0"}, 2000)
    entry(results / "store/trunks/oldtrunk", "trunk step 12", {"model": "a", "seed": 0, "step": 12}, 1000)
    (results / "store/.quarantine/x").mkdir(parents=True)
    (results / "store/.abc.tmp").mkdir()
    for step in [*steps, 99]:
        (results / "trunks" / fid).mkdir(parents=True, exist_ok=True)
        (results / "trunks" / fid / f"step{step}.ckpt").write_bytes(b"c")
    (results / "trunks/a-s0-0000000000").mkdir()
    removed = {str(e.path.relative_to(results)) for e in prune.removable_entries(results, config)}
    assert removed == {
        "store/old1",
        "store/old2",
        "store/trunks/oldtrunk",
        "store/.quarantine",
        "store/.abc.tmp",
        f"trunks/{fid}/step99.ckpt",
        "trunks/a-s0-0000000000",
    }
    kept = {str(e.path.relative_to(results)) for e in prune.removable_entries(results, config, keep_last=1)}
    assert kept == removed - {"store/old2", "store/trunks/oldtrunk"}  # the newest other setting of each point
    assert wsd.is_wsd(grid.expand_grid(config)[0].spec)

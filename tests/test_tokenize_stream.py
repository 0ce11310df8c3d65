"""The streaming tokenize build writes the bytes the in-memory build (the oracle) writes, and the
workflow's stage choice keeps every study tokenized before on its fingerprint."""

import ast
import json
from pathlib import Path

import pandas as pd
import pytest

from scalelab.data import stages
from scalelab.data import stream
from scalelab.data.command import tokenize_corpus
from scalelab.data import tokenize as data
from scalelab.errors import ScalelabError
from scalelab.store.fingerprint import STAGE_CODE, code_fingerprint

from conftest import make_corpus


def _cfg(source, **changes):
    cfg = {"source": source, "pairs": None, "split": {"val": 0.1, "test": 0.1}, "tokenizer": {"vocab_size": 300}}
    cfg.update(changes)
    return cfg


def _both(cfg, tmp_path):
    memory = tokenize_corpus(cfg, tmp_path / "memory", build="memory")
    streamed = tokenize_corpus(cfg, tmp_path / "stream", build="stream")
    return memory, streamed


def _assert_same(memory, streamed, tmp_path):
    for name in (*data.SPLITS, "tokenizer"):
        file = f"{name}.json" if name == "tokenizer" else f"{name}.bin"
        assert (tmp_path / "stream" / file).read_bytes() == (tmp_path / "memory" / file).read_bytes(), file
    assert streamed["corpus"].pop("build") == "stream" and "build" not in memory["corpus"]
    for meta in (memory, streamed):
        del meta["corpus"]["tokenize_s"]
    assert json.dumps(streamed) == json.dumps(memory)  # every count, fingerprint and key order
    assert json.loads((tmp_path / "stream" / "meta.json").read_text())["corpus"]["build"] == "stream"


def test_files_corpus_gives_the_same_bytes(tmp_path):
    make_corpus(tmp_path / "c", documents=120)
    (tmp_path / "c" / "crlf.txt").write_bytes(b"Windows line ends\r\nand more text\r\n")
    memory, streamed = _both(_cfg({"files": [str(tmp_path / "c/*.txt")], "sample_by": "document"}), tmp_path)
    assert memory["splits"]["val"]["tokens"] > 0 and memory["splits"]["test"]["tokens"] > 0
    _assert_same(memory, streamed, tmp_path)


def test_chunked_large_file_corpus_gives_the_same_bytes(tmp_path):
    make_corpus(tmp_path / "c", documents=40)
    paths = make_corpus(tmp_path / "big", documents=400, seed=3)
    with open(tmp_path / "c" / "large.txt", "w") as f:
        for path in paths:  # about 300 KB: over max_document_bytes, cut into documents of <= 4 KB
            f.write(path.read_text() + ("\n" if int(path.stem[3:]) % 3 else "\n\n"))
    cfg = _cfg({"files": [str(tmp_path / "c/*.txt")], "max_document_bytes": 4096})
    memory, streamed = _both(cfg, tmp_path)
    assert memory["corpus"]["split_files"] == 1 and memory["corpus"]["documents"] > 100
    _assert_same(memory, streamed, tmp_path)


def test_jsonl_parquet_and_pairs_give_the_same_bytes(tmp_path):
    rows = [
        {
            "text": f"row {i} " + "alpha beta gamma " * (i % 7 + 1),
            "source": f"src {i} a b",
            "target": "" if i % 11 == 0 else f"tgt {i} b a",
        }
        for i in range(300)
    ]
    with open(tmp_path / "a.jsonl", "w") as f:
        for row in rows[:150]:
            f.write(json.dumps(row) + "\n")
    pd.DataFrame(rows[150:]).to_parquet(tmp_path / "b.parquet")
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet")]
    _assert_same(*_both(_cfg({"files": files, "text_field": "text"}), tmp_path / "text"), tmp_path / "text")
    pairs = _cfg({"files": files}, pairs={"source_field": "source", "target_field": "target"})
    memory, streamed = _both(pairs, tmp_path / "pairs")
    assert memory["format"] == "pairs" and memory["corpus"]["documents"] == 300 - 28  # empty targets dropped
    _assert_same(memory, streamed, tmp_path / "pairs")


def test_local_hf_folder_gives_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    with open(folder / "train.jsonl", "w") as f:
        for i in range(400):
            f.write(json.dumps({"story": f"Once upon a time {i} there was a tiny model number {i * 7}."}) + "\n")
    cfg = _cfg({"hf": str(folder), "name": None, "split": "train", "text_field": "story", "max_documents": 350})
    memory, streamed = _both(cfg, tmp_path)
    assert streamed["corpus"]["hf"] == str(folder) and streamed["corpus"]["documents"] == 350
    _assert_same(memory, streamed, tmp_path)


def test_streaming_errors_are_the_in_memory_ones(tmp_path):
    (tmp_path / "blank.txt").write_text("   \n\n")
    with pytest.raises(ScalelabError, match="no non-empty documents"):
        tokenize_corpus(_cfg({"files": [str(tmp_path / "blank.txt")]}), tmp_path / "out", build="stream")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 " * 600)  # not UTF-8, cut into documents while read
    with pytest.raises(ScalelabError, match="bad.txt: not UTF-8"):
        tokenize_corpus(
            _cfg({"files": [str(tmp_path / "bad.txt")], "max_document_bytes": 1000}), tmp_path / "out", build="stream"
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_split_too_small_names_the_fraction_and_writes_nothing(tmp_path):
    make_corpus(tmp_path / "c", documents=60)
    cfg = _cfg({"files": [str(tmp_path / "c/*.txt")]})
    require = {"val": 2000}
    with pytest.raises(ScalelabError) as memory:
        tokenize_corpus(cfg, tmp_path / "memory", require, build="memory")
    with pytest.raises(ScalelabError) as streamed:
        tokenize_corpus(cfg, tmp_path / "stream", require, build="stream")
    assert str(streamed.value) == str(memory.value) and "data.split.val" in str(memory.value)
    assert not any((tmp_path / "stream").glob("*"))


def test_stage_choice_streams_large_corpora_and_keeps_studies_tokenized_in_memory(tmp_path, monkeypatch):
    make_corpus(tmp_path / "c", documents=30)
    cfg = {**_cfg({"files": [str(tmp_path / "c/*.txt")]}), "allow_repeat": True}
    files = sorted((tmp_path / "c").glob("*.txt"))
    assert stages.tokenize_stage(cfg, files) == "tokenize"  # small: in memory, as before
    monkeypatch.setattr(stages, "STREAM_MIN_BYTES", 1000)
    assert stages.tokenize_stage(cfg, files) == "tokenize_stream"
    settings = {k: v for k, v in cfg.items() if k != "allow_repeat"}
    memory = tokenize_corpus(settings, tmp_path / "memory", build="memory")
    # a study tokenized in memory keeps its stage (and fingerprint) while its corpus and settings hold
    assert stages.tokenize_stage(cfg, files, memory) == "tokenize"
    streamed = tokenize_corpus(settings, tmp_path / "stream")  # the CLI's choice: by size alone
    assert streamed["corpus"]["build"] == "stream"
    assert stages.tokenize_stage(cfg, files, streamed) == "tokenize_stream"
    files[0].write_text(files[0].read_text() + " more")  # a changed corpus is retokenized: streamed
    assert stages.tokenize_stage(cfg, files, memory) == "tokenize_stream"
    assert stages.tokenize_stage(_cfg("python-stdlib"), []) == "tokenize"
    # the job's declared memory grows with the corpus only for the in-memory builds
    size = sum(p.stat().st_size for p in files)
    assert stages.held_bytes(files, "tokenize") == size > stages.held_bytes(files, "tokenize_stream") == 1000


def test_the_stream_fingerprint_covers_what_it_imports_and_no_study_moves():
    assert code_fingerprint("tokenize") == "13a8a528842bfa3f"  # tests/test_layers.py's pin, by value
    assert len({code_fingerprint(s) for s in ("tokenize", "tokenize_chunked", "tokenize_stream")}) == 3
    tree = ast.parse(Path(stream.__file__).read_text())
    imported = {
        a.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "tokenize"
        for a in node.names
    }
    roots = dict(STAGE_CODE["tokenize_stream"])["data.py"]
    assert imported and imported <= set(roots)
    assert ("chunking.py", None) in STAGE_CODE["tokenize_stream"]


def test_a_corpus_that_changes_between_the_two_reads_is_refused(tmp_path, monkeypatch):
    make_corpus(tmp_path / "c", documents=40)
    original, reads = stream.Corpus.__iter__, []

    def shrinking(self):  # the second read misses the last document
        reads.append(1)
        documents = list(original(self))
        return iter(documents if len(reads) == 1 else documents[:-1])

    monkeypatch.setattr(stream.Corpus, "__iter__", shrinking)
    with pytest.raises(ScalelabError, match="changed while it was tokenized"):
        tokenize_corpus(_cfg({"files": [str(tmp_path / "c/*.txt")]}), tmp_path / "out", build="stream")
    assert not any((tmp_path / "out").glob("*"))

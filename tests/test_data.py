import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tokenizers import Tokenizer

from scalelab.data import tokenize as data
from scalelab.errors import ScalelabError

from conftest import make_corpus


def _cfg(source, **changes):
    cfg = {
        "source": source,
        "pairs": None,
        "split": {"val": 0.1, "test": 0.1},
        "tokenizer": {"vocab_size": 300},
        "allow_repeat": True,
    }
    cfg.update(changes)
    return cfg


def test_split_is_deterministic_and_stable_when_the_corpus_grows():
    docs = [f"document number {i} " * 3 for i in range(2000)]
    first = data.split_documents(docs, 0.1, 0.1)
    again = data.split_documents(list(docs), 0.1, 0.1)
    assert first == again
    grown = data.split_documents(docs + [f"new doc {i}" for i in range(500)], 0.1, 0.1)
    for name in data.SPLITS:
        assert set(first[name]) <= set(grown[name])
    for name, share in (("val", 0.1), ("test", 0.1)):
        assert abs(len(first[name]) / len(docs) - share) < 0.03
    assert not set(first["train"]) & set(first["test"])


def test_tokenize_files_roundtrip_and_meta(tiny_data):
    meta = json.loads((tiny_data / "meta.json").read_text())
    tok = Tokenizer.from_file(str(tiny_data / "tokenizer.json"))
    assert meta["vocab_size"] == tok.get_vocab_size() == 300
    assert meta["eot_id"] == 0 and meta["sep_id"] == 1 and meta["dtype"] == "uint16"
    train = data.read_tokens(tiny_data, "train")
    assert len(train) == meta["splits"]["train"]["tokens"]
    # Documents are separated by EOT, and decode back to the exact text.
    ends = np.flatnonzero(np.asarray(train) == meta["eot_id"])
    assert len(ends) == meta["splits"]["train"]["documents"]
    first = tok.decode(np.asarray(train[: ends[0]]).tolist())
    assert first.startswith("Document ") and first.endswith("\n")
    total = sum(len(tok.decode(doc.tolist()).encode()) for doc in np.split(np.asarray(train), ends + 1) if len(doc))
    assert total == meta["splits"]["train"]["bytes"]
    assert meta["corpus"]["files"] == 200 and len(meta["corpus"]["fingerprint"]) == 16
    text = "def f(x):\n    return x  # ünïcode"
    assert tok.decode(tok.encode(text).ids) == text


def test_tokenize_is_deterministic(tmp_path):
    make_corpus(tmp_path / "c", documents=60)
    cfg = _cfg({"files": [str(tmp_path / "c/*.txt")], "sample_by": "document"})
    a = data.tokenize(cfg, tmp_path / "a")
    b = data.tokenize(cfg, tmp_path / "b")
    assert a["tokenizer"]["fingerprint"] == b["tokenizer"]["fingerprint"]
    for split in data.SPLITS:
        assert (tmp_path / f"a/{split}.bin").read_bytes() == (tmp_path / f"b/{split}.bin").read_bytes()


def test_jsonl_parquet_and_pairs(tmp_path):
    rows = [
        {"text": f"row {i} " + "alpha beta gamma " * 5, "source": f"src {i} a b", "target": f"tgt {i} b a"}
        for i in range(120)
    ]
    with open(tmp_path / "a.jsonl", "w") as f:
        for row in rows[:60]:
            f.write(json.dumps(row) + "\n")
    pd.DataFrame(rows[60:]).to_parquet(tmp_path / "b.parquet")
    meta = data.tokenize(
        _cfg({"files": [str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet")], "text_field": "text"}),
        tmp_path / "text",
    )
    assert meta["corpus"]["documents"] == 120 and meta["format"] == "text"
    meta = data.tokenize(
        _cfg({"files": [str(tmp_path / "*.jsonl")]}, pairs={"source_field": "source", "target_field": "target"}),
        tmp_path / "pairs",
    )
    assert meta["format"] == "pairs"
    tokens = np.concatenate([np.asarray(data.read_tokens(tmp_path / "pairs", s)) for s in data.SPLITS])
    assert (tokens == meta["sep_id"]).sum() == (tokens == meta["eot_id"]).sum() == 60


def test_text_files_mix_with_json_that_names_another_field(tmp_path):
    (tmp_path / "notes.txt").write_text("plain text document one\n")
    with open(tmp_path / "rows.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({"story": f"story {i} about a model"}) + "\n")
    meta = data.tokenize(
        _cfg(
            {
                "files": [str(tmp_path / "notes.txt"), str(tmp_path / "rows.jsonl")],
                "text_field": "story",
                "sample_by": "document",
            }
        ),
        tmp_path / "out",
    )
    assert meta["corpus"]["documents"] == 6


def test_hub_loader_with_a_local_dataset_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    with open(folder / "train.jsonl", "w") as f:
        for i in range(80):
            f.write(json.dumps({"story": f"Once upon a time {i} there was a tiny model."}) + "\n")
    meta = data.tokenize(
        _cfg({"hf": str(folder), "name": None, "split": "train", "text_field": "story", "max_documents": 50}),
        tmp_path / "out",
    )
    assert meta["corpus"]["source"] == "hf" and meta["corpus"]["documents"] == 50
    with pytest.raises(ScalelabError, match="no field 'text'"):
        data.tokenize(_cfg({"hf": str(folder), "split": "train", "text_field": "text"}), tmp_path / "bad")
    with pytest.raises(ScalelabError, match="could not load"):
        data.tokenize(
            _cfg({"hf": "no-such-org/no-such-dataset-xyz", "split": "train", "text_field": "text"}), tmp_path / "bad2"
        )


def test_stdlib_source_lists_python_files():
    files = data.stdlib_files()
    assert len(files) > 100 and all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts for f in files)


def test_too_few_tokens_fails_before_writing_and_keeps_old_outputs(tmp_path):
    make_corpus(tmp_path / "c", documents=30)
    cfg = _cfg({"files": [str(tmp_path / "c/*.txt")]}, allow_repeat=False)
    out = tmp_path / "out"
    data.tokenize(cfg, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    spec = json.dumps({**cfg, "tokenizer": {"vocab_size": 280}})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalelab",
            "tokenize",
            "--spec",
            spec,
            "--out",
            str(out),
            "--require",
            json.dumps({"train": 10_000_000}),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "allow_repeat" in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "blank.txt").write_text("   \n\n")
    with pytest.raises(ScalelabError, match="no non-empty documents"):
        data.tokenize(_cfg({"files": [str(tmp_path / "blank.txt")]}), tmp_path / "out")


@pytest.mark.parametrize("as_dict", [False, True], ids=["Dataset", "DatasetDict"])
def test_hub_loader_reads_a_save_to_disk_folder_offline(tmp_path, monkeypatch, as_dict):
    """The usual way to keep a preprocessed HF dataset on disk; a DatasetDict gives data.source.split."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = {"story": [f"Once upon a time {i} there was a tiny model that learned." for i in range(80)]}
    saved = datasets.Dataset.from_dict(rows)
    if as_dict:
        saved = datasets.DatasetDict({"train": saved, "validation": datasets.Dataset.from_dict({"story": ["x"]})})
    folder = tmp_path / "saved"
    saved.save_to_disk(str(folder))
    source = {"hf": str(folder), "name": None, "split": "train", "text_field": "story", "max_documents": 60}
    meta = data.tokenize(_cfg(source), tmp_path / "out")
    assert meta["corpus"]["documents"] == 60 and meta["corpus"]["hf"] == str(folder)
    assert meta["settings"]["source"]["hf"] == str(folder)
    # The same rows from a parquet folder give the same tokens.
    (tmp_path / "parquet").mkdir()
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "parquet" / "train.parquet"))
    other = data.tokenize(_cfg({**source, "hf": str(tmp_path / "parquet")}), tmp_path / "out2")
    assert other["corpus"]["fingerprint"] == meta["corpus"]["fingerprint"]
    assert (tmp_path / "out" / "train.bin").read_bytes() == (tmp_path / "out2" / "train.bin").read_bytes()
    if as_dict:
        with pytest.raises(ScalelabError, match="'test' is not a split of the saved dataset.*train, validation"):
            data.tokenize(_cfg({**source, "split": "test"}), tmp_path / "bad")


def test_a_local_hf_folder_that_is_neither_is_refused_when_the_dag_is_built(tmp_path):
    from scalelab.config import load as config

    folder = tmp_path / "empty"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.md").write_text("not data")
    cfg = config.validate({"data": {"source": {"hf": str(folder)}}})
    with pytest.raises(ScalelabError, match="data.source.hf: .* neither a dataset saved with save_to_disk"):
        config.source_files(cfg)
    (folder / "sub" / "train.jsonl").write_text('{"text": "a"}\n')
    assert config.source_files(cfg) == []  # a folder of data files: load_dataset's
    assert config.source_files(config.validate({"data": {"source": {"hf": "roneneldan/TinyStories"}}})) == []

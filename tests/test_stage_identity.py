"""Unit tests of the files-only identity checks: scalelab.plan.stage_identity (evaluate, fit,
suggest, report) and scalelab.data.content (the corpus by content, an `hf:` local folder included)."""

from __future__ import annotations

import json
from pathlib import Path

from scalelab.data import content
from scalelab.plan import stage_identity

SPEC = json.dumps({"test_tokens": 512, "task": "continuation", "device": "auto"}, sort_keys=True)


def test_an_output_written_before_identities_is_compared_by_its_settings_only():
    old = {"run": "r", "settings": {"test_tokens": 512, "task": "continuation", "device": "auto", "bleu": "13a"}}
    assert stage_identity.why_stale(old, SPEC, "newcode", "evaluate") is None  # no code recorded: not a reason
    old["settings"]["test_tokens"] = 1024
    assert "test_tokens" in stage_identity.why_stale(old, SPEC, "newcode", "evaluate")


def test_a_recorded_identity_is_compared_by_spec_and_code():
    written = {"run": "r", "identity": {"spec": SPEC, "code": "c1"}}
    assert stage_identity.why_stale(written, SPEC, "c1", "evaluate") is None
    assert "evaluate code" in stage_identity.why_stale(written, SPEC, "c2", "evaluate")
    other = json.dumps({**json.loads(SPEC), "test_tokens": 256}, sort_keys=True)
    assert "(test_tokens)" in stage_identity.why_stale(written, other, "c1", "evaluate")


def _saved_dataset(folder: Path, rows: bytes) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text('{"_fingerprint": "abc"}')
    (folder / "dataset_info.json").write_text("{}")
    (folder / "data-00000-of-00001.arrow").write_bytes(rows)
    return {"source": {"hf": str(folder)}}


def test_a_changed_local_hf_folder_is_seen(tmp_path):
    data_cfg = _saved_dataset(tmp_path / "ds", b"300 rows" * 300)
    results = tmp_path / "results"
    results.mkdir()
    files = content.content_files(data_cfg, [])
    meta = {"corpus": {"fingerprint": "hub", "content_sha256": content.digest(files)[0]}}
    assert content.why_changed(results, meta, data_cfg, []) is None
    (tmp_path / "ds" / "data-00000-of-00001.arrow").write_bytes(b"150 rows" * 150)
    assert "data-00000-of-00001.arrow changed since it was tokenized" in content.why_changed(
        results, meta, data_cfg, []
    )


def test_a_meta_without_a_content_digest_is_trusted_on_first_sight_then_compared(tmp_path):
    data_cfg = _saved_dataset(tmp_path / "ds", b"a" * 100)
    results = tmp_path / "results"
    results.mkdir()
    meta = {"corpus": {"fingerprint": "hub"}}
    assert content.why_changed(results, meta, data_cfg, []) is None  # first sight: recorded in the cache
    assert content.why_changed(results, meta, data_cfg, []) is None
    (tmp_path / "ds" / "data-00000-of-00001.arrow").write_bytes(b"b" * 100)
    assert "changed since it was tokenized" in content.why_changed(results, meta, data_cfg, [])

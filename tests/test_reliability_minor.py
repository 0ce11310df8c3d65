"""Round-4 minor findings: a store quarantine said at the workflow's end, not only in a job's log;
the advice for a trunk checkpoint that does not load, which a plain rerun never rebuilt."""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from scalelab.errors import ScalelabError
from scalelab.plan import integrity
from scalelab.store import runs as store


def _entry(results: Path, spec: dict) -> str:
    run_dir = results / "runs" / spec["run"]
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(spec["run"].encode())
    (run_dir / "curve.csv").write_text("step,val_loss\n1,3.0\n")
    (run_dir / "metrics.json").write_text(json.dumps({"run": spec["run"], "spec_sha": store.spec_sha(spec)}))
    key = store.run_key(spec, "c0")
    store.save(results / "store", key, run_dir, "d0", spec, "c0")
    return key


def test_a_quarantined_store_entry_is_said_again_at_the_workflow_s_end(tmp_path):
    results = tmp_path / "results"
    mine, other = {"run": "a-4K-s0", "lr": 1e-3}, {"run": "b-4K-s0", "lr": 1e-3}
    key, other_key = _entry(results, mine), _entry(results, other)
    entries = results / "store"
    started = time.time()
    assert integrity.quarantined_since(results, started) == []
    shutil.rmtree(entries / key)
    shutil.copytree(entries / other_key, entries / key)  # another run's entry under this key
    assert store.lookup(entries, key, "d0", spec=mine) is None  # the train job quarantines it
    (line,) = integrity.quarantined_since(results, started)
    assert line.startswith(f"scalelab: {entries / key}: its manifest is for another run")
    assert f"moved to {entries / store.QUARANTINE}" in line and "scalelab prune --delete" in line
    assert integrity.quarantined_since(results, time.time() + 1) == []  # a later invocation: not again


def _zip_not_a_checkpoint(path: Path) -> None:
    """A zip archive (so the DAG's cheap check passes) that torch cannot load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")


@pytest.mark.parametrize("store_has_it", [True, False])
def test_a_zip_trunk_checkpoint_that_does_not_load_names_what_to_remove(tmp_path, store_has_it):
    """With a matching sidecar the DAG sees nothing wrong, so "rerun" alone looped: the advice names
    the checkpoint and its sidecar, and the trunk store's entry when it holds the same file."""
    from scalelab.train.resume import check_trunk_checkpoint

    ckpt = tmp_path / "results" / "trunks" / "fam" / "step12.ckpt"
    _zip_not_a_checkpoint(ckpt)
    sidecar = ckpt.with_suffix(".json")
    sidecar.write_text(json.dumps({"family": "fam", "step": 12, "key": "k1", "data_fingerprint": "d0"}))
    entry = tmp_path / "results" / "store" / "trunks" / "k1"
    entry.mkdir(parents=True)
    if store_has_it:
        shutil.copyfile(ckpt, entry / "state.ckpt")
    else:
        (entry / "state.ckpt").write_bytes(b"a whole state, say")
    assert integrity.trunk_checkpoint_damage(ckpt, {}, entry) is None  # what the DAG checks: fine
    with pytest.raises(ScalelabError) as caught:
        check_trunk_checkpoint(ckpt)
    message = str(caught.value)
    assert "\n" not in message and f"rm -r {ckpt} {sidecar}" in message
    assert (str(entry) in message) == store_has_it
    assert ("restores it from the trunk store" in message) != store_has_it

"""The model cache and what the rollout remembers (rollout/store.py): kept across instances (a restart), bounded
by MODEL_CACHE_COUNT with the active model, the candidate and a download in progress kept first, rollback
targets newest first, a damaged state file survived."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_inference.rollout.store import ModelEntry, ModelStore

pytestmark = pytest.mark.timeout(30)

BOOT = ModelEntry("b" * 64, "demo", "1.0", {"boot": True})


def entry(store: ModelStore, n: int) -> ModelEntry:
    sha = f"{n:064x}"
    store.model_file(sha).write_bytes(b"model %d" % n)
    return ModelEntry(sha, f"m{n}", f"{n}.0", {"url": f"https://h/m{n}.onnx?<redacted>"})


def test_the_active_model_and_its_history_survive_a_restart(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, 3)
    one, two = entry(store, 1), entry(store, 2)
    store.activate(one, BOOT, probation=True)
    store.activate(two, one, probation=True)
    again = ModelStore(tmp_path, 3)
    assert again.active() == two and [e.sha256 for e in again.history()] == [one.sha256, BOOT.sha256]
    assert again.get("probation")["sha256"] == two.sha256
    assert again.rollback_target() == one
    again.rolled_back(one, two)
    assert again.active() == one and again.history() == [BOOT] and again.get("probation") is None
    again.rolled_back(BOOT, one)
    assert again.active() is None and again.rollback_target() is None  # the boot model: nothing before it


def test_the_cache_keeps_model_cache_count_models_pinned_ones_first(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, 2)
    models = [entry(store, n) for n in range(1, 3)]
    store.update(candidate={"sha256": models[0].sha256}, pending={"sha256": models[1].sha256})
    before = BOOT
    for n in range(3, 6):
        models.append(entry(store, n))  # fetched, verified, then swapped in
        store.activate(models[-1], before, probation=False)
        before = models[-1]
    kept = {p.name.split(".")[0] for p in tmp_path.glob("*.onnx")}
    # the active model (5), the candidate (1) and the download in progress (2) stay even over the count
    assert kept == {models[4].sha256, models[0].sha256, models[1].sha256}
    assert store.history() == [BOOT]  # the others' files are gone: no rollback to them
    store.update(candidate=None, pending=None)
    store.remember(models[4])
    assert {p.name.split(".")[0] for p in tmp_path.glob("*.onnx")} == {models[4].sha256}
    assert [r["sha256"] for r in store.cached()] == [models[4].sha256]


def test_rollback_targets_whose_files_are_gone_are_skipped(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, 3)
    one, two = entry(store, 1), entry(store, 2)
    store.activate(one, BOOT, probation=False)
    store.activate(two, one, probation=False)
    store.model_file(one.sha256).unlink()
    assert store.rollback_target() == BOOT


def test_a_damaged_state_file_starts_afresh_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "rollout.json").write_text("{not json")
    store = ModelStore(tmp_path, 3)
    assert store.active() is None and "cannot be read" in caplog.text
    store.update(running=True)
    assert json.loads((tmp_path / "rollout.json").read_text())["running"] is True


def test_parts_other_than_the_one_to_resume_are_removed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, 3)
    keep, drop = store.part_file("a" * 64), store.part_file("c" * 64)
    keep.write_bytes(b"half")
    drop.write_bytes(b"old")
    store.remove_parts(keep="a" * 64)
    assert keep.exists() and not drop.exists()


def test_entries_read_back_never_raise(tmp_path: Path) -> None:
    assert ModelEntry.from_dict({"sha256": "x"}) is None and ModelEntry.from_dict("x") is None
    (tmp_path / "rollout.json").write_text(json.dumps({"active": {"name": 1}, "history": ["x", None]}))
    store = ModelStore(tmp_path, 3)
    assert store.active() is None and store.history() == []
    logging.getLogger(__name__).info("ok")

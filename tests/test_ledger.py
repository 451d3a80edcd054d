"""The ledger's retention: finished frames are forgotten after a while, in steps, except those that must stay."""

from __future__ import annotations

import time
from pathlib import Path

from edge_inference.share.ledger import Ledger, LedgerEntry

DAY = 86400.0


def ledger_with(tmp_path: Path, ages_days: dict[str, float], state: str = "done") -> Ledger:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    now = time.time()
    for name, age in ages_days.items():
        ledger.record(f"id-{name}", f"cam/{name}.jpg", 100, 1, state)
        ledger._db.execute("UPDATE frames SET updated_at = ? WHERE frame_id = ?", (now - age * DAY, f"id-{name}"))
    return ledger


def test_finished_frames_older_than_the_cutoff_are_forgotten_in_steps(tmp_path: Path) -> None:
    ledger = ledger_with(tmp_path, {f"old{i}": 10 + i for i in range(5)} | {"new": 1})
    ledger.record("id-claimed", "cam/claimed.jpg", 1, 1, "claimed")
    gone, more = ledger.prune(7 * DAY, limit=3)
    assert len(gone) == 3 and more
    gone2, more2 = ledger.prune(7 * DAY, limit=3)
    assert len(gone2) == 2 and not more2
    assert sorted(gone + gone2) == sorted(f"id-old{i}" for i in range(5))
    # the recent frame and the claimed one (never finished) stay
    assert ledger.state("id-new") == "done" and ledger.state("id-claimed") == "claimed"
    assert ledger.counts() == {"done": 1, "claimed": 1}


def test_a_frame_that_must_stay_is_kept_and_not_checked_again_until_the_next_period(tmp_path: Path) -> None:
    ledger = ledger_with(tmp_path, {"here": 30, "gone": 30}, state="failed")
    asked: list[str] = []

    def keep(entry: LedgerEntry) -> bool:
        asked.append(entry.rel_path)
        return entry.rel_path == "cam/here.jpg"

    assert ledger.prune(7 * DAY, keep) == (["id-gone"], False)
    assert ledger.state("id-here") == "failed"
    assert ledger.prune(7 * DAY, keep) == ([], False)  # its time was renewed: not asked about again
    assert sorted(asked) == ["cam/gone.jpg", "cam/here.jpg"]


def test_forgetting_a_reprocessed_frame_forgets_its_generation(tmp_path: Path) -> None:
    ledger = ledger_with(tmp_path, {"a": 1})
    assert ledger.reopen(["id-a"]) == {"id-a": 1}
    ledger.record("id-a", "cam/a.jpg", 100, 1, "done")
    assert ledger.generations() == {"id-a": 1}
    assert ledger.prune(0, now=time.time() + 1) == (["id-a"], False)
    assert ledger.generations() == {}
    # processed again later, it starts a new count
    ledger.record("id-a", "cam/a.jpg", 100, 1, "done")
    assert ledger.reopen(["id-a"]) == {"id-a": 1}

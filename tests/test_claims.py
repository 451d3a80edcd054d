"""The claim area under concurrency: claims on one thread, dispositions (which prune emptied folders) on another."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

from edge_inference.share.claims import HEARTBEAT, ClaimArea


def test_claiming_while_emptied_folders_are_pruned_never_fails_or_loses_a_frame(tmp_path: Path) -> None:
    # given a burst of frames in a few folders, as in a 1,000-file burst from a line PC
    inp, out = tmp_path / "input", tmp_path / "output"
    names = [f"burst/{i % 2:02d}/{i:05d}.jpg" for i in range(3000)]
    for name in names:
        (inp / name).parent.mkdir(parents=True, exist_ok=True)
        (inp / name).write_bytes(b"x")
    claims = ClaimArea(inp, out, "r1", "delete", 300)
    claims.prepare()
    claimed: queue.Queue[tuple[str, Path] | None] = queue.Queue(maxsize=1)  # in step: folders empty often
    errors: list[BaseException] = []
    lost: list[str] = []

    def claimer() -> None:  # the watcher's thread
        try:
            for name in names:
                path = claims.claim(name)
                if path is None:
                    lost.append(name)
                else:
                    claimed.put((name, path))
        except BaseException as exc:
            errors.append(exc)
        finally:
            claimed.put(None)

    def disposer() -> None:  # the dispatcher's thread: each disposition prunes the folder it emptied
        while (item := claimed.get()) is not None:
            try:
                claims.dispose(item[0], ok=True)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=claimer), threading.Thread(target=disposer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # then every frame was claimed once and disposed of, and nothing raised
    assert errors == [] and lost == []
    assert not any(p.is_file() for p in inp.rglob("*.jpg"))
    assert list(claims.claimed()) == []


def test_a_silent_replicas_temp_files_go_with_its_claims_and_a_live_ones_stay(tmp_path: Path) -> None:
    # given replica "dead" killed -9 mid-write (claims, and a group of result temp files in the output share),
    # and replica "dead.b" (a prefix of no use: a different replica) still alive and writing
    inp, out = tmp_path / "input", tmp_path / "output"
    for replica, age in (("dead", 400.0), ("dead.b", 0.0)):
        area = ClaimArea(inp, out, replica, "delete", 300)
        area.prepare()
        (inp / "cam" / f"{replica}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (inp / "cam" / f"{replica}.jpg").write_bytes(b"x")
        assert area.claim(f"cam/{replica}.jpg") is not None
        beat = area.own / HEARTBEAT
        os.utime(beat, (time.time() - age, time.time() - age))
    temps = [out / "results" / "cam" / f".{i}.jpg.json.dead.4242.17.tmp" for i in range(11)]
    live = out / "results" / "cam" / ".x.jpg.json.dead.b.4343.18.tmp"
    kept = [out / "results" / "cam" / "0.jpg.json", out / "results" / "cam" / ".y.jpg.json.other.dead.1.tmp"]
    for p in (*temps, live, *kept):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    # when the replica started in its place (a new name) adopts what the silent one left
    claims = ClaimArea(inp, out, "new", "delete", 300)
    claims.prepare()
    assert claims.adopt_stale() == 1
    # then the silent replica's temp files are gone with its claims; the live one's and every other file stay
    assert not any(p.exists() for p in temps)
    assert live.exists() and all(p.exists() for p in kept)
    # and a second adoption pass does not walk the output share again for the same replica
    again = out / "results" / "cam" / ".z.jpg.json.dead.4242.17.tmp"
    again.write_bytes(b"x")
    assert claims.adopt_stale() == 0 and again.exists()

"""The claim area under concurrency: claims on one thread, dispositions (which prune emptied folders) on another."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from edge_inference.share.claims import ClaimArea


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

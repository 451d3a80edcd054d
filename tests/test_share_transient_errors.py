"""Every share operation meets each passing network error (EIO, EHOSTDOWN, ESTALE, ETIMEDOUT, ECONNABORTED,
ENOTCONN) and the module takes it in its stride: no stage dies, the frames wait, and once the share answers
again every frame is done exactly once.

A real network blip cannot be made on demand at one chosen operation, so the error is injected there: the
module under test gets an `os` whose named function fails with the armed errno while armed (`FlakyOs`). The
rest is real (files, inotify, the pipeline, ONNX Runtime). The real thing - smbd stopped for 20 s under a FUSE
mount - is in test_smb_share.py.
"""

# ruff: noqa: F811 (the pipeline fixtures of test_pipeline.py are imported, then named as test arguments)

from __future__ import annotations

import collections
import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_inference.share import candidates, claims, results, scanner, share_fs
from edge_inference.vision import decode
from tests.test_pipeline import Running, eventually, frame, model_path, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(90)

ERRNOS = (errno.EIO, errno.EHOSTDOWN, errno.ESTALE, errno.ETIMEDOUT, errno.ECONNABORTED, errno.ENOTCONN)


class FlakyOs:
    """Stands in for `os` in one module: the functions named fail with `armed` (an errno) while it is set."""

    def __init__(self, names: tuple[str, ...], only: Callable[[tuple[Any, ...]], bool] = lambda args: True) -> None:
        self.names = names
        self.only = only
        self.armed: int | None = None
        self.fired: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:
        real = getattr(os, attr)
        if attr not in self.names:
            return real

        def flaky(*args: Any, **kwargs: Any) -> Any:
            armed = self.armed
            if armed is not None and self.only(args):
                with self._lock:
                    self.fired[armed] += 1
                raise OSError(armed, os.strerror(armed))
            return real(*args, **kwargs)

        return flaky


def under(root: Path) -> Callable[[tuple[Any, ...]], bool]:
    return lambda args: bool(args) and str(args[0]).startswith(str(root))


# operation -> (module whose `os` is flaky, functions, which calls; env of the run)
OPERATIONS: dict[str, tuple[Any, tuple[str, ...], str, dict[str, str]]] = {
    "watcher stat": (candidates, ("stat",), "input", {}),
    "folder poll and sweep": (scanner, ("lstat", "open"), "input", {"WATCH_MODE": "poll"}),
    "claim rename": (claims, ("rename",), "any", {}),
    "claimed frame read": (decode, ("stat", "open"), "any", {}),
    "archive move": (share_fs, ("rename",), "any", {}),
    "claim area walk": (claims, ("fwalk",), "any", {}),
    "adoption scan": (claims, ("scandir",), "any", {}),
    "result write": (results, ("rename",), "any", {}),
    "keep-mode check": (share_fs, ("stat",), "any", {"INPUT_DISPOSITION": "keep"}),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_passing_share_error_at_each_operation_loses_nothing_and_kills_nothing(  # type: ignore[no-untyped-def]
    start, shares, monkeypatch, operation
) -> None:
    module, names, scope, env = OPERATIONS[operation]
    flaky = FlakyOs(names, under(shares["input"]) if scope == "input" else lambda args: True)
    run: Running = start(CLAIM_STALE_SECONDS="5", **env)
    monkeypatch.setattr(module, "os", flaky)
    dropped: list[str] = []
    for i, code in enumerate(ERRNOS):
        # when the share answers this operation with `code` while a frame arrives
        flaky.armed = code
        dropped.append(frame(shares["input"] / "cam" / f"{i}.jpg", seed=i).relative_to(shares["input"]).as_posix())
        run.pipeline.gate.want_reconcile()  # the housekeeping reconciles (and adopts) at its next round
        assert eventually(lambda code=code: flaky.fired[code] > 0, 10), (
            f"{operation}: {errno.errorcode[code]} never hit"
        )
        assert not run.pipeline.stage_death() and run.module.watcher.error is None and run.module.watcher.alive()
    # then, once it answers again, every frame is done exactly once and nothing died
    flaky.armed = None
    wanted = set(dropped)
    assert eventually(lambda: wanted <= {r.rel_path for r in run.collector.results}, 30), (
        f"{operation}: not done {wanted - {r.rel_path for r in run.collector.results}}"
    )
    time.sleep(0.5)
    paths = [r.rel_path for r in run.collector.results]
    assert sorted(paths) == sorted(dropped) and all(r.ok for r in run.collector.results)
    assert not run.pipeline.stage_death() and run.module.watcher.error is None and run.module.watcher.alive()
    if env.get("INPUT_DISPOSITION") != "keep":
        claimed = shares["input"] / ".edge-inference" / "claims"
        assert eventually(lambda: not [p for p in claimed.rglob("*.jpg")], 10)
        assert eventually(lambda: len(list((shares["output"] / "processed").rglob("*.jpg"))) == len(dropped), 10)
    assert eventually(lambda: not run.pipeline.gate.blocked, 5)


def test_every_listed_errno_counts_as_passing_and_a_held_file_as_busy() -> None:
    for code in ERRNOS:
        assert share_fs.is_transient(OSError(code, os.strerror(code)))
    assert share_fs.is_busy(OSError(errno.EBUSY, "busy")) and share_fs.is_busy(OSError(errno.EACCES, "denied"))
    assert not share_fs.is_transient(FileNotFoundError(errno.ENOENT, "gone"))
    assert not share_fs.is_busy(share_fs.OutsideShare("a/b.jpg", "a"))

"""Shared fixtures: temp shares, tiny models, and a guard that fails a test leaking threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def no_thread_leaks() -> Iterator[None]:
    """Fail the test if it leaves non-daemon or pipeline threads running (watchdog's conftest habit)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads leaked: {[t.name for t in leaked]}"


@pytest.fixture
def shares(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("input", "output", "state")}
    for d in dirs.values():
        d.mkdir()
    return dirs

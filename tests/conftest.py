"""Shared fixtures: temp shares, tiny models, and a guard that fails a test leaking threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http_support import assert_no_new_threads


@pytest.fixture
def no_thread_leaks() -> Iterator[None]:
    """Fail the test if it leaves non-daemon or pipeline threads running (watchdog's conftest habit)."""
    before = set(threading.enumerate())
    yield
    assert_no_new_threads(before, grace=5.0)


@pytest.fixture
def shares(tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("input", "output", "state")}
    for d in dirs.values():
        d.mkdir()
    return dirs

"""The decode budgets on their own: a decode past its time is abandoned (and still counted until it ends), the
memory of all decodes in flight is shared, and a /predict caller is refused (503) where a share frame waits."""

from __future__ import annotations

import threading
import time

import pytest

from edge_inference.errors import FrameError, UnavailableError
from edge_inference.vision.decode_guard import DecodeGuard

pytestmark = pytest.mark.timeout(20)


def test_a_decode_past_its_budget_is_abandoned_and_its_memory_counted_until_it_ends() -> None:
    guard = DecodeGuard(0.2, 1000, max_overruns=1)
    release = threading.Event()
    with pytest.raises(FrameError) as err:
        guard.run(600, lambda: release.wait(10))
    assert err.value.code == "decode_timeout" and "DECODE_TIMEOUT_SECONDS" in err.value.message
    assert (guard.overruns, guard.reserved_bytes) == (1, 600)
    # while it runs on, the overrun cap is reached: /predict is refused with a reason, a share frame waits
    with pytest.raises(UnavailableError) as busy:
        guard.run(10, lambda: "image")
    assert "still running" in str(busy.value)
    threading.Timer(0.3, release.set).start()
    assert guard.run(10, lambda: "image", keep_waiting=lambda: True) == "image"
    assert (guard.overruns, guard.reserved_bytes) == (0, 0)


def test_decodes_in_flight_share_the_memory_budget() -> None:
    guard = DecodeGuard(5.0, 1000, max_overruns=2)
    inside, leave = threading.Event(), threading.Event()

    def big() -> str:
        inside.set()
        leave.wait(5)
        return "big"

    worker = threading.Thread(target=lambda: guard.run(800, big))
    worker.start()
    assert inside.wait(5)
    with pytest.raises(UnavailableError):  # 800 + 300 > 1000: /predict is told to come back
        guard.run(300, lambda: "other")
    assert guard.run(150, lambda: "small") == "small"  # 800 + 150 fits
    started = time.monotonic()
    threading.Timer(0.3, leave.set).start()
    assert guard.run(300, lambda: "other", keep_waiting=lambda: True) == "other"  # a share frame waited its turn
    assert time.monotonic() - started >= 0.25
    worker.join(5)
    assert guard.reserved_bytes == 0


def test_an_error_in_the_decode_reaches_the_caller() -> None:
    guard = DecodeGuard(5.0, 1000, max_overruns=1)

    def broken() -> None:
        raise ValueError("bad bytes")

    with pytest.raises(ValueError, match="bad bytes"):
        guard.run(10, broken)
    assert guard.reserved_bytes == 0


def test_helper_threads_are_kept_between_decodes_and_an_abandoned_one_does_not_hold_up_the_next() -> None:
    guard = DecodeGuard(0.3, 1000, max_overruns=2)
    names = {guard.run(10, lambda: threading.current_thread().name) for _ in range(5)}
    idents = {guard.run(10, threading.get_ident) for _ in range(5)}
    assert len(idents) == 1 and names == {"decode-run"}  # one kept helper, not a thread per decode
    release = threading.Event()
    with pytest.raises(FrameError):
        guard.run(10, lambda: release.wait(10))
    # the helper running the abandoned decode is busy: the next decode gets a helper of its own at once
    other = guard.run(10, threading.get_ident)  # within its 0.3 s budget, or FrameError
    assert other not in idents and guard.overruns == 1
    release.set()
    deadline = time.monotonic() + 5
    while guard.overruns and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.overruns == 0

"""The decode time and memory budgets: a bomb never holds up the frames behind it, and decodes cannot add up.

`DecodeGuard.run(nbytes, decode)` first reserves the frame's estimated decode memory (`ImageHeader.decode_bytes`)
out of MAX_DECODE_MB, shared by every decode in flight (decode workers and /predict callers together), then runs
the decode on a helper thread and waits at most DECODE_TIMEOUT_SECONDS for it. Helper threads are kept between
decodes (`_Helpers`: starting a thread per frame cost more than the hop itself); one is started only when none
is idle, e.g. while one runs an abandoned decode out. A decode past its budget fails
its frame at once (`decode_timeout`) and the caller goes on to the next frame. The decode itself cannot be
interrupted (OpenCV has no cancel): it runs out on its thread, its memory still counted until it ends, and its
image is dropped. At most `max_overruns` such decodes may run on at once, so that bombs cannot take every core.

When the budget is taken (memory, or too many overruns): a share frame waits for it (it checks `keep_waiting`,
the stop event, between short waits); a /predict request (`keep_waiting=None`) is refused with UnavailableError
(503 and Retry-After) instead of holding its connection.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from edge_inference.errors import FrameError, UnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

_WAIT = 0.1  # seconds between checks of `keep_waiting` while the budget is taken
HELPER_IDLE_S = 1.0  # an idle decode helper thread ends after this long


class _Helpers:
    """Daemon threads that run decodes, kept between them; a new one starts only when none is idle, and an idle
    one ends after HELPER_IDLE_S (never joined: an abandoned decode must not hold up the module's exit).

    `_idle` counts the helpers waiting for a task less the tasks already promised to them, so a helper may end only
    while more helpers wait than tasks are on their way. A helper counts itself idle before it runs the task's
    `done`, which tells the caller the decode ended: the caller's next decode then finds it idle."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[tuple[Callable[[], None], Callable[[], None]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, task: Callable[[], None], done: Callable[[], None]) -> None:
        """Run `task()` then `done()` on a helper; neither may raise."""
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._serve, name="decode-run", daemon=True).start()
        self._tasks.put((task, done))

    def _serve(self) -> None:
        while True:
            try:
                task, done = self._tasks.get(timeout=HELPER_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # no task is on its way to this helper: it may go
                        self._idle -= 1
                        return
                continue
            task()
            with self._lock:
                self._idle += 1
            done()


class DecodeGuard:
    """Runs decodes under a time budget per decode and a memory budget for all of them together."""

    def __init__(self, timeout_seconds: float, max_bytes: int, max_overruns: int) -> None:
        self.timeout = timeout_seconds
        self.max_bytes = max_bytes
        self.max_overruns = max(1, max_overruns)
        self._cond = threading.Condition()
        self._reserved = 0
        self._overruns = 0  # decodes past their budget, still running on their helper thread
        self._helpers = _Helpers()

    @property
    def overruns(self) -> int:
        with self._cond:
            return self._overruns

    @property
    def reserved_bytes(self) -> int:
        with self._cond:
            return self._reserved

    def run(self, nbytes: int, decode: Callable[[], T], keep_waiting: Callable[[], bool] | None = None) -> T:
        """`decode()`'s value (or exception) within the time budget; FrameError `decode_timeout` past it."""
        nbytes = min(max(0, nbytes), self.max_bytes)  # one frame over the limit alone was refused by its header
        self._reserve(nbytes, keep_waiting)
        outcome: list[T] = []
        failure: list[BaseException] = []
        finished = threading.Event()
        abandoned = False

        def work() -> None:
            try:
                outcome.append(decode())
            except BaseException as exc:
                failure.append(exc)

        def done() -> None:
            with self._cond:
                finished.set()
                if abandoned:  # the caller has long moved on: only the budget is left to settle
                    self._reserved -= nbytes
                    self._overruns -= 1
                    self._cond.notify_all()
                    log.warning("an abandoned decode ended; its memory is free again")

        self._helpers.submit(work, done)
        if not finished.wait(self.timeout):
            with self._cond:
                if not finished.is_set():
                    abandoned = True
                    self._overruns += 1
                    raise FrameError(
                        FrameError.DECODE_TIMEOUT,
                        f"the decode ran past its budget of {self.timeout:g} s (DECODE_TIMEOUT_SECONDS): abandoned",
                    )
        with self._cond:
            self._reserved -= nbytes
            self._cond.notify_all()
        if failure:
            raise failure[0]
        return outcome[0]

    def _reserve(self, nbytes: int, keep_waiting: Callable[[], bool] | None) -> None:
        with self._cond:
            while self._busy(nbytes):
                if keep_waiting is None:
                    raise UnavailableError(self._why_busy(), 1.0)
                if not keep_waiting():
                    break  # shutting down: the frame is finished or left claimed either way
                self._cond.wait(_WAIT)
            self._reserved += nbytes

    def _busy(self, nbytes: int) -> bool:
        over_memory = self._reserved > 0 and self._reserved + nbytes > self.max_bytes
        return over_memory or self._overruns >= self.max_overruns

    def _why_busy(self) -> str:
        if self._overruns >= self.max_overruns:
            return f"{self._overruns} decodes past DECODE_TIMEOUT_SECONDS are still running: try again shortly"
        return "the decodes in flight use MAX_DECODE_MB: try again shortly"

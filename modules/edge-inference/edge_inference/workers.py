"""The one thread base of the module: every long-lived loop is a `Worker`, and a `Supervisor` watches them all.

    Worker            a named thread with a stop event. On its thread: `setup()` (False ends it quietly) ->
                      `run()` -> `teardown()`. `stop(timeout)` sets the stop event, calls `wake()` so that a loop
                      blocked elsewhere notices, and joins.
    PeriodicWorker    a Worker whose `run()` calls `tick()` every `interval` seconds (or sooner when `wake()`d).
    Supervisor        told when a worker dies; the composition root waits on it and exits with code 1.

A worker dies when an exception escapes `setup`/`run`/`teardown`, or when `run()` returns while nobody asked it
to stop: its `error` is set, one line is logged, and its supervisor is told. Whoever kills a thread from the
outside (an exception injected into it, as the supervision tests do) is seen the same way.

Threads that write results or move frames are not daemons (`daemon=False`, the default): the interpreter waits
for their last write. Loops that hold nothing to finish may be daemons.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edge_inference.errors import EdgeInferenceError, WorkerDied

log = logging.getLogger(__name__)


class Supervisor:
    """Where workers report their death; `failed` is set at the first one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
        self._deaths: list[tuple[str, BaseException]] = []
        self.failed = threading.Event()

    def register(self, worker: Worker) -> None:
        with self._lock:
            self._workers.append(worker)

    def report(self, worker: Worker, error: BaseException) -> None:
        with self._lock:
            self._deaths.append((worker.name, error))
        self.failed.set()

    @property
    def workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers)

    def first_death(self) -> tuple[str, BaseException] | None:
        with self._lock:
            return self._deaths[0] if self._deaths else None

    def describe_death(self) -> str:
        """`<worker> died: <error>` for the first death, or "" when every worker is well."""
        death = self.first_death()
        if death is None:
            return ""
        name, error = death
        return f"{name} died: {type(error).__name__}: {error}"


class Worker:
    """A named long-lived thread with a stop event, start/stop hooks and a death report."""

    def __init__(self, name: str, supervisor: Supervisor | None = None, *, daemon: bool = False) -> None:
        self.name = name
        self.daemon = daemon
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._supervisor = supervisor
        if supervisor is not None:
            supervisor.register(self)

    # -- what subclasses write ---------------------------------------------------------------------------------
    def setup(self) -> bool:
        """On the worker's thread, before `run()`; False ends the thread quietly (nothing to do)."""
        return True

    def run(self) -> None:
        """The loop: return once `stopping` is true (check it at least every few hundred milliseconds)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """On the worker's thread, after `run()` (also when it raised)."""

    def wake(self) -> None:
        """Unblock `run()` when asked to stop (a trigger to pull, a queue to poke); the stop event is set first."""

    # -- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking at once when asked to stop; True when stopping."""
        return self._stop.wait(seconds)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} can be started once")
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=self.daemon)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()
        self.wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has (or never started)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the worker to stop and wait up to `timeout` seconds; True when its thread ended."""
        self.request_stop()
        ended = self.join(timeout)
        if not ended:
            log.warning("%s did not stop within %.1f s", self.name, timeout)
        return ended

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            if not self.setup():
                return
            try:
                self.run()
            finally:
                self.teardown()
            if not self._stop.is_set():
                raise WorkerDied(f"{self.name} ended without being asked to stop")
        except BaseException as exc:  # a dead worker stops the module (exit code 1), never hides
            self.error = exc
            if isinstance(exc, EdgeInferenceError):  # a failure the module names (a lost GPU): one line
                log.error("worker %s stopped: %s", self.name, exc)
            else:
                log.error("worker %s died: %s: %s", self.name, type(exc).__name__, exc, exc_info=exc)
            if self._supervisor is not None:
                self._supervisor.report(self, exc)


class PeriodicWorker(Worker):
    """Calls `tick()` every `interval` seconds, or sooner after `wake()`; `first_tick_at_start` ticks at once.

    `tolerant`: an `Exception` from one tick is logged and the next tick comes (a watch never dies of one bad
    reading); otherwise it kills the worker. Anything that is not an `Exception` always does."""

    def __init__(
        self,
        name: str,
        interval: float,
        supervisor: Supervisor | None = None,
        *,
        tick: Callable[[], None] | None = None,
        first_tick_at_start: bool = False,
        tolerant: bool = False,
        daemon: bool = False,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"{name}: interval must be positive, got {interval}")
        super().__init__(name, supervisor, daemon=daemon)
        self.interval = interval
        self._tick = tick
        self._first_tick_at_start = first_tick_at_start
        self._tolerant = tolerant
        self._kick = threading.Event()

    def tick(self) -> None:
        if self._tick is None:
            raise NotImplementedError
        self._tick()

    def wake(self) -> None:
        self._kick.set()

    def run(self) -> None:
        if self._first_tick_at_start:
            self._one_tick()
        while not self.stopping:
            self._kick.wait(self.interval)
            self._kick.clear()
            if self.stopping:
                return
            self._one_tick()

    def _one_tick(self) -> None:
        if not self._tolerant:
            self.tick()
            return
        try:
            self.tick()
        except Exception:
            log.exception("%s: tick failed", self.name)

"""Blocking calls with a deadline: the sync IoT SDK waits without one (`connect`, `get_twin`,
`send_message_to_output`, ... block on the SDK's pipeline callback), so the IoT client runs each SDK call through
`SdkCaller`: on a worker thread (`iot-sdk-call`), waited for at most the timeout. A worker stuck past it is
abandoned (a daemon, asked to stop: it ends if its call ever returns) and a fresh one takes the next call.
Nothing here imports the SDK: the calls are the client's closures.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from edge_inference.errors import SdkCallTimeout
from edge_inference.workers import Worker

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class _SdkCallWorker(Worker):
    """Runs the SDK calls handed to it, one at a time. A daemon that nobody joins: when a call hangs past the
    timeout the worker is abandoned (asked to stop, so it ends if the call ever returns)."""

    def __init__(self) -> None:
        super().__init__("iot-sdk-call", daemon=True)
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()

    def wake(self) -> None:
        self.jobs.put(None)

    def run(self) -> None:
        while not self.stopping:
            job = self.jobs.get()
            if job is None:
                continue
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the waiting caller
                future.set_exception(e)


class SdkCaller:
    """Runs blocking SDK calls on a worker thread and waits for each at most `timeout` seconds."""

    def __init__(self) -> None:
        self._worker: _SdkCallWorker | None = None
        self._lock = threading.Lock()
        self._abandoned = 0

    def call(self, fn: Callable[[], T], timeout: float, what: str) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._worker is None:
                self._worker = _SdkCallWorker()
                self._worker.start()
            worker = self._worker
        worker.jobs.put((fn, future))
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                if self._worker is worker:  # abandon the stuck worker; it ends when (if) its call returns
                    self._worker = None
                    self._abandoned += 1
                    worker.request_stop()
            raise SdkCallTimeout(f"{what} did not complete within {timeout:g} s") from None

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.request_stop()
                self._worker = None

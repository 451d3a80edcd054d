"""Where /predict enters the pipeline: an in-memory image is prepared on the caller's thread, put on the prepared
queue beside the share frames (same batcher, same model session), and answered by the dispatcher through a
future (`PendingRequests`); nothing is written to the shares.

Refused with `UnavailableError` (HTTP 503 + Retry-After) before the pipeline runs, once it is draining, when the
prepared queue stays full for 5 s, or when no result comes within the request's timeout.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from edge_inference.entities import FrameJob, FrameResult
from edge_inference.errors import UnavailableError
from edge_inference.pipeline.envelopes import Failed, Request, StageQueues
from edge_inference.pipeline.prepare import FramePreparer


class PendingRequests:
    """The /predict requests between the prepared queue and their answer, by job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, Request] = {}

    def add(self, job: FrameJob, request: Request) -> None:
        with self._lock:
            self._requests[id(job)] = request

    def take(self, job: FrameJob) -> Request | None:
        """The request of `job` (removed), or None when it is a share frame or was given up."""
        with self._lock:
            return self._requests.pop(id(job), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._requests)

    def fail_all(self, error: Exception) -> None:
        with self._lock:
            requests = list(self._requests.values())
            self._requests.clear()
        for request in requests:
            if not request.future.done():
                request.future.set_exception(error)


class Predictions:
    """`predict()` for the REST API and the self-test; open while the pipeline runs."""

    def __init__(self, preparer: FramePreparer, queues: StageQueues, requests: PendingRequests) -> None:
        self.preparer = preparer
        self.queues = queues
        self.requests = requests
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def predict(self, data: bytes, *, confidence: float | None = None, timeout: float = 30.0) -> FrameResult:
        if not self._open.is_set():
            raise UnavailableError("the module is not ready", 5.0)
        job = FrameJob(f"http/{uuid.uuid4().hex}", Path(), len(data), time.time_ns(), "http", time.monotonic(), data)
        item = self.preparer.prepare(job, keep_image=False)
        if isinstance(item, Failed):
            raise item.error
        future: Future[FrameResult] = Future()
        self.requests.add(job, Request(future, confidence))
        try:
            self.queues.prepared.put(item, timeout=min(timeout, 5.0))
        except queue.Full:
            self.requests.take(job)
            raise UnavailableError("the inference queue is full", 1.0) from None
        try:
            return future.result(timeout)
        except FutureTimeout:
            self.requests.take(job)
            raise UnavailableError(f"no result within {timeout:.0f} s", 1.0) from None

"""What travels between the pipeline's stages: frozen envelopes, and the bounded queues they travel in.

    intake   --FrameJob-->                     frames    (QUEUE_SIZE; never put into when full: intake answers
                                                          DEFER and the frame waits on the share)
    prepare  --PreparedFrame | Failed-->       prepared  (2 x batch + 2; blocks the decode workers when full)
    batcher  --Inferred-->                     inferred  (4 x batch + 4; blocks the batcher when full)
    dispatch --Finished--> finish (the same thread: a group of share frames made durable together)

/predict requests enter at `prepared`, so they share the batcher and the one model session with share frames.
Every blocking put waits in short steps and gives up once its stage is asked to stop.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edge_inference.entities import FrameJob, FrameResult, PreparedFrame
from edge_inference.errors import FrameError
from edge_inference.ops.live_settings import TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.vision.model import OnnxModel

WAIT_S = 0.1  # the longest any stage waits before checking whether it is asked to stop

T = TypeVar("T")


@dataclass(frozen=True)
class Failed:
    """A frame that failed before inference; travels down the same queues to the dispatcher.

    `vanished`: the file could not be read because the share went away (not the frame's fault): no result
    is written, the frame stays claimed and is retried when the share is back."""

    job: FrameJob
    error: FrameError
    timings_ms: Mapping[str, float]
    vanished: bool = False


@dataclass(frozen=True)
class Inferred:
    """A frame out of the batcher: its slice of each model output (None for a frame that failed earlier), its
    timings so far, inference included, and the model that made the output (its head and class names read it;
    the result names it): after a swap, frames batched before it still come from the old model."""

    item: PreparedFrame | Failed
    output: tuple[np.ndarray, ...] | None
    timings_ms: Mapping[str, float]
    tile_outputs: tuple[tuple[np.ndarray, ...], ...] = ()  # the outputs of the frame's other views (its tiles)
    model: OnnxModel | None = None


@dataclass(frozen=True)
class Finished:
    """A postprocessed share frame waiting for its durable write, with the live settings it was judged by."""

    job: FrameJob
    item: PreparedFrame | Failed
    result: FrameResult
    live: TwinSettings
    band_hit: bool = False  # a detection below the confidence threshold lies in the review band (pipeline/review.py)


@dataclass(frozen=True)
class Request:
    """An in-memory frame from /predict: the dispatcher completes its future instead of writing files."""

    future: Future[FrameResult]
    confidence: float | None


class StageQueues:
    """The three bounded queues between the stages (sizes and overflow policies: the module docstring)."""

    def __init__(self, queue_size: int, max_batch: int) -> None:
        self.frames: queue.Queue[FrameJob] = queue.Queue(maxsize=queue_size)
        self.prepared: queue.Queue[PreparedFrame | Failed] = queue.Queue(maxsize=2 * max_batch + 2)
        self.inferred: queue.Queue[Inferred] = queue.Queue(maxsize=4 * max_batch + 4)

    def depths(self) -> dict[str, int]:
        return {"frames": self.frames.qsize(), "prepared": self.prepared.qsize(), "done": self.inferred.qsize()}

    def empty(self) -> bool:
        return self.frames.empty() and self.prepared.empty() and self.inferred.empty()

    def show(self, metrics: MetricsRegistry) -> None:
        """Set `edge_inference_queue_depth{queue}`."""
        for name, depth in self.depths().items():
            metrics.queue_depth.labels(queue=name).set(depth)


def take(q: queue.Queue[T]) -> T | None:
    """The next item of `q`, or None after a short wait (the caller then checks whether it is asked to stop)."""
    try:
        return q.get(timeout=WAIT_S)
    except queue.Empty:
        return None


def put_until_stopped(q: queue.Queue[Any], item: Any, stopping: Callable[[], bool]) -> bool:
    """Put `item`, waiting while `q` is full (back-pressure up the chain); False when asked to stop first."""
    while not stopping():
        try:
            q.put(item, timeout=WAIT_S)
            return True
        except queue.Full:
            continue
    return False

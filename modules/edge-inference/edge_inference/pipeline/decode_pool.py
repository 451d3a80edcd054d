"""How many frames the decode pool decodes at once: enough to keep the model busy, no more.

The inference thread runs one batch after another; the decode workers keep it fed. With D ms of decoding and
letterboxing per frame (one thread) and M ms of model time per frame, ceil(D / M) workers decode as fast as the
model infers. More only take cores from the model (on the CPU provider ONNX Runtime's own threads run on the same
cores), fewer starve it. So a light model (the demo model: M about 6 ms against D about 8 ms for a 1080p JPEG)
gets every core for decoding, and a heavy one (a YOLOv8n-sized model on the CPU: M about 65 ms) gets one decode
worker - measured from the frames and the model actually running, not assumed from the provider.

With DECODE_WORKERS=0 one worker thread starts per usable CPU and `DecodeSlots` lets `limit` of them work at a
time, re-sized every few frames from the smoothed D (the workers' own measure) and M (`OnnxModel.frame_cost_ms`).
A set DECODE_WORKERS is a fixed pool: every worker works.

On the CPU provider, once the model is found to be the slower stage (M >= D), the decode workers lower their own
priority (`yield_to_model`): a decode thread that preempts one of ONNX Runtime's intra-op threads stalls the whole
operator (the others wait at its barrier). While decoding is the slower stage they keep the normal priority, so
that other processes on the host (other modules) do not take the cores the frames wait for. Lowering a priority
needs no privilege, raising it back does: it stays lowered.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

RESIZE_EVERY = 8  # frames between re-sizings: the smoothed figures move slowly, the limit need not follow each frame
SMOOTHING = 0.2  # weight of the newest frame in the moving average


class DecodeSlots:
    """A resizable limit on concurrent decodes; `workers` threads share `limit` slots."""

    def __init__(
        self,
        workers: int,
        *,
        adaptive: bool,
        model_cost_ms: Callable[[], float | None],
        initial: int,
        model_on_cpu: bool = False,
    ) -> None:
        self.workers = workers
        self.adaptive = adaptive
        self.model_cost_ms = model_cost_ms
        self.model_on_cpu = model_on_cpu
        self.limit = workers if not adaptive else max(1, min(workers, initial))
        self.decode_ms: float | None = None
        self.yield_to_model = False  # the model is the slower stage on the CPU: decode at a lower priority
        self._busy = 0
        self._seen = 0
        self._cond = threading.Condition()

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting at most `timeout` seconds (the worker then checks whether it is asked to stop)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._busy < self.limit, timeout):
                return False
            self._busy += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify()

    def observe(self, decode_ms: float) -> None:
        """One frame decoded (and letterboxed) in `decode_ms` by one worker."""
        with self._cond:
            last = self.decode_ms
            self.decode_ms = decode_ms if last is None else (1 - SMOOTHING) * last + SMOOTHING * decode_ms
            self._seen += 1
            if self._seen % RESIZE_EVERY:
                return
            model_ms = self.model_cost_ms()
            if self.model_on_cpu and model_ms is not None and model_ms >= self.decode_ms and not self.yield_to_model:
                log.info("decode pool: the model is the slower stage on the CPU: decoding at a lower priority")
                self.yield_to_model = True
            if not self.adaptive:
                return
            wanted = self.wanted(self.decode_ms, model_ms)
            if wanted != self.limit:
                log.info(
                    "decode pool: %d of %d workers (decode %.1f ms per frame, model %.1f ms per frame)",
                    wanted,
                    self.workers,
                    self.decode_ms,
                    self.model_cost_ms() or 0.0,
                )
                self.limit = wanted
                self._cond.notify_all()

    def wanted(self, decode_ms: float, model_ms: float | None) -> int:
        """ceil(decode / model) workers keep the model busy: between 1 and every worker."""
        if not model_ms or model_ms <= 0:
            return self.limit
        return max(1, min(self.workers, math.ceil(decode_ms / model_ms)))

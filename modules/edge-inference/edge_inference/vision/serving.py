"""Which loaded model serves the frames: the active one and, on probation after a swap, the one before it.

    ModelSlot.swap(new)     the rollout (rollout/controller.py) puts a verified, warmed model in; the batcher
                            reads `active` once per batch, so the swap falls between two batches: frames already
                            batched finish on the old model, the next batch runs on the new one
    probation               after a swap the old model stays loaded (`previous`) until the new one has served
                            `Probation.frames` frames or `Probation.seconds` have passed. A frame that fails on
                            the new model is run on the old one (`record` counts it): its result comes from the
                            old model, so nothing is lost, and `Probation.failures` such frames in a row swap the
                            old model back at once (`fall_back`: the automatic rollback)
    refit(...)              a prepared tensor letterboxed for one model's input, letterboxed again for another's
                            (frames prepared for the old model meet the new one after a swap; the candidate
                            shadow runs on the active model's tensors); a classifier's centre crop cannot be
                            refitted: such a frame runs on the model it was made for
    decode_options(...)     the thresholds a frame is judged by on a model (its live settings, its camera
                            profile's laid over them; class names read as that model's ids): the dispatcher and
                            the candidate shadow judge the same frame alike
    decode(...)             one frame's outputs read by the model that made them (its head and class names):
                            the dispatcher, the rollout's self-test and the candidate shadow read outputs here

Listeners (`subscribe`) hear every swap, confirmation and fall-back; they are called on the thread that caused
it (the batcher for a fall-back) and must only hand the event over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edge_inference.entities import Letterbox
from edge_inference.errors import ModelError
from edge_inference.ops.live_settings import TwinSettings
from edge_inference.vision import postprocess
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.preprocess import InputTransform, letterbox

log = logging.getLogger(__name__)

SlotChange = Literal["swapped", "confirmed", "fellBack"]


@dataclass(frozen=True)
class Probation:
    """How long a swapped-in model is watched with the old one at hand, and how many failed frames end it."""

    frames: int = 200  # frames served well by the new model before the old one is released
    seconds: float = 900.0  # or this long after the swap, whichever comes first
    failures: int = 5  # frames in a row the new model failed and the old one served: roll back


@dataclass(frozen=True)
class SlotEvent:
    change: SlotChange
    active: OnnxModel  # the model serving after the change
    other: OnnxModel | None  # swapped: the old model; fellBack: the model given up; confirmed: None
    reason: str = ""


SlotListener = Callable[[SlotEvent], None]


class ModelSlot:
    """The serving model, swapped atomically between batches; thread-safe."""

    def __init__(self, model: OnnxModel, probation: Probation | None = None) -> None:
        self._active = model
        self._previous: OnnxModel | None = None
        self.probation = probation or Probation()
        self._lock = threading.Lock()
        self._listeners: list[SlotListener] = []
        self._since = 0.0
        self._served = 0
        self._failed_in_a_row = 0

    @property
    def active(self) -> OnnxModel:
        return self._active  # one reference read: atomic

    @property
    def previous(self) -> OnnxModel | None:
        """The model before the last swap, while the new one is on probation; else None."""
        return self._previous

    def subscribe(self, listener: SlotListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def swap(self, new: OnnxModel, *, probation: bool = True) -> OnnxModel:
        """Make `new` the active model; returns the old one (kept as `previous` while `new` is on probation)."""
        with self._lock:
            old, self._active = self._active, new
            self._previous = old if probation else None
            self._since, self._served, self._failed_in_a_row = time.monotonic(), 0, 0
        self._tell(SlotEvent("swapped", new, old))
        return old

    def record(self, model: OnnxModel, served: int, failed_over: int) -> None:
        """A batch ran on `model`: `served` frames well, `failed_over` frames failed on it and were served by
        the previous model. Ends the probation, or rolls back, when it is time."""
        with self._lock:
            if model is not self._active or self._previous is None:
                return
            self._failed_in_a_row = self._failed_in_a_row + failed_over if failed_over else 0
            self._served += served
            failures = self._failed_in_a_row
        if failures >= self.probation.failures:
            self.fall_back(f"{failures} frames in a row failed on it (the model before it served them)")
        else:
            self.tick()

    def tick(self) -> None:
        """End the probation once the new model has served enough frames or long enough."""
        with self._lock:
            if self._previous is None:
                return
            due = self._served >= self.probation.frames or time.monotonic() - self._since >= self.probation.seconds
            if not due:
                return
            self._previous = None
            active = self._active
        log.info("model %s %s confirmed: the model before it is released", active.name, active.version)
        self._tell(SlotEvent("confirmed", active, None))

    def fall_back(self, reason: str) -> bool:
        """Swap the previous model back in (on probation only); False when there is none at hand."""
        with self._lock:
            previous = self._previous
            if previous is None:
                return False
            given_up, self._active, self._previous = self._active, previous, None
        log.error(
            "model %s %s rolled back to %s %s: %s",
            given_up.name,
            given_up.version,
            previous.name,
            previous.version,
            reason,
        )
        self._tell(SlotEvent("fellBack", previous, given_up, reason))
        return True

    def _tell(self, event: SlotEvent) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("model slot listener failed (%s)", event.change)


def fits(tensor: np.ndarray, made_by: InputTransform | None, model: OnnxModel) -> bool:
    """The tensor was made for this model's input: by its transform (`made_by`; None: compare size and type)."""
    if made_by is not None:
        return made_by == model.transform
    return tuple(tensor.shape[2:]) == model.input_hw and tensor.dtype == model.input.dtype


def refit(
    tensor: np.ndarray, box: Letterbox, made_by: InputTransform | None, model: OnnxModel
) -> tuple[np.ndarray, Letterbox] | None:
    """Letterbox a prepared [1, 3, H, W] tensor again for `model`'s input; the geometry still maps to the
    original frame. The picture is cut from the padding, resized and padded the way preprocess.py does (to the
    model's stride when it pads to one). None when one side is a classifier's centre crop: the picture outside it
    is gone, so only the model the frame was made for can take it."""
    if fits(tensor, made_by, model):
        return tensor, box
    if model.transform.kind != "letterbox" or (made_by is not None and made_by.kind != "letterbox"):
        return None
    h, w = tensor.shape[2:]
    x0, y0 = round(box.pad_x), round(box.pad_y)
    cw = min(w - x0, max(1, round(box.width * box.scale)))
    ch = min(h - y0, max(1, round(box.height * box.scale)))
    picture: Any = np.ascontiguousarray(tensor[0, :, y0 : y0 + ch, x0 : x0 + cw].transpose(1, 2, 0), np.float32)
    padded, inner = letterbox(picture * 255.0, model.input_hw, stride=model.transform.stride)
    out = (padded.transpose(2, 0, 1)[np.newaxis] / 255.0).astype(model.input.dtype)
    geometry = Letterbox(box.scale * inner.scale, inner.pad_x, inner.pad_y, box.width, box.height)
    return np.ascontiguousarray(out), geometry


def decode_options(
    model: OnnxModel, live: TwinSettings, *, agnostic: bool, confidence: float | None = None
) -> postprocess.DecodeOptions:
    """How `model` judges a frame under `live` (`confidence`: a /predict request's own, else the live one). Class
    names the model does not know are left out (a profile checked against another model: never refused here)."""
    ids = model.class_ids
    return postprocess.DecodeOptions(
        confidence=live.confidence_threshold if confidence is None else confidence,
        iou=live.iou_threshold,
        max_detections=live.max_detections,
        agnostic=agnostic,
        keep_class_ids=frozenset(ids[n] for n in live.classes if n in ids) if live.classes else None,
        class_thresholds=tuple((ids[n], t) for n, t in live.class_thresholds if n in ids),
    )


def decode(
    model: OnnxModel, outputs: tuple[np.ndarray, ...], box: Letterbox, options: postprocess.DecodeOptions
) -> postprocess.Decoded:
    """One frame's findings from its slice of `model`'s outputs (its head and class names), in the original
    frame's pixels."""
    return model.decoder.decode(outputs, box, options)


def run_one(
    model: OnnxModel, tensor: np.ndarray, box: Letterbox, made_by: InputTransform | None = None
) -> tuple[tuple[np.ndarray, ...], Letterbox]:
    """Run one prepared frame on `model` (refitted to its input first): its outputs' slices and geometry."""
    fitted = refit(tensor, box, made_by, model)
    if fitted is None:
        raise ModelError(
            f"a frame made for a {made_by.kind if made_by else '?'} model cannot feed a {model.task} model"
        )
    outputs = model.run(fitted[0])
    return (tuple(outputs) if model.layout == "rows" else tuple(o[0] for o in outputs)), fitted[1]

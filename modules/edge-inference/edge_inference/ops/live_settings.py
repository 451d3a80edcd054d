"""Settings that change while the module runs (the module twin's desired properties).

`TwinSettings` is frozen; `LiveSettings` holds the current one and swaps it atomically, so every frame
sees one consistent set of values (the dispatcher reads it once per frame). Validation of twin patches
lives in `edge_inference.iot.twin`; the initial values come from the boot settings. `for_frame` gives the
settings that judge one frame: the global ones with its camera profile's laid over them (ops/profiles.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from edge_inference.ops.profiles import OVERRIDDEN, Profile, first_match
from edge_inference.settings import Settings

TelemetryMode = Literal["perFrame", "summary", "off"]


@dataclass(frozen=True)
class TelemetrySettings:
    mode: TelemetryMode = "perFrame"
    summary_interval_seconds: float = 60.0
    include_empty: bool = True

    def as_twin(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "summaryIntervalSeconds": self.summary_interval_seconds,
            "includeEmpty": self.include_empty,
        }


@dataclass(frozen=True)
class ReviewSettings:
    """Which frames are copied to OUTPUT_DIR/review/ for retraining (share/review.py): frames with a detection of
    one of `classes`, frames with any detection whose confidence lies in `band` (lo, hi), and a `sample_rate`
    share of all frames; at most `max_per_hour` a clock hour (UTC); with `crops`, each detection cut out too,
    `padding` (a share of the box's width and height) added on every side."""

    classes: tuple[str, ...] = ()
    band: tuple[float, float] | None = None
    sample_rate: float = 0.0
    max_per_hour: int = 500
    crops: bool = False
    padding: float = 0.1

    @property
    def enabled(self) -> bool:
        return bool(self.classes or self.band or self.sample_rate > 0) and self.max_per_hour > 0

    def as_twin(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "confidenceBand": list(self.band) if self.band else [],
            "sampleRate": self.sample_rate,
            "maxPerHour": self.max_per_hour,
            "crops": self.crops,
            "padding": self.padding,
        }


@dataclass(frozen=True)
class TwinSettings:
    """The live values; names mirror the twin's desired properties (camelCase there)."""

    confidence_threshold: float = 0.5
    iou_threshold: float = 0.45
    max_detections: int = 300
    classes: tuple[str, ...] = ()  # empty: keep every class
    alert_classes: tuple[str, ...] = ()
    save_annotated: bool = False
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    paused: bool = False
    review: ReviewSettings = field(default_factory=ReviewSettings)
    class_thresholds: tuple[tuple[str, float], ...] = ()  # (label, confidence): over confidence_threshold
    profiles: tuple[Profile, ...] = ()
    profile: Profile | None = None  # set by `for_frame`: the profile that judges this frame (never in the twin)

    @classmethod
    def from_boot(cls, settings: Settings) -> TwinSettings:
        return cls(
            confidence_threshold=settings.confidence_threshold,
            iou_threshold=settings.iou_threshold,
            max_detections=settings.max_detections,
        )

    def as_twin(self) -> dict[str, Any]:
        """The desired-property form (camelCase), as reported back in acknowledgements."""
        return {
            "confidenceThreshold": self.confidence_threshold,
            "iouThreshold": self.iou_threshold,
            "maxDetections": self.max_detections,
            "classes": list(self.classes),
            "alertClasses": list(self.alert_classes),
            "saveAnnotated": self.save_annotated,
            "telemetry": self.telemetry.as_twin(),
            "paused": self.paused,
            "review": self.review.as_twin(),
            "classThresholds": dict(self.class_thresholds),
            "profiles": [profile.as_twin() for profile in self.profiles],
        }

    def for_frame(self, rel_path: str) -> TwinSettings:
        """The settings that judge the frame at `rel_path`: these, with the fields its first matching profile
        sets laid over them (its class thresholds over the global ones), or these unchanged when none matches."""
        profile = first_match(self.profiles, rel_path)
        if profile is None:
            return self
        thresholds = dict(self.class_thresholds) | dict(profile.class_thresholds)
        return replace(self, **dict(profile.settings), class_thresholds=tuple(thresholds.items()), profile=profile)


# twin property name -> TwinSettings field name (the first ones a camera profile may set too)
TWIN_PROPERTIES: dict[str, str] = {
    **OVERRIDDEN,
    "telemetry": "telemetry",
    "paused": "paused",
    "review": "review",
    "classThresholds": "class_thresholds",
    "profiles": "profiles",
}


class LiveSettings:
    """Holder of the current `TwinSettings`; readers get a consistent snapshot without locking."""

    def __init__(self, initial: TwinSettings) -> None:
        self._current = initial
        self._lock = threading.Lock()
        self._listeners: list[Callable[[TwinSettings, TwinSettings], None]] = []

    def current(self) -> TwinSettings:
        return self._current  # a single reference read is atomic in CPython

    def swap(self, new: TwinSettings) -> TwinSettings:
        """Replace the settings; returns the previous ones and tells the listeners."""
        with self._lock:
            old, self._current = self._current, new
            listeners = list(self._listeners)
        for listener in listeners:
            listener(old, new)
        return old

    def update(self, **changes: Any) -> TwinSettings:
        with self._lock:
            new = replace(self._current, **changes)
        self.swap(new)
        return new

    def subscribe(self, listener: Callable[[TwinSettings, TwinSettings], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

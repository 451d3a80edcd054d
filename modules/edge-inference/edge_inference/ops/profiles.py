"""Camera profiles: settings by folder of the input share (the twin's `profiles`), and how a frame finds its own.

A profile is an ordered rule: the first whose `match` glob fits the frame's path relative to the input share wins,
and the fields it sets replace the global ones for that frame (`overrides`); a frame no profile matches is judged
by the global settings. Its `roi` says where to look (vision/roi.py) and its `tiling` how to cut a large frame
(vision/tiling.py). Validation of the twin's JSON lives in iot/profile_rules.py; these are the checked, frozen
values the stages read.

Globs: `/` separates folders (a `\\` in a pattern or a path, as Windows and ASE's file events write them, is one
too); `*` and `?` and `[...]` match within one name, `**` as a whole segment matches any number of folders (none
included): `line1/cam2/**` is everything under line1/cam2, `**/*.png` every PNG, `line*/top/*` the frames
directly in any line's top folder. Names are compared case-insensitively: the shares are SMB shares written by
Windows line PCs, where `Cam2` and `cam2` are one folder.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from typing import Any, Literal

Polygon = tuple[tuple[float, float], ...]
RoiUnits = Literal["relative", "pixels"]
RoiMode = Literal["crop", "filter"]
TilingMode = Literal["off", "auto", "always"]


def glob_segments(pattern: str) -> tuple[str, ...]:
    """A glob's folder segments, folded for comparison (`\\` is a separator too; empty segments dropped)."""
    return tuple(part.casefold() for part in pattern.replace("\\", "/").split("/") if part)


@functools.lru_cache(maxsize=4096)
def _fits(segments: tuple[str, ...], names: tuple[str, ...]) -> bool:
    if not segments:
        return not names
    head, rest = segments[0], segments[1:]
    if head == "**":
        return any(_fits(rest, names[i:]) for i in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatchcase(names[0], head) and _fits(rest, names[1:])


def glob_matches(segments: tuple[str, ...], rel_path: str) -> bool:
    """Whether a frame's path relative to the share fits a glob's segments (`glob_segments`)."""
    return _fits(segments, glob_segments(rel_path))


@dataclass(frozen=True)
class Roi:
    """Where a camera's defects can be: `polygons` to look in (empty: the whole frame), `exclude` polygons whose
    detections are dropped; in `units` of the frame (relative 0..1 or pixels). `crop` runs the model on the
    polygons' bounding rectangle only; `filter` on the whole frame. Either way a detection is kept when at least
    `min_overlap` of its box lies inside the polygons, and dropped when as much lies in an exclusion zone."""

    polygons: tuple[Polygon, ...] = ()
    units: RoiUnits = "relative"
    mode: RoiMode = "filter"
    min_overlap: float = 0.5
    exclude: tuple[Polygon, ...] = ()

    def as_twin(self) -> dict[str, Any]:
        return {
            "polygons": [[list(p) for p in polygon] for polygon in self.polygons],
            "units": self.units,
            "mode": self.mode,
            "minOverlap": self.min_overlap,
            "exclude": [[list(p) for p in polygon] for polygon in self.exclude],
        }


@dataclass(frozen=True)
class Tiling:
    """How a frame (or its ROI crop) larger than the model's input is cut: square tiles of `tile_size` pixels
    (None: the model's input size) overlapping by `overlap`, for `always`, or for `auto` when the frame is more
    than `auto_factor` times the model's input; `full_frame` adds the whole-frame pass for large objects."""

    mode: TilingMode = "off"
    tile_size: int | None = None
    overlap: float = 0.2
    full_frame: bool = True
    auto_factor: float = 2.0

    def as_twin(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "tileSize": self.tile_size,
            "overlap": self.overlap,
            "fullFrame": self.full_frame,
            "autoFactor": self.auto_factor,
        }


# profile field -> TwinSettings field it replaces for the frames it matches
OVERRIDDEN: dict[str, str] = {
    "confidenceThreshold": "confidence_threshold",
    "iouThreshold": "iou_threshold",
    "maxDetections": "max_detections",
    "classes": "classes",
    "alertClasses": "alert_classes",
    "saveAnnotated": "save_annotated",
}


@dataclass(frozen=True)
class Profile:
    """One camera profile. `settings` holds the global fields it replaces (TwinSettings names, see OVERRIDDEN),
    `class_thresholds` the per-class confidences laid over the global ones."""

    name: str
    match: str
    model: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()
    class_thresholds: tuple[tuple[str, float], ...] = ()
    roi: Roi | None = None
    tiling: Tiling | None = None

    @functools.cached_property
    def segments(self) -> tuple[str, ...]:
        return glob_segments(self.match)

    def matches(self, rel_path: str) -> bool:
        return glob_matches(self.segments, rel_path)

    def as_twin(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "match": self.match}
        if self.model is not None:
            body["model"] = self.model
        twin_names = {field: key for key, field in OVERRIDDEN.items()}
        for field, value in self.settings:
            body[twin_names[field]] = list(value) if isinstance(value, tuple) else value
        if self.class_thresholds:
            body["classThresholds"] = dict(self.class_thresholds)
        if self.roi is not None:
            body["roi"] = self.roi.as_twin()
        if self.tiling is not None:
            body["tiling"] = self.tiling.as_twin()
        return body


def first_match(profiles: tuple[Profile, ...], rel_path: str) -> Profile | None:
    """The profile that judges a frame: the first in order whose glob fits its path, or None."""
    for profile in profiles:
        if profile.matches(rel_path):
            return profile
    return None

"""The twin's `profiles` and `classThresholds` checked: JSON in, frozen ops/profiles.py values out, or `Invalid`
with the reason (the acknowledgement's `ad`, naming the profile and field: `profiles[2] (cam3).roi.polygons[0]:
a polygon needs at least 3 points`).

Rules (README "Camera profiles"):
- `profiles`: a list of at most MAX_PROFILES objects, each with `name` (non-empty, unique) and `match` (a glob,
  ops/profiles.py: relative, no `..`, `**` only as a whole segment, brackets closed) and any of `model` (the
  model in service: this module serves one model at a time, so a profile naming another is refused),
  `confidenceThreshold`, `iouThreshold` (0..1), `maxDetections` (1..1000), `classes`, `alertClasses` (class
  names of the model), `saveAnnotated` (bool), `classThresholds`, `roi`, `tiling`; an unknown field refuses it;
- `classThresholds` (top level or in a profile): an object {class name of the model: 0..1};
- `roi`: `polygons` (each at least 3 [x, y] points, within 0..1 in `relative` units, >= 0 in `pixels`),
  `units` (relative | pixels), `mode` (crop | filter), `minOverlap` (0..1, default 0.5), `exclude` (polygons);
  polygons or exclude must be given;
- `tiling`: `mode` (off | auto | always), `tileSize` (32..8192 pixels; default the model's input), `overlap`
  (0..0.9), `fullFrame` (bool), `autoFactor` (1..100).
A list that fails any rule is refused whole: the profiles in force stay. Overlapping globs are fine (the first
match wins) and a glob that matches nothing yet is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from edge_inference.iot.twin_values import (
    MAX_NAME_CHARS,
    Invalid,
    boolean,
    describe,
    integer,
    names,
    number,
    object_fields,
)
from edge_inference.ops.profiles import OVERRIDDEN, Polygon, Profile, Roi, RoiMode, RoiUnits, Tiling, TilingMode

MAX_PROFILES = 100
MAX_POLYGONS = 32
MAX_POINTS = 256
MAX_GLOB_CHARS = 512
MIN_TILE = 32
MAX_TILE = 8192
_PROFILE_FIELDS = ("name", "match", "model", "classThresholds", "roi", "tiling", *OVERRIDDEN)
_ROI_FIELDS = ("polygons", "units", "mode", "minOverlap", "exclude")
_TILING_FIELDS = ("mode", "tileSize", "overlap", "fullFrame", "autoFactor")


@dataclass(frozen=True)
class ServedModel:
    """What a profile may name: the model in service (its name) and its class names."""

    name: str
    class_names: tuple[str, ...]


def _checked(field: str, check: Callable[[Any], Any], value: Any) -> Any:
    """`check(value)`, its refusal prefixed with the field's name."""
    try:
        return check(value)
    except Invalid as e:
        raise Invalid(f"{field}: {e}") from None


def _choice(value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise Invalid(f"expected one of {', '.join(choices)}, got {describe(value)}")
    return value


def _known_labels(labels: tuple[str, ...], model: ServedModel | None) -> tuple[str, ...]:
    if model is not None:
        unknown = [label for label in labels if label not in model.class_names]
        if unknown:
            raise Invalid(f"unknown class {unknown[0][:64]!r} (the model knows {', '.join(model.class_names)[:200]})")
    return labels


def class_thresholds(value: Any, model: ServedModel | None) -> tuple[tuple[str, float], ...]:
    """`{label: confidence}` for classes of the model."""
    if not isinstance(value, dict):
        raise Invalid(f"expected an object {{class name: confidence}}, got {describe(value)}")
    labels = _known_labels(names(list(value)), model)
    return tuple((label, _checked(label, lambda v: number(v, 0.0, 1.0), value[label])) for label in labels)


def glob(value: Any) -> str:
    """A profile's `match`: a relative glob that can match a frame's path."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a glob such as line1/cam2/**, got {describe(value)}")
    if len(value) > MAX_GLOB_CHARS or any(ord(c) < 32 for c in value):
        raise Invalid("a glob must be at most 512 printable characters")
    parts = value.replace("\\", "/").split("/")
    if value.replace("\\", "/").startswith("/") or (len(parts[0]) == 2 and parts[0][1] == ":"):
        raise Invalid(f"{value[:64]!r} is absolute: globs are relative to the input share")
    for part in parts:
        if part == "..":
            raise Invalid(f"{value[:64]!r} climbs out of the input share (..)")
        if "**" in part and part != "**":
            raise Invalid(f"{value[:64]!r}: ** must be a whole folder name (line1/**/cam2), not part of one")
        if part.count("[") != part.count("]"):
            raise Invalid(f"{value[:64]!r}: a [ without its ] (or the other way round)")
    return value


def _point(value: Any, units: RoiUnits) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(f"a point is [x, y], got {describe(value)}")
    hi = 1.0 if units == "relative" else 1e6
    try:
        x, y = number(value[0], 0.0, hi), number(value[1], 0.0, hi)
    except Invalid as e:
        where = "within 0..1 in relative units" if units == "relative" else "0 or more pixels"
        raise Invalid(f"a point must be {where}: {e}") from None
    return x, y


def polygons(value: Any, units: RoiUnits) -> tuple[Polygon, ...]:
    if not isinstance(value, list) or len(value) > MAX_POLYGONS:
        raise Invalid(f"expected a list of at most {MAX_POLYGONS} polygons, got {describe(value)}")
    found: list[Polygon] = []
    for i, polygon in enumerate(value):
        if not isinstance(polygon, list) or not 3 <= len(polygon) <= MAX_POINTS:
            raise Invalid(f"[{i}]: a polygon needs 3 to {MAX_POINTS} [x, y] points, got {describe(polygon)}")
        points = tuple(_checked(f"[{i}]", lambda p: _point(p, units), p) for p in polygon)
        area = 0.5 * abs(
            sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True))
        )
        if not area > 0:
            raise Invalid(f"[{i}]: the polygon has no area (its points are on one line)")
        found.append(points)
    return tuple(found)


def roi(value: Any) -> Roi:
    fields = object_fields(value, _ROI_FIELDS)
    units = cast(
        RoiUnits, _checked("units", lambda v: _choice(v, ("relative", "pixels")), fields.get("units", "relative"))
    )
    mode = cast(RoiMode, _checked("mode", lambda v: _choice(v, ("crop", "filter")), fields.get("mode", "filter")))
    shapes = _checked("polygons", lambda v: polygons(v, units), fields.get("polygons", []))
    exclude = _checked("exclude", lambda v: polygons(v, units), fields.get("exclude", []))
    if not shapes and not exclude:
        raise Invalid("polygons: give the polygons to look in, or exclusion zones (exclude)")
    overlap = _checked("minOverlap", lambda v: number(v, 0.0, 1.0), fields.get("minOverlap", 0.5))
    return Roi(shapes, units, mode, overlap, exclude)


def tiling(value: Any) -> Tiling:
    fields = object_fields(value, _TILING_FIELDS)
    mode = cast(
        TilingMode, _checked("mode", lambda v: _choice(v, ("off", "auto", "always")), fields.get("mode", "auto"))
    )
    size = fields.get("tileSize")
    if size is not None:
        size = _checked("tileSize", lambda v: integer(v, MIN_TILE, MAX_TILE), size)
    return Tiling(
        mode=mode,
        tile_size=size,
        overlap=_checked("overlap", lambda v: number(v, 0.0, 0.9), fields.get("overlap", 0.2)),
        full_frame=_checked("fullFrame", boolean, fields.get("fullFrame", True)),
        auto_factor=_checked("autoFactor", lambda v: number(v, 1.0, 100.0), fields.get("autoFactor", 2.0)),
    )


def _model_name(value: Any, model: ServedModel | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected the name of a model, got {describe(value)}")
    if model is not None and value != model.name:
        raise Invalid(
            f"{value[:64]!r} is not the model in service ({model.name!r}): this module serves one model at a time; "
            "roll the model out with the twin's `model`, or leave `model` out"
        )
    return value


def _setting(key: str, value: Any, model: ServedModel | None) -> Any:
    if key in ("confidenceThreshold", "iouThreshold"):
        return number(value, 0.0, 1.0)
    if key == "maxDetections":
        return integer(value, 1, 1000)
    if key in ("classes", "alertClasses"):
        return _known_labels(names(value), model)
    return boolean(value)  # saveAnnotated


def profile(value: Any, model: ServedModel | None) -> Profile:
    fields = object_fields(value, _PROFILE_FIELDS)
    name = fields.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise Invalid(f"name: expected a non-empty name of at most {MAX_NAME_CHARS} characters, got {describe(name)}")
    if "match" not in fields:
        raise Invalid("match: a profile needs a glob (line1/cam2/**)")
    settings = tuple(
        (OVERRIDDEN[key], _checked(key, lambda v, k=key: _setting(k, v, model), fields[key]))  # type: ignore[misc]
        for key in OVERRIDDEN
        if key in fields
    )
    return Profile(
        name=name,
        match=_checked("match", glob, fields["match"]),
        model=_checked("model", lambda v: _model_name(v, model), fields["model"]) if "model" in fields else None,
        settings=settings,
        class_thresholds=_checked(
            "classThresholds", lambda v: class_thresholds(v, model), fields.get("classThresholds", {})
        ),
        roi=_checked("roi", roi, fields["roi"]) if "roi" in fields else None,
        tiling=_checked("tiling", tiling, fields["tiling"]) if "tiling" in fields else None,
    )


def profiles(value: Any, model: ServedModel | None) -> tuple[Profile, ...]:
    """The twin's `profiles`, in order; refused whole when one profile fails."""
    if not isinstance(value, list) or len(value) > MAX_PROFILES:
        raise Invalid(f"expected a list of at most {MAX_PROFILES} profiles, got {describe(value)}")
    found: list[Profile] = []
    for i, item in enumerate(value):
        label = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else None
        where = f"profiles[{i}]" + (f" ({label[:64]})" if label else "")
        checked = _checked(where, lambda v: profile(v, model), item)
        if any(p.name == checked.name for p in found):
            raise Invalid(f"{where}: the name {checked.name[:64]!r} is given twice")
        found.append(checked)
    return tuple(found)

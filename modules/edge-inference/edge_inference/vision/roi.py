"""Regions of interest: the rectangle a `crop` profile runs the model on, which detections a profile's polygons
keep and its exclusion zones drop, and detections moved from a region's pixels to the frame's.

A detection is kept when at least `minOverlap` of its box's area lies inside the ROI polygons, and dropped when at
least as much lies inside the exclusion zones (the same measure for both, in either mode). The area is computed
exactly: each polygon clipped to the box (Sutherland-Hodgman against the box's four sides), then its shoelace
area; polygons of one list are meant not to overlap each other (where they do, the shared part counts twice, up
to the whole box).
"""

from __future__ import annotations

import math
from dataclasses import replace

from edge_inference.entities import Detection, Mask, RotatedBox
from edge_inference.ops.profiles import Polygon, Roi

Box = tuple[float, float, float, float]


def in_pixels(polygons: tuple[Polygon, ...], roi: Roi, width: int, height: int) -> tuple[Polygon, ...]:
    """The polygons in frame pixels (relative units scaled by the frame's size)."""
    if roi.units == "pixels":
        return polygons
    return tuple(tuple((x * width, y * height) for x, y in polygon) for polygon in polygons)


def crop_rect(roi: Roi | None, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The whole-pixel rectangle (x1, y1, x2, y2) that holds a `crop` profile's polygons, within the frame; None
    when the model should see the whole frame (no ROI, `filter` mode, or polygons that miss the frame)."""
    if roi is None or roi.mode != "crop" or not roi.polygons:
        return None
    points = [p for polygon in in_pixels(roi.polygons, roi, width, height) for p in polygon]
    x1 = max(0, math.floor(min(x for x, _ in points)))
    y1 = max(0, math.floor(min(y for _, y in points)))
    x2 = min(width, math.ceil(max(x for x, _ in points)))
    y2 = min(height, math.ceil(max(y for _, y in points)))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return x1, y1, x2, y2


def _clip(polygon: Polygon, box: Box) -> list[tuple[float, float]]:
    """The part of `polygon` inside the axis-aligned `box` (Sutherland-Hodgman, one side of the box at a time:
    axis 0 is x, 1 is y; `sign` +1 keeps what is above the limit, -1 what is below)."""
    x1, y1, x2, y2 = box
    points = list(polygon)
    for axis, limit, sign in ((0, x1, 1.0), (0, x2, -1.0), (1, y1, 1.0), (1, y2, -1.0)):
        clipped: list[tuple[float, float]] = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            now_in = sign * (current[axis] - limit) >= 0
            was_in = sign * (previous[axis] - limit) >= 0
            if now_in != was_in:
                t = (limit - previous[axis]) / (current[axis] - previous[axis])
                crossing = (previous[0] + t * (current[0] - previous[0]), previous[1] + t * (current[1] - previous[1]))
                clipped.append(crossing)
            if now_in:
                clipped.append(current)
        points = clipped
        if not points:
            break
    return points


def _area(points: list[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True)))


def inside_fraction(box: Box, polygons: tuple[Polygon, ...]) -> float:
    """The fraction of `box`'s area inside `polygons` (0..1). A box with no area counts by its centre."""
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    if area <= 0:
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        return float(any(_area(_clip(p, (cx - 0.5, cy - 0.5, cx + 0.5, cy + 0.5))) >= 0.5 for p in polygons))
    return min(1.0, sum(_area(_clip(polygon, box)) for polygon in polygons) / area)


def judged_by_roi(detections: tuple[Detection, ...], roi: Roi | None, width: int, height: int) -> tuple[Detection, ...]:
    """The detections a profile's ROI keeps: enough of the box inside its polygons (when it has any), not as much
    inside its exclusion zones."""
    if roi is None or not detections:
        return detections
    keep = in_pixels(roi.polygons, roi, width, height)
    drop = in_pixels(roi.exclude, roi, width, height)
    return tuple(
        d
        for d in detections
        if (not keep or inside_fraction(d.box, keep) >= roi.min_overlap)
        and not (drop and inside_fraction(d.box, drop) >= roi.min_overlap)
    )


def shifted(detection: Detection, dx: float, dy: float) -> Detection:
    """A detection found in a region whose top-left is (dx, dy) in the frame, in the frame's pixels: its box,
    mask outlines and bitmap origin, keypoints and rotated box."""
    if not dx and not dy:
        return detection
    x1, y1, x2, y2 = detection.box
    mask = detection.mask
    if mask is not None:
        mask = Mask(
            tuple(tuple((x + dx, y + dy) for x, y in polygon) for polygon in mask.polygons),
            mask.area_px,
            mask.bitmap,
            (mask.origin[0] + round(dx), mask.origin[1] + round(dy)),
        )
    keypoints = detection.keypoints
    if keypoints is not None:
        keypoints = tuple((k[0] + dx, k[1] + dy, *k[2:]) for k in keypoints)
    obb = detection.obb
    if obb is not None:
        obb = RotatedBox(obb.cx + dx, obb.cy + dy, obb.w, obb.h, obb.angle)
    return replace(detection, box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy), mask=mask, keypoints=keypoints, obb=obb)

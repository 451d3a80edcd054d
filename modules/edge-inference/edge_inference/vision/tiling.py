"""Tiling a large frame for a small model: where the tiles go, and one list of detections out of all of them.

Plan: square tiles of `tileSize` pixels (default: the model's input) laid over the region (the frame, or the
ROI crop) in rows and columns that overlap by at least `overlap`; the last tile of a row or column ends on the
region's edge (the tiles are spread evenly, so none hangs out of the frame and every tile is full size). `auto`
tiles only when the region is more than `autoFactor` times the model's input along a side.

Merge, after each view's own NMS and once every box is in frame pixels: a box that touches a tile's edge
inside the region (not the frame's own border) is a piece that the edge may have cut. Boxes are taken whole ones
first, best first. A box that overlaps (or meets edge to edge) a kept box of its class found in another view is
the same object seen again (the tiles overlap, and the full-frame pass sees everything once more): a whole box is
a duplicate and dropped, a piece is joined to it (the kept box grows to hold both; its confidence is the better
one). Boxes of one view never merge with each other: that view's NMS already told them apart. Masks, keypoints
and rotated boxes stay those of the box kept first. The price: two objects of one class that touch, each seen by
a different view only, come out as one box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edge_inference.entities import Detection
from edge_inference.ops.profiles import Tiling

EDGE_PX = 2.0  # a box within this many pixels of a tile's inner edge may have been cut by it

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Where tiles of `tile` pixels start along a side of `length`, overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    step = max(1.0, tile * (1.0 - overlap))
    count = math.ceil((length - tile) / step) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_size(tiling: Tiling, input_hw: tuple[int, int]) -> int:
    return tiling.tile_size or max(input_hw)


def plan(width: int, height: int, tiling: Tiling | None, input_hw: tuple[int, int]) -> list[Rect]:
    """The tiles (x1, y1, x2, y2) of a region of `width` x `height`, or [] when it is not to be tiled."""
    if tiling is None or tiling.mode == "off":
        return []
    size = tile_size(tiling, input_hw)
    if tiling.mode == "auto" and max(width / input_hw[1], height / input_hw[0]) <= tiling.auto_factor:
        return []
    if width <= size and height <= size:
        return []  # one tile would be the whole region: the full-frame pass is that
    return [
        (x, y, min(width, x + size), min(height, y + size))
        for y in tile_starts(height, size, tiling.overlap)
        for x in tile_starts(width, size, tiling.overlap)
    ]


@dataclass(frozen=True)
class ViewDetections:
    """One view's detections in frame pixels, and the view's region in the frame (its inner edges cut boxes)."""

    detections: tuple[Detection, ...]
    region: Rect
    tile: bool


def _cut(box: tuple[float, float, float, float], region: Rect, frame_wh: tuple[int, int]) -> bool:
    """Whether the box touches an edge of the tile that is not the frame's own border."""
    x1, y1, x2, y2 = box
    rx1, ry1, rx2, ry2 = region
    width, height = frame_wh
    return (
        (rx1 > 0 and x1 - rx1 <= EDGE_PX)
        or (ry1 > 0 and y1 - ry1 <= EDGE_PX)
        or (rx2 < width and rx2 - x2 <= EDGE_PX)
        or (ry2 < height and ry2 - y2 <= EDGE_PX)
    )


def _touch(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Overlapping, or meeting edge to edge (within EDGE_PX) along a shared stretch."""
    gap_x = max(a[0], b[0]) - min(a[2], b[2])
    gap_y = max(a[1], b[1]) - min(a[3], b[3])
    return gap_x <= EDGE_PX and gap_y <= EDGE_PX and (gap_x < 0 or gap_y < 0)


def merge(
    views: Sequence[ViewDetections], frame_wh: tuple[int, int], *, agnostic: bool, max_detections: int
) -> tuple[Detection, ...]:
    """One list of detections from the views of a frame (tiles and the full-frame pass), best first."""
    found = [
        (d, index, view.tile and _cut(d.box, view.region, frame_wh))
        for index, view in enumerate(views)
        for d in view.detections
    ]
    found.sort(key=lambda item: (item[2], -item[0].confidence))  # whole boxes first, then best first
    kept: list[Detection] = []
    seen_in: list[set[int]] = []  # the views each kept box was seen in
    for detection, index, piece in found:
        same = [
            i
            for i, k in enumerate(kept)
            if (agnostic or k.class_id == detection.class_id)
            and index not in seen_in[i]  # one view's own boxes are separate objects (its NMS said so)
            and _touch(k.box, detection.box)
        ]
        if not same:
            kept.append(detection)
            seen_in.append({index})
        elif piece:
            _join(kept, seen_in, same, detection, index)
        else:
            seen_in[same[0]].add(index)  # the same object seen whole again: a duplicate
    kept.sort(key=lambda d: -d.confidence)
    return tuple(kept[:max_detections])


def _join(kept: list[Detection], seen_in: list[set[int]], indices: list[int], piece: Detection, view: int) -> None:
    """Grow the first of `kept[indices]` to hold the piece and the others it now bridges; drop those others."""
    head = kept[indices[0]]
    boxes = [head.box, piece.box, *(kept[i].box for i in indices[1:])]
    union = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    confidence = max(head.confidence, piece.confidence, *(kept[i].confidence for i in indices[1:]))
    kept[indices[0]] = replace(head, box=union, confidence=confidence)
    seen_in[indices[0]].add(view)
    for i in sorted(indices[1:], reverse=True):
        seen_in[indices[0]] |= seen_in[i]
        del kept[i]
        del seen_in[i]

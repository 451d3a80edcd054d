"""A frame seen through its camera profile: the model inputs cut from it (the ROI crop, the tiles) and the one
answer read back from all of them.

    cut(image, transform, profile)            the views: the whole frame or the ROI's bounding rectangle (the
                                              full-frame pass), and the tiles of that region when the profile
                                              tiles it (vision/tiling.py); each letterboxed like any frame
    read(decoder, outputs, views, ...)        each view decoded (thresholds, NMS, boxes mapped back through its
                                              letterbox), moved into the frame's pixels, merged across the tiles,
                                              then judged by the ROI (kept inside the polygons, dropped in the
                                              exclusion zones: vision/roi.py) and cut to max_detections

Per-class thresholds apply in the decoder (postprocess.DecodeOptions.class_thresholds). A classifier is never
tiled; with a `crop` ROI it classifies the crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from edge_inference.entities import FrameView
from edge_inference.ops.profiles import Profile
from edge_inference.vision import roi as regions
from edge_inference.vision import tiling
from edge_inference.vision.postprocess import Decoded, DecodeOptions, Decoder
from edge_inference.vision.preprocess import InputTransform, prepare_frame


def cut(image: np.ndarray, transform: InputTransform, profile: Profile | None) -> tuple[FrameView, ...]:
    """The model inputs of a frame decoded at full size: the full-frame pass (unless the profile's tiling turns it
    off) and the tiles, each with its region's origin in the frame."""
    height, width = image.shape[:2]
    rect = regions.crop_rect(profile.roi if profile else None, width, height)
    x0, y0, x1, y1 = rect or (0, 0, width, height)
    region = image[y0:y1, x0:x1] if rect else image
    tiled = profile.tiling if profile and transform.kind != "classify" else None
    tiles = tiling.plan(x1 - x0, y1 - y0, tiled, transform.input_hw)
    views: list[FrameView] = []
    if not tiles or (tiled is not None and tiled.full_frame):
        views.append(_view(region, transform, (x0, y0), tile=False))
    for tx1, ty1, tx2, ty2 in tiles:
        views.append(_view(region[ty1:ty2, tx1:tx2], transform, (x0 + tx1, y0 + ty1), tile=True))
    return tuple(views)


def _view(region: np.ndarray, transform: InputTransform, origin: tuple[int, int], *, tile: bool) -> FrameView:
    height, width = region.shape[:2]
    tensor, box = prepare_frame(np.ascontiguousarray(region), (width, height), transform)
    return FrameView(tensor, box, origin, tile)


def read(
    decoder: Decoder,
    outputs: Sequence[Sequence[np.ndarray]],
    views: Sequence[FrameView],
    options: DecodeOptions,
    profile: Profile | None,
    frame_wh: tuple[int, int],
) -> Decoded:
    """One answer for a frame from its views' outputs."""
    if len(views) == 1 and views[0].origin == (0, 0) and (profile is None or profile.roi is None):
        return decoder.decode(outputs[0], views[0].letterbox, options)  # the plain path: no profile geometry
    answers = [decoder.decode(out, view.letterbox, options) for out, view in zip(outputs, views, strict=True)]
    if answers[0].classification is not None or decoder.head.layout == "classify":
        return answers[0]
    found: list[tiling.ViewDetections] = []
    for answer, view in zip(answers, views, strict=True):
        dx, dy = view.origin
        region = (dx, dy, dx + view.letterbox.width, dy + view.letterbox.height)
        moved = tuple(regions.shifted(d, dx, dy) for d in answer.detections)
        found.append(tiling.ViewDetections(moved, region, view.tile))
    if len(found) > 1:
        detections = tiling.merge(found, frame_wh, agnostic=options.agnostic, max_detections=options.max_detections)
    else:
        detections = found[0].detections
    roi = profile.roi if profile else None
    kept = regions.judged_by_roi(detections, roi, *frame_wh)
    return replace(answers[0], detections=kept[: options.max_detections])

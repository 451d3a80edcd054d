"""Camera profiles meet the model rollout: a frame cut in views (an ROI crop, tiles) prepared for one model and met
by another after a swap, the candidate shadow's choice of frames, and profiles checked against the model serving
now (module twin and local twin file alike), on real ONNX Runtime sessions and real files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_inference.entities import FrameJob, PreparedFrame
from edge_inference.iot.local_twin import LocalTwinFile, reported_path
from edge_inference.iot.profile_rules import ServedModel
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.profiles import Profile, Roi, Tiling
from edge_inference.pipeline.batcher import Batcher
from edge_inference.pipeline.dispatch import judged_whole
from edge_inference.pipeline.envelopes import Inferred, StageQueues
from edge_inference.settings import read_settings
from edge_inference.vision import views as frame_views
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.serving import ModelSlot, Probation, decode_options
from tests.onnx_models import build_constant_model, yolov8_output

pytestmark = pytest.mark.timeout(60)

NAMES_OLD = "{0: 'scratch'}"
NAMES_NEW = "{0: 'dent'}"

# the ROI crop (pixels 40..360 x 30..230 of a 400 x 260 frame), tiled always: 64-pixel tiles with the full pass
PROFILE = Profile(
    "line1-cam2",
    "line1/cam2/**",
    roi=Roi(polygons=(((40.0, 30.0), (360.0, 30.0), (360.0, 230.0), (40.0, 230.0)),), units="pixels", mode="crop"),
    tiling=Tiling(mode="always", tile_size=64, overlap=0.2, full_frame=True),
)


def model(
    tmp_path: Path, name: str, hw: tuple[int, int], box: tuple[float, float, float, float], batch: int = 4, **kw: Any
) -> OnnxModel:
    """A model whose every output is one box (`box`, so its outputs tell which model made them)."""
    path = build_constant_model(
        tmp_path / f"{name}.onnx", yolov8_output([box], [[0.9]]), input_hw=hw, version=name, batch=batch, **kw
    )
    settings = {
        "MODEL_PATH": str(path),
        "STATE_DIR": str(tmp_path),
        "EXECUTION_PROVIDERS": "cpu",
        "BATCH_SIZE": str(batch),
    }
    return OnnxModel(read_settings(settings))


class _Idle:
    busy = False


def tiled_frame(made_for: OnnxModel, image: np.ndarray) -> PreparedFrame:
    """A frame prepared as pipeline/prepare.py does for a profile with an ROI crop and tiles."""
    views = frame_views.cut(image, made_for.transform, PROFILE)
    first, tiles = views[0], views[1:]
    job = FrameJob("line1/cam2/a.jpg", Path("/nonexistent"), 1, 1, "poll", time.monotonic())
    height, width = image.shape[:2]
    return PreparedFrame(
        job,
        first.tensor,
        first.letterbox,
        "0" * 64,
        {},
        origin=first.origin,
        frame_wh=(width, height),
        tiles=tiles,
        first_is_tile=first.tile,
        transform=made_for.transform,
    )


def run_batcher(slot: ModelSlot, frame: PreparedFrame, tmp_path: Path) -> Inferred:
    settings = read_settings(
        {"MODEL_PATH": str(tmp_path / "x.onnx"), "STATE_DIR": str(tmp_path), "BATCH_MAX_WAIT_MS": "5"}
    )
    queues = StageQueues(8, 4)
    batcher = Batcher(settings, slot, queues, _Idle(), MetricsRegistry())  # type: ignore[arg-type]
    batcher.start()
    try:
        queues.prepared.put(frame)
        return queues.inferred.get(timeout=30)
    finally:
        batcher.stop()


def test_a_tiled_frame_in_flight_across_a_swap_runs_every_view_on_the_new_model(tmp_path: Path) -> None:
    # given a frame cut for the old model's 64 x 64 input (ROI crop + tiles), still queued when the new model
    # (96 x 96 input) is swapped in
    old = model(tmp_path, "old", (64, 64), (20, 20, 8, 8))
    new = model(tmp_path, "new", (96, 96), (50, 50, 10, 10))
    rng = np.random.default_rng(3)
    image = rng.integers(0, 90, (260, 400, 3), dtype=np.uint8)
    frame = tiled_frame(old, image)
    assert frame.tiles and frame.origin == (40, 30)
    slot = ModelSlot(old)
    slot.swap(new)
    # when the batcher takes it
    done = run_batcher(slot, frame, tmp_path)
    # then every view ran on the new model, refitted to its input, and the frame's geometry came through whole
    assert done.model is new
    item = done.item
    assert isinstance(item, PreparedFrame) and item.transform == new.transform
    assert len(done.tile_outputs) == len(frame.tiles) and done.output is not None
    assert all(view.tensor.shape[2:] == (96, 96) for view in item.views)
    assert item.origin == frame.origin and item.frame_wh == frame.frame_wh and item.first_is_tile == frame.first_is_tile
    assert [v.origin for v in item.tiles] == [v.origin for v in frame.tiles]
    assert [(v.letterbox.width, v.letterbox.height) for v in item.views] == [
        (v.letterbox.width, v.letterbox.height) for v in frame.views
    ]
    # the constant output's first cx: 50 from the new model, 20 from the old
    assert [float(out[0][0][0]) for out in (done.output, *done.tile_outputs)] == [50.0] * (1 + len(frame.tiles))
    # and its boxes map back into the frame through each view's own geometry (origin + letterbox)
    options = decode_options(new, TwinSettings(), agnostic=False)
    decoded = frame_views.read(new.decoder, (done.output, *done.tile_outputs), item.views, options, PROFILE, item.size)
    assert decoded.detections
    for d in decoded.detections:
        x1, y1, x2, y2 = d.box
        assert x1 >= 39 and x2 <= 361 and y1 >= 29 and y2 <= 231  # inside the crop (40..360 x 30..230)


def test_a_tiled_frame_the_new_model_fails_runs_whole_on_the_model_before_it(tmp_path: Path) -> None:
    # given a new model on probation that fails on bright inputs (one input per run: only the bright view fails
    # on it), and a frame one of whose tiles is bright
    old = model(tmp_path, "old", (64, 64), (20, 20, 8, 8), batch=1)
    new = model(tmp_path, "new", (64, 64), (50, 50, 10, 10), batch=1, fail_above=0.6)
    image = np.full((260, 400, 3), 40, np.uint8)
    image[30:94, 40:104] = 255  # the first tile of the crop: bright
    frame = tiled_frame(old, image)
    slot = ModelSlot(old, Probation(frames=100, seconds=600, failures=5))
    slot.swap(new)
    # when the batcher takes it
    done = run_batcher(slot, frame, tmp_path)
    # then the whole frame - every tile, not only the bright one - was served by the old model
    assert done.model is old and done.output is not None
    assert len(done.tile_outputs) == len(frame.tiles)
    assert [float(out[0][0][0]) for out in (done.output, *done.tile_outputs)] == [20.0] * (1 + len(frame.tiles))
    assert slot.active is new  # one frame failed over: counted, not yet a rollback


def test_the_candidate_shadow_is_offered_only_frames_judged_whole(tmp_path: Path) -> None:
    old = model(tmp_path, "old", (64, 64), (20, 20, 8, 8))
    image = np.zeros((260, 400, 3), np.uint8)
    tiled = tiled_frame(old, image)
    live = TwinSettings()
    assert not judged_whole(tiled, live.for_frame("line1/cam2/a.jpg"))
    whole = PreparedFrame(tiled.job, tiled.tensor, tiled.letterbox, "0" * 64, {}, transform=old.transform)
    assert judged_whole(whole, live)
    # a filter ROI keeps the frame whole but judges its detections by the polygons: not comparable either
    filtered = TwinSettings(profiles=(Profile("f", "**", roi=Roi(polygons=PROFILE.roi.polygons, units="pixels")),))  # type: ignore[union-attr]
    assert not judged_whole(whole, filtered.for_frame("line1/cam2/a.jpg"))


def _profiles_patch(version: int, class_name: str, model_name: str) -> dict[str, Any]:
    return {
        "$version": version,
        "profiles": [
            {"name": "cam2", "match": "line1/cam2/**", "model": model_name, "classThresholds": {class_name: 0.3}}
        ],
    }


def test_the_local_twin_file_checks_profiles_against_the_model_serving_now(tmp_path: Path) -> None:
    # given a local twin file whose profiles are checked against the slot's active model (as app.py wires it)
    old = model(tmp_path, "old", (64, 64), (20, 20, 8, 8), names=NAMES_OLD)
    new = model(tmp_path, "new", (64, 64), (20, 20, 8, 8), names=NAMES_NEW)
    slot = ModelSlot(old)

    def served() -> ServedModel:
        return ServedModel(slot.active.name, slot.active.class_names)

    live = LiveSettings(TwinSettings())
    path = tmp_path / "twin.json"
    twin = LocalTwinFile(path, live, MetricsRegistry(), dict, dict, served=served)

    def apply(desired: dict[str, Any]) -> dict[str, Any]:
        path.write_text(json.dumps(desired))
        twin.check()  # the change seen
        twin.check()  # held still: read and applied
        return json.loads(reported_path(path).read_text())["profiles"]

    # when a profile names a class the serving model lacks: refused, nothing applied
    ack = apply(_profiles_patch(1, "dent", old.name))
    assert ack["ac"] == 400 and "dent" in ack["ad"] and live.current().profiles == ()
    # when it names the serving model's class: applied
    ack = apply(_profiles_patch(2, "scratch", old.name))
    assert ack["ac"] == 200 and live.current().profiles[0].name == "cam2"
    # then after a rollout swaps in a model with other classes, the new model's classes are the ones checked
    slot.swap(new)
    ack = apply(_profiles_patch(3, "scratch", old.name))
    assert ack["ac"] == 400 and "scratch" in ack["ad"]
    ack = apply(_profiles_patch(4, "dent", new.name))
    assert ack["ac"] == 200, ack

"""The bundled demo model: it finds fresh synthetic defects, and its file says what the module needs.

Given 100 frames from a seed never used in training (1920x1080 and 640x480 alternating), when they go through
the module's own path (preprocess.letterbox/to_tensor, ONNX Runtime on CPU, the postprocess Decoder at confidence
0.5 and class-aware NMS IoU 0.45), then precision and recall at IoU 0.5 are both at least 0.9.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_inference.entities import Detection
from edge_inference.vision.heads import read_head
from edge_inference.vision.model_meta import ModelMeta
from edge_inference.vision.postprocess import DecodeOptions, Decoder
from edge_inference.vision.preprocess import letterbox, to_tensor
from tools.synthetic import CLASS_NAMES, SyntheticDefect, generate_frame

MODEL_PATH = Path(__file__).resolve().parent.parent / "modules" / "edge-inference" / "models" / "demo-defects.onnx"
# Training draws from SeedSequence([1, i]); the training script's held-out check uses 4242.
TEST_SEED = 20261123
FRAME_SIZES = ((1920, 1080), (640, 480))
FRAMES = 100
IMGSZ = (320, 320)


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODEL_PATH), options, providers=["CPUExecutionProvider"])


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _match(detections: list[Detection], truth: list[SyntheticDefect]) -> int:
    """True positives: greedy by confidence, same class, IoU >= 0.5, each truth used once."""
    used: set[int] = set()
    hits = 0
    for det in sorted(detections, key=lambda d: -d.confidence):
        best, best_iou = -1, 0.5
        for j, gt in enumerate(truth):
            if j in used or gt.class_id != det.class_id:
                continue
            iou = _iou(det.box, gt.box)
            if iou >= best_iou:
                best, best_iou = j, iou
        if best >= 0:
            used.add(best)
            hits += 1
    return hits


@pytest.mark.timeout(110)
def test_demo_model_finds_defects_in_fresh_frames(session: ort.InferenceSession) -> None:
    rng = np.random.default_rng(TEST_SEED)
    options = DecodeOptions(confidence=0.5, iou=0.45, max_detections=300)
    true_pos = predicted = actual = 0
    for index in range(FRAMES):
        width, height = FRAME_SIZES[index % len(FRAME_SIZES)]
        image, truth = generate_frame(rng, width, height)
        padded, box = letterbox(image, IMGSZ)
        (output,) = session.run(None, {"images": to_tensor(padded, np.float32)})
        head = read_head(ModelMeta(end2end=False), [output.shape], len(CLASS_NAMES))
        assert head.layout == "yolov8"
        detections = list(Decoder(head, CLASS_NAMES, IMGSZ).decode([output[0]], box, options).detections)
        true_pos += _match(detections, truth)
        predicted += len(detections)
        actual += len(truth)
    precision = true_pos / max(1, predicted)
    recall = true_pos / max(1, actual)
    summary = f"precision {precision:.3f} recall {recall:.3f} ({true_pos} hits, {predicted} found, {actual} true)"
    assert actual > 100, summary  # the frames really carry defects
    assert precision >= 0.9, summary
    assert recall >= 0.9, summary


@pytest.mark.timeout(60)
def test_demo_model_file_describes_itself(session: ort.InferenceSession) -> None:
    meta = session.get_modelmeta().custom_metadata_map
    names = ast.literal_eval(meta["names"])
    assert names == dict(enumerate(CLASS_NAMES))
    assert ast.literal_eval(meta["imgsz"]) == list(IMGSZ)
    assert meta["task"] == "detect"
    assert meta["end2end"] == "False"
    for key in ("stride", "description", "version", "author", "license"):
        assert meta.get(key), f"metadata {key!r} missing"

    (inp,) = session.get_inputs()
    assert inp.name == "images"
    assert not isinstance(inp.shape[0], int), f"batch axis is fixed: {inp.shape}"
    assert inp.shape[1:] == [3, *IMGSZ]

    # Given a batch of 4, then the output is [4, 4 + C, N] and each image decodes as it does alone.
    frames = np.random.default_rng(TEST_SEED + 1)
    batch = np.concatenate([to_tensor(letterbox(generate_frame(frames, 640, 480)[0], IMGSZ)[0]) for _ in range(4)])
    (output,) = session.run(None, {"images": batch})
    assert output.shape[:2] == (4, 4 + len(CLASS_NAMES))
    (single,) = session.run(None, {"images": batch[2:3]})
    np.testing.assert_allclose(single[0], output[2], atol=1e-4)


@pytest.mark.timeout(30)
def test_demo_model_is_small() -> None:
    assert MODEL_PATH.stat().st_size < 3_000_000

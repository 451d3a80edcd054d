"""Every detection export form Ultralytics produces, as a user exports it (`model.export(format="onnx", ...)`),
served by the module's own path and decoded to the same boxes: YOLOv8/11 `[B, 4+C, N]`, YOLOv5 `[B, N, 5+C]`,
YOLO26/YOLOv10 end-to-end `[B, K, 6]`, `nms=True` (`[B, 300, 6]` with `end2end: False` and `args.nms` True: the
model issue 19 saw refused), `dynamic=True` (padded to the stride, as the predictor pads such models), `half=True`
(fp16 input and outputs), a fixed batch over 1 and a non-square `imgsz`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from edge_inference.errors import ModelError
from edge_inference.settings import read_settings
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.postprocess import DecodeOptions
from tests.onnx_models import build_model, infer

pytestmark = pytest.mark.timeout(60)

NAMES = {i: f"class{i}" for i in range(80)} | {0: "scratch", 1: "dent"}
META = {"task": "detect", "names": str(NAMES), "imgsz": "[64, 64]", "stride": "32"}
ARGS = "{{'batch': {batch}, 'half': {half}, 'dynamic': {dynamic}, 'simplify': True, 'opset': None, 'nms': {nms}}}"
# two detections in model pixels (cx, cy, w, h): scratch 0.9 at (20, 32), dent 0.6 at (44, 32), both 10 x 10
CANDIDATES = [((20, 32, 10, 10), 0, 0.9), ((44, 32, 10, 10), 1, 0.6)]
# 640x480 into 64x64: scale 0.1, 8 px of padding at the top
EXPECTED = [("scratch", 0.9, (150.0, 190.0, 250.0, 290.0)), ("dent", 0.6, (390.0, 190.0, 490.0, 290.0))]


def args(*, batch: int = 1, half: bool = False, dynamic: bool = False, nms: bool = False) -> str:
    return ARGS.format(batch=batch, half=half, dynamic=dynamic, nms=nms)


def one_to_many(n: int = 8400) -> np.ndarray:
    """[1, 4 + 80, N]: the raw head of YOLOv8/YOLO11 (and YOLO26's one-to-many head)."""
    out = np.zeros((1, 84, n), np.float32)
    for i, (box, cls, score) in enumerate(CANDIDATES):
        out[0, :4, i] = box
        out[0, 4 + cls, i] = score
        out[0, :4, i + 2] = (box[0] + 1, *box[1:])  # a near duplicate, lower: NMS removes it
        out[0, 4 + cls, i + 2] = score - 0.1
    return out


def yolov5(n: int = 2000) -> np.ndarray:
    """[1, N, 5 + 80]: box, objectness, class scores (score = objectness x class score)."""
    out = np.zeros((1, n, 85), np.float32)
    for i, (box, cls, score) in enumerate(CANDIDATES):
        out[0, i, :5] = [*box, 1.0]
        out[0, i, 5 + cls] = score
    return out


def kept_rows(k: int = 300) -> np.ndarray:
    """[1, K, 6]: x1, y1, x2, y2, score, class - what NMS in the graph leaves, zero rows after."""
    out = np.zeros((1, k, 6), np.float32)
    for i, ((cx, cy, w, h), cls, score) in enumerate(CANDIDATES):
        out[0, i] = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, cls]
    return out


def served(tmp_path: Path, outputs: list[np.ndarray], metadata: dict[str, str], **kwargs) -> OnnxModel:  # type: ignore[no-untyped-def]
    path = build_model(tmp_path / "m.onnx", outputs, metadata=metadata, **kwargs)
    return OnnxModel(read_settings({"MODEL_PATH": str(path), "STATE_DIR": str(tmp_path / "state")}))


def found(model: OnnxModel, width: int = 640, height: int = 480) -> list[tuple[str, float, tuple[float, ...]]]:
    image = np.zeros((height, width, 3), np.uint8)
    detections = infer(model, image, DecodeOptions(confidence=0.25, iou=0.7, max_detections=300)).detections
    return [(d.label, round(d.confidence, 3), tuple(round(v, 1) for v in d.box)) for d in detections]


@pytest.mark.parametrize(
    ("form", "outputs", "metadata", "layout"),
    [
        ("YOLOv8/YOLO11", [one_to_many()], {**META, "end2end": "False", "args": args()}, "yolov8"),
        ("YOLOv5", [yolov5()], {"names": str(NAMES), "stride": "32"}, "yolov5"),
        ("YOLO26 end-to-end", [kept_rows()], {**META, "end2end": "True", "args": args()}, "end2end"),
        ("nms=True", [kept_rows()], {**META, "end2end": "False", "args": args(nms=True)}, "end2end"),
    ],
)
def test_each_export_form_gives_the_same_boxes(
    tmp_path: Path, form: str, outputs: list[np.ndarray], metadata: dict[str, str], layout: str
) -> None:
    model = served(tmp_path, outputs, metadata)
    assert found(model) == EXPECTED, form
    info = model.runtime_info()
    assert (info["task"], info["outputLayout"], len(info["classes"])) == ("detect", layout, 80)
    assert info["nmsInGraph"] is (layout == "end2end")


def test_half_export_has_fp16_input_and_outputs(tmp_path: Path) -> None:
    metadata = {**META, "end2end": "False", "args": args(half=True, nms=True)}
    model = served(tmp_path, [kept_rows()], metadata, input_type=TensorProto.FLOAT16, output_type=TensorProto.FLOAT16)
    assert model.input.dtype == np.float16 and model.transform.dtype == np.float16
    assert found(model) == EXPECTED


def test_fixed_batch_over_one_is_padded_and_each_frame_decodes_alone(tmp_path: Path) -> None:
    metadata = {**META, "end2end": "False", "args": args(batch=4)}
    model = served(tmp_path, [one_to_many()], metadata, batch=4)
    assert model.input.batch == 4 and model.batch_shapes == (4,)
    assert found(model) == EXPECTED  # one frame, padded to the batch of 4 and cut back


def test_non_square_imgsz(tmp_path: Path) -> None:
    # imgsz [48, 64] (h, w): a 640x480 frame fills it exactly, scale 0.1, no padding
    metadata = {**META, "imgsz": "[48, 64]", "end2end": "False", "args": args()}
    model = served(tmp_path, [one_to_many(3024)], metadata, input_hw=(48, 64))
    assert model.input_hw == (48, 64)
    assert found(model) == [
        ("scratch", 0.9, (150.0, 270.0, 250.0, 370.0)),
        ("dent", 0.6, (390.0, 270.0, 490.0, 370.0)),
    ]


def test_dynamic_export_is_padded_only_to_its_stride(tmp_path: Path) -> None:
    # dynamic=True: batch, height and width are dynamic axes; imgsz 64 from the metadata, stride 16. The
    # predictor pads such a model only to the next multiple of the stride: 640x480 -> 64x48 (not 64x64), so the
    # model's (20, 32) is 8 px higher in the frame than with a full letterbox
    metadata = {**META, "stride": "16", "end2end": "False", "args": args(dynamic=True)}
    model = served(tmp_path, [one_to_many()], metadata, input_shape=["batch", 3, "height", "width"])
    assert model.input.dynamic_size and model.transform.stride == 16
    assert found(model) == [
        ("scratch", 0.9, (150.0, 270.0, 250.0, 370.0)),
        ("dent", 0.6, (390.0, 270.0, 490.0, 370.0)),
    ]
    assert found(model, 480, 640)[0][2] == (150.0, 270.0, 250.0, 370.0)  # portrait: 48x64, no padding either


def test_a_model_file_that_contradicts_its_own_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"is 64x64 \(h x w\) but its metadata says imgsz \[640, 640\]"):
        served(tmp_path, [one_to_many()], {**META, "imgsz": "[640, 640]"})
    with pytest.raises(ModelError, match=r"metadata says NMS is in the graph \(args.nms: True\)"):
        served(tmp_path, [one_to_many()], {**META, "end2end": "False", "args": args(nms=True)})
    with pytest.raises(ModelError, match=r"has batch 4 but its metadata says batch 1"):
        served(tmp_path, [one_to_many()], {**META, "args": args(batch=1)}, batch=4)

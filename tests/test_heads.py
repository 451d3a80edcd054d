"""The model's own metadata read first, the output shapes second: every Ultralytics export form and task gets its
head, and a model whose metadata and shapes disagree (or that cannot be served) is refused with one sentence."""

from __future__ import annotations

import pytest

from edge_inference.errors import ModelError
from edge_inference.vision.heads import read_head
from edge_inference.vision.model_meta import ExportArgs, ModelMeta, read_meta

pytestmark = pytest.mark.timeout(10)

# What Ultralytics writes into an ONNX export (strings; dicts and lists as Python literals).
NMS_EXPORT = {
    "task": "detect",
    "names": str({i: f"c{i}" for i in range(80)}),
    "imgsz": "[640, 640]",
    "stride": "32",
    "end2end": "False",
    "args": "{'batch': 1, 'half': False, 'dynamic': False, 'simplify': True, 'opset': None, 'nms': True}",
}


def test_ultralytics_metadata_is_read_as_python_literals() -> None:
    meta = read_meta({**NMS_EXPORT, "kpt_shape": "[17, 3]", "imgsz": "[384, 640]"})
    assert meta.task == "detect" and meta.names is not None and len(meta.names) == 80
    assert meta.imgsz == (384, 640) and meta.stride == 32 and meta.kpt_shape == (17, 3)
    assert meta.end2end is False and meta.args == ExportArgs(nms=True, dynamic=False, half=False, batch=1)
    assert meta.nms_in_graph is True  # end2end False, but the export put NMS in the graph
    assert read_meta({}).nms_in_graph is None and read_meta({"end2end": "True"}).nms_in_graph is True
    assert read_meta({"args": "{'nms': False}"}).nms_in_graph is False


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"args": "{'nms': True"}, r"model metadata `args` is not a Python literal"),
        ({"args": "__import__('os').system('true')"}, r"`args` is not a Python literal"),  # never evaluated
        ({"args": "[1, 2]"}, r"`args` is '\[1, 2\]'; expected a dict of export arguments"),
        ({"args": "{'batch': 0}"}, r"`args.batch` is 0; expected a positive whole number"),
        ({"args": "{'nms': 'maybe'}"}, r"`args.nms` is 'maybe'; expected True or False"),
        ({"task": "depth"}, r"`task` is 'depth'; edge-inference serves detect, classify, segment, pose, obb"),
        ({"imgsz": "[640]"}, r"`imgsz` is '\[640\]'; expected a size or \[height, width\]"),
        ({"kpt_shape": "[17, 4]"}, r"`kpt_shape` is '\[17, 4\]'; expected \[keypoints, 2 or 3\]"),
        ({"end2end": "perhaps"}, r"`end2end` is 'perhaps'; expected True or False"),
        ({"stride": "-32"}, r"`stride` is -32; expected a positive whole number"),
    ],
)
def test_metadata_that_cannot_be_read_is_refused_in_one_sentence(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ModelError, match=message) as err:
        read_meta(metadata)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("metadata", "shapes", "names", "expected"),
    [
        # detect: every export form
        (NMS_EXPORT, [(1, 300, 6)], 80, ("detect", "end2end", 0)),  # nms=True: the refusal of issue 19
        ({"task": "detect", "end2end": "True"}, [(1, 300, 6)], 80, ("detect", "end2end", 0)),  # YOLO26/YOLOv10
        ({"task": "detect", "end2end": "False"}, [(1, 84, 8400)], 80, ("detect", "yolov8", 0)),  # YOLOv8/11
        ({"task": "detect", "end2end": "False"}, [(4, 84, 8400)], 80, ("detect", "yolov8", 0)),  # fixed batch 4
        ({"task": "detect"}, [(1, 84, 5040)], 80, ("detect", "yolov8", 0)),  # non-square imgsz [384, 640]
        ({}, [(1, 25200, 85)], 80, ("detect", "yolov5", 0)),  # YOLOv5
        ({}, [(1, 300, 6)], None, ("detect", "end2end", 0)),  # no metadata at all
        ({}, [(100, 6)], None, ("detect", "rows", 0)),  # the classic Flask sample's rows
        # the other tasks, each in its one-to-many and its NMS/end-to-end form
        ({"task": "classify"}, [(1, 1000)], 1000, ("classify", "classify", 0)),
        ({"task": "segment"}, [(1, 116, 8400), (1, 32, 160, 160)], 80, ("segment", "yolov8", 32)),
        ({"task": "segment", "end2end": "True"}, [(1, 300, 38), (1, 32, 160, 160)], 80, ("segment", "end2end", 32)),
        ({"task": "segment"}, [(1, 32, 160, 160), (1, 116, 8400)], 80, ("segment", "yolov8", 32)),  # either order
        ({"task": "pose", "kpt_shape": "[17, 3]"}, [(1, 56, 8400)], 1, ("pose", "yolov8", 51)),
        ({"task": "pose", "kpt_shape": "[17, 3]", "end2end": "True"}, [(1, 300, 57)], 1, ("pose", "end2end", 51)),
        ({"task": "obb"}, [(1, 20, 21504)], 15, ("obb", "yolov8", 1)),
        ({"task": "obb", **{k: NMS_EXPORT[k] for k in ("end2end", "args")}}, [(1, 300, 7)], 15, ("obb", "end2end", 1)),
        # without metadata, shapes alone: prototypes mean segment, a rank-2 output a classifier
        ({}, [(1, 37, 2100), (1, 32, 80, 80)], 1, ("segment", "yolov8", 32)),
        ({}, [(1, 2)], None, ("classify", "classify", 0)),
    ],
)
def test_each_task_and_export_form_gets_its_head(
    metadata: dict[str, str], shapes: list[tuple[int, ...]], names: int | None, expected: tuple[str, str, int]
) -> None:
    head = read_head(read_meta(metadata), shapes, names)
    assert (head.task, head.layout, head.extras) == expected


@pytest.mark.parametrize(
    ("metadata", "shapes", "names", "message"),
    [
        (
            {"task": "detect", "end2end": "True"},
            [(1, 84, 8400)],
            80,
            r"metadata says NMS is in the graph \(end2end: True\) so its output should be \[B, K, 6\].*\[1, 84, 8400\]",
        ),
        (
            NMS_EXPORT,
            [(1, 84, 8400)],
            80,
            r"metadata says NMS is in the graph \(args.nms: True\)",
        ),
        (
            {"task": "segment"},
            [(1, 116, 8400)],
            80,
            r"a segment model has two outputs, detections .* and mask prototypes .*; this one has \[1, 116, 8400\]",
        ),
        ({"task": "classify"}, [(1, 84, 8400)], 80, r"a classify model has one output \[B, C\]; this one has"),
        ({"task": "classify"}, [(1, 3)], 2, r"the model outputs 3 classes but 2 class names were given"),
        ({"task": "pose"}, [(1, 56, 8400)], 1, r"task pose but has no `kpt_shape` metadata"),
        (
            {"task": "pose", "kpt_shape": "[17, 2]"},
            [(1, 56, 8400)],
            1,
            r"the model outputs 18 classes but 1 class names",  # 17 x 2 keypoint values expected, 17 x 3 given
        ),
        ({"task": "obb"}, [(1, 20, 21504), (1, 1)], 15, r"an obb model has one output; this one has 2"),
        ({}, [(1, 56, 8400)], 1, r"outputs 52 classes but 1 class names .*\(a pose or OBB model without its `task`"),
        ({}, [(1, 2, 3, 4)], None, r"outputs \[1, 2, 3, 4\] and no `task` metadata"),
        ({"task": "detect"}, [(1, 4, 8400)], None, r"leaves no class scores after the box"),
    ],
)
def test_metadata_and_shapes_that_disagree_are_refused_clearly(
    metadata: dict[str, str], shapes: list[tuple[int, ...]], names: int | None, message: str
) -> None:
    with pytest.raises(ModelError, match=message) as err:
        read_head(read_meta(metadata), shapes, names)
    assert "\n" not in str(err.value)


def test_a_labels_file_is_named_when_its_count_is_wrong() -> None:
    with pytest.raises(ModelError, match=r"outputs 80 classes but 3 class names were given \(LABELS_PATH\)"):
        read_head(ModelMeta(task="detect"), [(1, 84, 8400)], 3, labels_file=True)

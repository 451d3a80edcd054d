"""What a model's outputs mean: its task and the layout of its head, read from the metadata first and the output
shapes second, and checked against each other.

Layouts (B = batch, C = classes, N = candidates, K = kept detections, E = extra values per candidate: 32 mask
coefficients for segment, keypoints x values for pose, 1 angle for OBB):
- `yolov8`   `[B, 4+C+E, N]`: cx, cy, w, h, C class scores, extras (YOLOv8/YOLO11, and YOLO26's one-to-many head)
- `yolov5`   `[B, N, 5+C+E]`: cx, cy, w, h, objectness, C class scores, extras (YOLOv5, YOLOv5-seg)
- `end2end`  `[B, K, 6+E]`: x1, y1, x2, y2, score, class, extras - NMS in the graph: an end-to-end head (YOLOv10,
             YOLO26: metadata `end2end: True`) or an `nms=True` export (`end2end: False`, `args.nms` True).
             OBB gives cx, cy, w, h there, its angle last.
- `rows`     `[N, 6]`: x1, y1, x2, y2, score, class for one image (the classic Flask ONNX sample)
- `classify` `[B, C]`: class probabilities (or logits: vision/classify.py tells them apart)
A segmentation model has a second output, the mask prototypes `[B, E, H/4, W/4]`.

A model the module cannot serve, or whose metadata and shapes disagree, is refused here with one sentence that
says what it saw and what it expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_inference.errors import ModelError
from edge_inference.vision.model_meta import ModelMeta, Task

Layout = Literal["yolov8", "yolov5", "end2end", "rows", "classify"]
LAYOUTS: tuple[Layout, ...] = ("yolov8", "yolov5", "end2end", "rows", "classify")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Head:
    """How to read the outputs of one image: task, layout, class count, extras per candidate, prototypes."""

    task: Task
    layout: Layout
    num_classes: int | None  # None: the layout carries class ids and no class names were given
    extras: int = 0
    kpt_shape: tuple[int, int] | None = None
    proto: int | None = None  # index of the mask prototype output (segment)
    output: int = 0  # index of the detections (or class scores) output

    @property
    def needs_nms(self) -> bool:
        return self.layout in ("yolov8", "yolov5")

    @property
    def batched(self) -> bool:
        """The outputs have a batch axis (the classic rows output is one image's)."""
        return self.layout != "rows"

    def describe(self, shapes: list[Shape]) -> str:
        """`segment, yolov8 [1, 116, 8400] + prototypes [1, 32, 160, 160]`, for logs and the twin."""
        text = f"{self.task}, {self.layout} {list(shapes[self.output])}"
        if self.proto is not None:
            text += f" + prototypes {list(shapes[self.proto])}"
        return text


def _names_source(labels_file: bool) -> str:
    return "LABELS_PATH" if labels_file else "metadata names"


def _class_mismatch(encoded: int, names: int, labels_file: bool) -> ModelError:
    return ModelError(
        f"the model outputs {encoded} classes but {names} class names were given ({_names_source(labels_file)})"
    )


def _guess_task(shapes: list[Shape]) -> Task:
    """The task from the outputs alone (no `task` metadata): prototypes mean segment, rank 2 a classifier or the
    classic rows, rank 3 a detector. Pose and OBB cannot be told from shapes."""
    ranks = sorted(len(s) for s in shapes)
    if ranks == [3, 4]:
        return "segment"
    if ranks == [2]:
        return "detect" if shapes[0][1] == 6 else "classify"
    if ranks == [3]:
        return "detect"
    listed = ", ".join(str(list(s)) for s in shapes)
    raise ModelError(
        f"the model has outputs {listed} and no `task` metadata; expected one output [B, 4+C, N], [B, N, 5+C],"
        " [B, K, 6] or [B, C], or a detections output with mask prototypes [B, 32, H, W]"
    )


def read_head(meta: ModelMeta, shapes: list[Shape], names: int | None, *, labels_file: bool = False) -> Head:
    """The head of a model from its metadata and the concrete shapes of its outputs (from a real run).
    `names`: how many class names were given (metadata or LABELS_PATH), None when none."""
    if not shapes:
        raise ModelError("the model has no outputs")
    task = meta.task or _guess_task(shapes)
    if task == "classify":
        return _classify(shapes, names, labels_file)
    if task == "segment":
        return _segment(meta, shapes, names, labels_file)
    if len(shapes) != 1:
        listed = ", ".join(str(list(s)) for s in shapes)
        article = "an" if task == "obb" else "a"
        raise ModelError(f"{article} {task} model has one output; this one has {len(shapes)} ({listed})")
    extras = 0
    kpt_shape = None
    if task == "pose":
        if meta.kpt_shape is None:
            raise ModelError(
                f"the model says task pose but has no `kpt_shape` metadata (output {list(shapes[0])}); export it"
                " with Ultralytics, which records [keypoints, 2 or 3]"
            )
        kpt_shape = meta.kpt_shape
        extras = kpt_shape[0] * kpt_shape[1]
    elif task == "obb":
        extras = 1
    layout, classes = _detection_layout(task, meta, shapes[0], names, extras, labels_file)
    return Head(task, layout, classes, extras, kpt_shape)


def _classify(shapes: list[Shape], names: int | None, labels_file: bool) -> Head:
    shape = shapes[0]
    if len(shapes) != 1 or len(shape) != 2:
        listed = ", ".join(str(list(s)) for s in shapes)
        raise ModelError(f"a classify model has one output [B, C]; this one has {listed}")
    if names is not None and shape[1] != names:
        raise _class_mismatch(shape[1], names, labels_file)
    return Head("classify", "classify", shape[1])


def _segment(meta: ModelMeta, shapes: list[Shape], names: int | None, labels_file: bool) -> Head:
    protos = [i for i, s in enumerate(shapes) if len(s) == 4]
    dets = [i for i, s in enumerate(shapes) if len(s) == 3]
    if len(shapes) != 2 or len(protos) != 1 or len(dets) != 1:
        listed = ", ".join(str(list(s)) for s in shapes)
        raise ModelError(
            f"a segment model has two outputs, detections [B, 4+C+32, N] and mask prototypes [B, 32, H/4, W/4];"
            f" this one has {listed}"
        )
    coefficients = shapes[protos[0]][1]
    layout, classes = _detection_layout("segment", meta, shapes[dets[0]], names, coefficients, labels_file)
    return Head("segment", layout, classes, coefficients, proto=protos[0], output=dets[0])


def _detection_layout(
    task: Task, meta: ModelMeta, shape: Shape, names: int | None, extras: int, labels_file: bool
) -> tuple[Layout, int | None]:
    """(layout, class count) of a detection-type output with `extras` values per candidate after the scores."""
    what = {"detect": "", "segment": " mask coefficients", "pose": " keypoint values", "obb": " angle"}[task]
    if len(shape) == 2:
        if task == "detect" and shape[1] == 6 and meta.nms_in_graph is not False:
            return "rows", names
        raise ModelError(f"output shape {list(shape)}: a rank-2 output must be [N, 6] rows (x1,y1,x2,y2,score,class)")
    if len(shape) != 3:
        raise ModelError(f"output shape {list(shape)}: expected rank 3 ([B, 4+C, N], [B, N, 5+C], [B, K, 6])")
    _, a, b = shape
    if meta.nms_in_graph:
        if b != 6 + extras:
            said = "end2end: True" if meta.end2end else "args.nms: True"
            raise ModelError(
                f"the model's metadata says NMS is in the graph ({said}) so its output should be"
                f" [B, K, {6 + extras}] (box, score, class{',' + what if extras else ''}), but it is {list(shape)}"
            )
        return "end2end", names
    if names is not None:
        fits_v8, fits_v5 = a == 4 + names + extras, b == 5 + names + extras
        if fits_v8 and fits_v5:  # both read it: Ultralytics 8+ (which writes `task`) exports [B, 4+C+E, N]
            return ("yolov8" if meta.task is not None or a < b else "yolov5"), names
        if fits_v8:
            return "yolov8", names
        if fits_v5:
            return "yolov5", names
        if b == 6 + extras and meta.nms_in_graph is None and task == "detect":
            return "end2end", names
        layout: Layout = "yolov8" if a < b else "yolov5"
        encoded = a - 4 - extras if layout == "yolov8" else b - 5 - extras
        if encoded > 0:
            error = _class_mismatch(encoded, names, labels_file)
            if meta.task is None and encoded > names:  # extras the shapes cannot name: pose or OBB values
                error = ModelError(f"{error} (a pose or OBB model without its `task` metadata?)")
            raise error
        raise ModelError(
            f"output shape {list(shape)} does not fit {names} classes{' and ' + str(extras) + what if extras else ''}:"
            f" expected [B, {4 + names + extras}, N] (YOLOv8) or [B, N, {5 + names + extras}] (YOLOv5)"
        )
    if task == "detect" and b == 6 and a != 6 and meta.nms_in_graph is None:
        return "end2end", None
    layout = "yolov8" if a < b else "yolov5"
    encoded = a - 4 - extras if layout == "yolov8" else b - 5 - extras
    if encoded < 1:
        raise ModelError(
            f"output shape {list(shape)} leaves no class scores after the box{' and' + what if extras else ''}"
            f" ({extras} values); expected [B, 4+C+{extras}, N]"
        )
    return layout, encoded

"""What an exported model says about itself in its ONNX metadata: task, class names, image size, stride,
keypoint shape, and how it was exported (`end2end`, `args` with `nms`, `dynamic`, `half`, `batch`).

Ultralytics writes these as strings, most of them Python literals (`names` is a dict literal, `args` a dict,
`imgsz` a list, `end2end` `True`/`False`); they are read with `ast.literal_eval`, never `eval`. Every field is
optional (a model exported by other tools carries none, and the shapes then decide, vision/heads.py); a field that
is present but cannot be read refuses the model with one sentence saying what it saw and what it expected.
Pure functions over the metadata map ONNX Runtime reports, so model.py stays the one user of ONNX Runtime.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any, Literal

from edge_inference.errors import ModelError

Task = Literal["detect", "classify", "segment", "pose", "obb"]
TASKS: tuple[Task, ...] = ("detect", "classify", "segment", "pose", "obb")


@dataclass(frozen=True)
class ExportArgs:
    """The `args` Ultralytics records for an export (`model.export(...)` keywords); None when not recorded."""

    nms: bool | None = None
    dynamic: bool | None = None
    half: bool | None = None
    batch: int | None = None


@dataclass(frozen=True)
class ModelMeta:
    """The metadata fields the module reads; each None when the model does not carry it."""

    task: Task | None = None
    names: tuple[str, ...] | None = None
    imgsz: tuple[int, int] | None = None  # (height, width)
    stride: int | None = None
    kpt_shape: tuple[int, int] | None = None  # (keypoints, values per keypoint: 2 = x, y; 3 = x, y, visibility)
    end2end: bool | None = None
    args: ExportArgs = ExportArgs()

    @property
    def nms_in_graph(self) -> bool | None:
        """The graph ends in NMS and outputs kept detections ([B, K, 6+]): an end-to-end head (YOLOv10/YOLO26) or
        an `nms=True` export, whose metadata says `end2end: False` with `args.nms` True. None: not recorded."""
        if self.end2end or self.args.nms:
            return True
        if self.end2end is False or self.args.nms is False:
            return False
        return None


def _literal(key: str, text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ModelError(f"model metadata `{key}` is not a Python literal: {text[:80]!r}") from None


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ModelError(f"model metadata `{key}` is {value!r}; expected True or False")


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"model metadata `{key}` is {value!r}; expected a positive whole number")
    return value


def meta_imgsz(text: str) -> tuple[int, int]:
    """`imgsz` as (height, width): `640`, `[640, 640]` or `[384, 640]` (Ultralytics writes [h, w])."""
    value = _literal("imgsz", text)
    if isinstance(value, int) and not isinstance(value, bool):
        size = _positive_int("imgsz", value)
        return size, size
    if isinstance(value, list | tuple) and len(value) == 2:
        return _positive_int("imgsz", value[0]), _positive_int("imgsz", value[1])
    raise ModelError(f"model metadata `imgsz` is {text[:80]!r}; expected a size or [height, width]")


def parse_names(text: str) -> tuple[str, ...]:
    """Class names from metadata: a Python dict literal (Ultralytics), JSON, a list, or a comma list."""
    text = text.strip()
    value: Any
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            value = json.loads(text)
        except ValueError:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, dict):
        try:
            ordered = sorted(((int(k), str(v)) for k, v in value.items()), key=lambda kv: kv[0])
        except (TypeError, ValueError):
            raise ModelError(f"model metadata `names` has non-integer keys: {text[:80]!r}") from None
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise ModelError("model metadata `names` must number the classes 0..C-1")
        return tuple(v for _, v in ordered)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise ModelError(f"model metadata `names` is not a dict or list: {text[:80]!r}")


def _task(text: str) -> Task:
    task = text.strip().lower()
    if task not in TASKS:
        raise ModelError(f"model metadata `task` is {text[:40]!r}; edge-inference serves {', '.join(TASKS)}")
    return task


def _kpt_shape(text: str) -> tuple[int, int]:
    value = _literal("kpt_shape", text)
    if isinstance(value, list | tuple) and len(value) == 2:
        count, dims = _positive_int("kpt_shape", value[0]), _positive_int("kpt_shape", value[1])
        if dims in (2, 3):
            return count, dims
    raise ModelError(f"model metadata `kpt_shape` is {text[:80]!r}; expected [keypoints, 2 or 3]")


def _args(text: str) -> ExportArgs:
    value = _literal("args", text)
    if not isinstance(value, dict):
        raise ModelError(f"model metadata `args` is {text[:80]!r}; expected a dict of export arguments")

    def flag(key: str) -> bool | None:
        return None if value.get(key) is None else _flag(f"args.{key}", value[key])

    batch = value.get("batch")
    return ExportArgs(
        nms=flag("nms"),
        dynamic=flag("dynamic"),
        half=flag("half"),
        batch=None if batch is None else _positive_int("args.batch", batch),
    )


def read_meta(metadata: dict[str, str]) -> ModelMeta:
    """The fields the module reads from a model's custom metadata map (absent fields stay None)."""

    def get(key: str) -> str | None:
        raw = metadata.get(key)
        return raw if raw is not None and raw.strip() else None

    task, names, imgsz, stride, kpt, end2end, args = (get(k) for k in META_KEYS)
    return ModelMeta(
        task=None if task is None else _task(task),
        names=None if names is None else parse_names(names),
        imgsz=None if imgsz is None else meta_imgsz(imgsz),
        stride=None if stride is None else _positive_int("stride", _literal("stride", stride)),
        kpt_shape=None if kpt is None else _kpt_shape(kpt),
        end2end=None if end2end is None else _flag("end2end", end2end),
        args=ExportArgs() if args is None else _args(args),
    )


META_KEYS = ("task", "names", "imgsz", "stride", "kpt_shape", "end2end", "args")

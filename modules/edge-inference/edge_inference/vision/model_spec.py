"""What a model says about itself: its image input (name, type, size, fixed or dynamic batch) and its class names.

Pure functions over what ONNX Runtime reports (`session.get_inputs()`, the custom metadata map), so model.py
stays the one place that talks to ONNX Runtime. Every input the module cannot serve is refused here with one
sentence saying why (Triton's `parse_model` habit).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_inference.errors import ModelError

DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of a model file, read in 1 MB chunks (a model may be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype[Any]
    height: int
    width: int
    batch: int | None  # None: dynamic batch axis


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def read_input_spec(inputs: list[Any], metadata: dict[str, str]) -> InputSpec:
    """The one image input [B, 3, H, W] (float32/float16), H and W from the shape or the `imgsz` metadata."""
    if len(inputs) != 1:
        names = ", ".join(f"{i.name} {i.shape}" for i in inputs)
        raise ModelError(f"the model has {len(inputs)} inputs ({names}); edge-inference serves one image input")
    spec = inputs[0]
    shape = list(spec.shape)
    if len(shape) != 4:
        raise ModelError(
            f"model input '{spec.name}' has rank {len(shape)} (shape {shape}); expected an image batch [B, 3, H, W]"
        )
    if spec.type not in DTYPES:
        raise ModelError(f"model input '{spec.name}' has type {spec.type}; expected float32 or float16")
    if _dim(shape[1]) != 3:
        hint = " (it looks NHWC; export the model as NCHW)" if _dim(shape[3]) == 3 else ""
        raise ModelError(f"model input '{spec.name}' has shape {shape}; expected [B, 3, H, W]{hint}")
    height, width = _dim(shape[2]), _dim(shape[3])
    if height is None or width is None:
        imgsz = meta_imgsz(metadata)
        if imgsz is None:
            raise ModelError(
                f"model input '{spec.name}' has a dynamic size {shape} and no `imgsz` metadata; export it with a fixed size"
            )
        height, width = imgsz
    return InputSpec(spec.name, np.dtype(DTYPES[spec.type]), height, width, _dim(shape[0]))


def meta_imgsz(metadata: dict[str, str]) -> tuple[int, int] | None:
    raw = metadata.get("imgsz")
    if not raw:
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int):
        return value, value
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def parse_names(text: str) -> tuple[str, ...]:
    """Class names from metadata: a Python dict literal (Ultralytics), JSON, a list, or a comma list."""
    text = text.strip()
    value: Any
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
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


def read_labels(path: Path) -> tuple[str, ...]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ModelError(f"LABELS_PATH {path}: cannot read: {exc.strerror}") from None
    names = [n for n in names if n]
    if not names:
        raise ModelError(f"LABELS_PATH {path}: no class names in it (one per line)")
    return tuple(names)

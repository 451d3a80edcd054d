"""A model's image input (name, type, size, fixed or dynamic batch and size) and its class names file.

Pure functions over what ONNX Runtime reports (`session.get_inputs()`) and the model's metadata
(vision/model_meta.py), so model.py stays the one place that talks to ONNX Runtime. Every input the module cannot
serve is refused here with one sentence saying why (Triton's `parse_model` habit).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_inference.errors import ModelError
from edge_inference.vision.model_meta import ModelMeta

DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of a model file, read in 1 MB chunks (a model may be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(metadata: dict[str, str], graph_name: str, graph_version: int, path: Path) -> tuple[str, str]:
    """A model's name and version from its metadata, else its graph, else its file name (an exporter's generic
    graph name says nothing)."""
    name = metadata.get("name") or graph_name or path.stem
    if name in ("main_graph", "torch_jit", "torch-jit-export", "graph"):
        name = path.stem
    return name, metadata.get("version") or str(graph_version or "") or "unknown"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype[Any]
    height: int
    width: int
    batch: int | None  # None: dynamic batch axis
    dynamic_size: bool = False  # height and width are dynamic axes (an Ultralytics `dynamic=True` export)


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def read_input_spec(inputs: list[Any], meta: ModelMeta) -> InputSpec:
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
    dynamic_size = height is None or width is None
    if dynamic_size:
        if meta.imgsz is None:
            raise ModelError(
                f"model input '{spec.name}' has a dynamic size {shape} and no `imgsz` metadata; export it with a fixed size"
            )
        height, width = meta.imgsz
    elif meta.imgsz is not None and meta.imgsz != (height, width):
        raise ModelError(
            f"model input '{spec.name}' is {height}x{width} (h x w) but its metadata says imgsz {list(meta.imgsz)};"
            " the model file does not match its own metadata: export it again"
        )
    assert height is not None and width is not None
    batch = _dim(shape[0])
    if batch is not None and meta.args.batch is not None and batch != meta.args.batch and not meta.args.dynamic:
        raise ModelError(
            f"model input '{spec.name}' has batch {batch} but its metadata says batch {meta.args.batch};"
            " the model file does not match its own metadata: export it again"
        )
    return InputSpec(spec.name, np.dtype(DTYPES[spec.type]), height, width, batch, dynamic_size)


def read_labels(path: Path) -> tuple[str, ...]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ModelError(f"LABELS_PATH {path}: cannot read: {exc.strerror}") from None
    names = [n for n in names if n]
    if not names:
        raise ModelError(f"LABELS_PATH {path}: no class names in it (one per line)")
    return tuple(names)

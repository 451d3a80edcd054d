"""Tiny ONNX models built in the tests, one per output layout, with fixed (input-independent) detections.

Each model takes `images` [B, 3, H, W] and outputs a constant tensor broadcast over the batch, so a test
knows exactly which boxes the pipeline must report (after letterbox mapping).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_constant_model(
    path: Path,
    output: np.ndarray,
    *,
    input_hw: tuple[int, int] = (64, 64),
    batch: int | str = "batch",
    names: str | None = None,
    end2end: bool | None = None,
    input_type: int = TensorProto.FLOAT,
    input_shape: list[int | str] | None = None,
    batched_output: bool = True,
    version: str = "0.0.1",
    fail_above: float | None = None,
) -> Path:
    """A model whose output is `output` (shape [1, ...] when batched) for every image of the batch.

    `fail_above`: the run fails (a Gather index out of range, as a model with a bug fails) when the batch's mean
    pixel is above it: bright frames fail, the warm-up's grey and ordinary frames do not."""
    h, w = input_hw
    shape = input_shape if input_shape is not None else [batch, 3, h, w]
    images = helper.make_tensor_value_info("images", input_type, shape)
    const = numpy_helper.from_array(output.astype(np.float32), "const")
    nodes = []
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["images"], ["images32"], to=TensorProto.FLOAT))
        src = "images32"
    else:
        src = "images"
    if batched_output:
        # mean over C,H,W -> [B,1,1,1] -> reshape [B,1,1] -> *0 + const [1, A, N] -> [B, A, N]
        nodes += [
            helper.make_node("ReduceMean", [src], ["mean"], keepdims=1, axes=list(range(1, len(shape)))),
            helper.make_node("Reshape", ["mean", "shape3"], ["mean3"]),
            helper.make_node("Mul", ["mean3", "zero"], ["zeroed"]),
            helper.make_node("Add", ["zeroed", "const"], ["output0"]),
        ]
        out_shape: list[int | str] = [batch, *output.shape[1:]]
        inits = [
            const,
            numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape3"),
            numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
        ]
    else:
        nodes += [
            helper.make_node("ReduceMean", [src], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "zero"], ["zeroed"]),
            helper.make_node("Add", ["zeroed", "const"], ["output0"]),
        ]
        out_shape = list(output.shape)
        inits = [const, numpy_helper.from_array(np.zeros((1,), np.float32), "zero")]
    if fail_above is not None:
        nodes[-1].output[0] = "output_ok"
        nodes += [
            helper.make_node("ReduceMean", [src], ["all_mean"], keepdims=0),
            helper.make_node("Greater", ["all_mean", "fail_above"], ["bright"]),
            helper.make_node("Cast", ["bright"], ["bright_i"], to=TensorProto.INT64),
            helper.make_node("Mul", ["bright_i", "five"], ["index"]),
            helper.make_node("Gather", ["pair", "index"], ["picked"], axis=0),
            helper.make_node("Add", ["output_ok", "picked"], ["output0"]),
        ]
        inits += [
            numpy_helper.from_array(np.array(fail_above, np.float32), "fail_above"),
            numpy_helper.from_array(np.array(5, np.int64), "five"),
            numpy_helper.from_array(np.zeros((2,), np.float32), "pair"),
        ]
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "tiny", [images], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"version": version, "description": "test model"}
    if names is not None:
        meta["names"] = names
    if end2end is not None:
        meta["end2end"] = str(end2end)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def yolov8_output(
    boxes_cxcywh: list[tuple[float, float, float, float]], scores: list[list[float]], n: int = 16
) -> np.ndarray:
    """[1, 4+C, N]: the given candidates first, the rest zeros."""
    c = len(scores[0])
    out = np.zeros((1, 4 + c, n), np.float32)
    for i, (box, sc) in enumerate(zip(boxes_cxcywh, scores, strict=True)):
        out[0, :4, i] = box
        out[0, 4:, i] = sc
    return out

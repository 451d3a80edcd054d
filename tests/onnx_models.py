"""Tiny ONNX models built in the tests with `onnx.helper` (no Ultralytics code or weights): one per task, output
layout and export form, with fixed (input-independent) outputs.

Each model takes `images` [B, 3, H, W] and outputs constant tensors broadcast over the batch, so a test knows
exactly what the pipeline must report (after letterbox mapping). `build_channel_classifier` is the exception: its
answer depends on the pixels it is given, which shows the classify transform.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    meta = {"version": version}
    if names is not None:
        meta["names"] = names
    if end2end is not None:
        meta["end2end"] = str(end2end)
    return build_model(
        path,
        [output],
        input_hw=input_hw,
        batch=batch,
        metadata=meta,
        input_type=input_type,
        input_shape=input_shape,
        batched_output=batched_output,
        fail_above=fail_above,
    )


def build_model(
    path: Path,
    outputs: list[np.ndarray],
    *,
    input_hw: tuple[int, int] = (64, 64),
    batch: int | str = "batch",
    metadata: dict[str, str] | None = None,
    input_type: int = TensorProto.FLOAT,
    output_type: int = TensorProto.FLOAT,
    input_shape: list[int | str] | None = None,
    batched_output: bool = True,
    fail_above: float | None = None,
) -> Path:
    """A model with these constant outputs (each [1, ...], broadcast over the batch when batched), the given
    metadata (Ultralytics' keys: task, names, imgsz, stride, kpt_shape, end2end, args) and input/output types:
    every export form of every task, with outputs known in advance."""
    h, w = input_hw
    shape = input_shape if input_shape is not None else [batch, 3, h, w]
    images = helper.make_tensor_value_info("images", input_type, shape)
    nodes = []
    src = "images"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["images"], ["images32"], to=TensorProto.FLOAT))
        src = "images32"
    inits = [numpy_helper.from_array(np.zeros((1,), np.float32), "zero")]
    graph_outputs = []
    if batched_output:
        nodes.append(helper.make_node("ReduceMean", [src], ["mean"], keepdims=1, axes=list(range(1, len(shape)))))
    else:
        nodes.append(helper.make_node("ReduceMean", [src], ["mean"], keepdims=0))
    for i, output in enumerate(outputs):
        const, value = f"const{i}", f"value{i}"
        inits.append(numpy_helper.from_array(output.astype(np.float32), const))
        if batched_output:
            # mean over C,H,W -> [B,1,1,1] -> reshape [B,1,...] (the output's rank) -> *0 + const [1, ...]
            rank_shape = f"shape{i}"
            inits.append(numpy_helper.from_array(np.array([-1] + [1] * (output.ndim - 1), np.int64), rank_shape))
            nodes += [
                helper.make_node("Reshape", ["mean", rank_shape], [f"mean{i}"]),
                helper.make_node("Mul", [f"mean{i}", "zero"], [f"zeroed{i}"]),
            ]
            out_shape: list[int | str] = [batch if input_shape is None else shape[0], *output.shape[1:]]
        else:
            nodes.append(helper.make_node("Mul", ["mean", "zero"], [f"zeroed{i}"]))
            out_shape = list(output.shape)
        name = f"output{i}"
        if output_type == TensorProto.FLOAT:
            nodes.append(helper.make_node("Add", [f"zeroed{i}", const], [name]))
        else:
            nodes += [
                helper.make_node("Add", [f"zeroed{i}", const], [value]),
                helper.make_node("Cast", [value], [name], to=output_type),
            ]
        graph_outputs.append(helper.make_tensor_value_info(name, output_type, out_shape))
    if fail_above is not None:  # output0 goes through an index that is out of range on bright frames
        _fail_when_bright(nodes, inits, src, fail_above)
    save(path, helper.make_graph(nodes, "tiny", [images], graph_outputs, initializer=inits), metadata or {})
    return path


def _fail_when_bright(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], src: str, above: float) -> None:
    """Route `output0` through a Gather whose index is 5 (out of range) when the batch's mean pixel is above
    `above`: ONNX Runtime then fails the run, as a model with a bug does."""
    producer = next(n for n in nodes if "output0" in n.output)
    producer.output[list(producer.output).index("output0")] = "output_ok"
    nodes += [
        helper.make_node("ReduceMean", [src], ["all_mean"], keepdims=0),
        helper.make_node("Greater", ["all_mean", "fail_above"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["bright_i"], to=TensorProto.INT64),
        helper.make_node("Mul", ["bright_i", "five"], ["index"]),
        helper.make_node("Gather", ["pair", "index"], ["picked"], axis=0),
        helper.make_node("Add", ["output_ok", "picked"], ["output0"]),
    ]
    inits += [
        numpy_helper.from_array(np.array(above, np.float32), "fail_above"),
        numpy_helper.from_array(np.array(5, np.int64), "five"),
        numpy_helper.from_array(np.zeros((2,), np.float32), "pair"),
    ]


def save(path: Path, graph: onnx.GraphProto, metadata: dict[str, str]) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"version": "0.0.1", "description": "test model", **metadata}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def build_channel_classifier(path: Path, *, softmax: bool = True, input_hw: tuple[int, int] = (100, 100)) -> Path:
    """A 3-class classifier whose class scores are the mean of the input's R, G and B channels (softmax at the
    end when `softmax`, else those means as logits): what it answers shows which pixels it was given."""
    h, w = input_hw
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, h, w])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3])
    means = helper.make_node("ReduceMean", ["images"], ["means"], keepdims=0, axes=[2, 3])
    nodes = [means, helper.make_node("Softmax", ["means"], ["output0"], axis=1)] if softmax else [means]
    if not softmax:
        nodes[0].output[0] = "output0"
    graph = helper.make_graph(nodes, "classifier", [images], [out])
    save(path, graph, {"task": "classify", "names": "{0: 'red', 1: 'green', 2: 'blue'}", "imgsz": str([h, w])})
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


def infer(model: Any, image: np.ndarray, options: Any) -> Any:
    """One frame through the module's own path for a served model (OnnxModel): its input transform, a session
    run, its decoder; returns `Decoded` (detections, classification)."""
    from edge_inference.vision.preprocess import prepare_frame

    tensor, geometry = prepare_frame(image, (image.shape[1], image.shape[0]), model.transform)
    outputs = model.run(tensor)
    return model.decoder.decode([o[0] for o in outputs], geometry, options)

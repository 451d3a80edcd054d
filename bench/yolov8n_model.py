"""A YOLOv8n-shaped ONNX detector with random weights, built with `onnx.helper`, for benchmarks only.

The graph follows YOLOv8n's shape (no trained weights, no Ultralytics code): Conv+SiLU (Sigmoid*Mul, as the
Ultralytics export writes it) with BatchNorm folded into the conv bias; backbone widths 16/32/64/128/256 with
strides down to 32 and C2f blocks (1, 2, 2, 1 bottlenecks) and SPPF; a PAN neck; a decoupled head on three
scales (stride 8/16/32) with DFL box decoding. Input `images` [B, 3, S, S] (dynamic batch), output `output0`
[B, 84, N] (N = 8400 at S = 640): cx, cy, w, h in input pixels, then 80 sigmoid class scores. About 3.2 M
parameters and 8.7 GFLOPs at 640, like the real YOLOv8n, so ONNX Runtime does the same amount of work.

Weights are He-initialised and scaled down so activations stay bounded through the depth; the class logits
get a negative bias so only a handful of candidates pass a 0.5 threshold, as with a trained model on
background-heavy frames (postprocessing then costs what it costs in production, not a flood of boxes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

COCO_NAMES = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic_light",
    "fire_hydrant",
    "stop_sign",
    "parking_meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports_ball",
    "kite",
    "baseball_bat",
    "baseball_glove",
    "skateboard",
    "surfboard",
    "tennis_racket",
    "bottle",
    "wine_glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot_dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted_plant",
    "bed",
    "dining_table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell_phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy_bear",
    "hair_drier",
    "toothbrush",
]
assert len(COCO_NAMES) == 80

WIDTHS = (16, 32, 64, 128, 256)  # YOLOv8n: width multiple 0.25, max channels 1024 * 0.25
REG_MAX = 16


@dataclass
class _Graph:
    """Accumulates nodes and initializers, counting parameters and multiply-accumulates."""

    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    params: int = 0
    macs: int = 0
    roles: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _n: int = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, array: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(
        self,
        x: str,
        c_in: int,
        c_out: int,
        k: int,
        s: int,
        hw: int,
        *,
        act: bool = True,
        gain: float = 1.0,
        bias: float = 0.0,
        role: str = "",
    ) -> tuple[str, int]:
        """Conv (BN folded into the bias) + SiLU; returns the output name and spatial size."""
        fan_in = c_in * k * k
        w = (self.rng.standard_normal((c_out, c_in, k, k)) * gain * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = np.full((c_out,), bias, np.float32)
        out_hw = (hw + 2 * (k // 2) - k) // s + 1
        self.params += w.size + b.size
        self.macs += c_out * c_in * k * k * out_hw * out_hw
        w_name, b_name = self.const(w, "w"), self.const(b, "b")
        if role:
            self.roles.setdefault(role, []).append((w_name, b_name))
        y = self.node(
            "Conv",
            [x, w_name, b_name],
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[k // 2] * 4,
        )
        if act:
            y = self.node("Mul", [y, self.node("Sigmoid", [y])])
        return y, out_hw

    def c2f(self, x: str, c_in: int, c_out: int, n: int, hw: int, shortcut: bool) -> str:
        c = c_out // 2
        y, _ = self.conv(x, c_in, 2 * c, 1, 1, hw)
        split = self.const(np.array([c, c], np.int64), "split")
        a = self.name("split")
        b = self.name("split")
        self.nodes.append(helper.make_node("Split", [y, split], [a, b], axis=1))
        parts = [a, b]
        for _ in range(n):
            h, _ = self.conv(parts[-1], c, c, 3, 1, hw)
            h, _ = self.conv(h, c, c, 3, 1, hw)
            parts.append(self.node("Add", [parts[-1], h]) if shortcut else h)
        cat = self.node("Concat", parts, axis=1)
        out, _ = self.conv(cat, (2 + n) * c, c_out, 1, 1, hw)
        return out

    def sppf(self, x: str, c_in: int, c_out: int, hw: int) -> str:
        c = c_in // 2
        y, _ = self.conv(x, c_in, c, 1, 1, hw)
        pools = [y]
        for _ in range(3):
            pools.append(self.node("MaxPool", [pools[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
        out, _ = self.conv(self.node("Concat", pools, axis=1), 4 * c, c_out, 1, 1, hw)
        return out

    def upsample(self, x: str) -> str:
        scales = self.const(np.array([1, 1, 2, 2], np.float32), "scales")
        return self.node("Resize", [x, "", scales], mode="nearest")


@dataclass(frozen=True)
class BuiltModel:
    path: Path
    params: int
    gflops: float  # 2 x multiply-accumulates, as Ultralytics reports it
    input_size: int
    anchors: int


def build_yolov8n(path: Path, imgsz: int = 640, *, seed: int = 0, candidates: int = 20) -> BuiltModel:
    """Write a YOLOv8n-shaped model for square `imgsz` input (a multiple of 32) to `path`.

    The head is calibrated on a random image: box bins and class logits are scaled to unit spread, then the
    class bias is set so that about `candidates` class scores pass 0.5 (a trained model's few positives)."""
    if imgsz % 32:
        raise ValueError(f"imgsz must be a multiple of 32, got {imgsz}")
    g = _Graph(np.random.default_rng(seed))
    w0, w1, w2, w3, w4 = WIDTHS
    nc = len(COCO_NAMES)

    # backbone
    x, hw = g.conv("images", 3, w0, 3, 2, imgsz)  # /2
    x, hw = g.conv(x, w0, w1, 3, 2, hw)  # /4
    x = g.c2f(x, w1, w1, 1, hw, True)
    x, hw = g.conv(x, w1, w2, 3, 2, hw)  # /8
    p3 = g.c2f(x, w2, w2, 2, hw, True)
    hw3 = hw
    x, hw = g.conv(p3, w2, w3, 3, 2, hw)  # /16
    p4 = g.c2f(x, w3, w3, 2, hw, True)
    hw4 = hw
    x, hw = g.conv(p4, w3, w4, 3, 2, hw)  # /32
    x = g.c2f(x, w4, w4, 1, hw, True)
    p5 = g.sppf(x, w4, w4, hw)
    hw5 = hw

    # neck (PAN)
    h4 = g.c2f(g.node("Concat", [g.upsample(p5), p4], axis=1), w4 + w3, w3, 1, hw4, False)
    o3 = g.c2f(g.node("Concat", [g.upsample(h4), p3], axis=1), w3 + w2, w2, 1, hw3, False)
    d, _ = g.conv(o3, w2, w2, 3, 2, hw3)
    o4 = g.c2f(g.node("Concat", [d, h4], axis=1), w2 + w3, w3, 1, hw4, False)
    d, _ = g.conv(o4, w3, w3, 3, 2, hw4)
    o5 = g.c2f(g.node("Concat", [d, p5], axis=1), w3 + w4, w4, 1, hw5, False)

    # decoupled head, per scale: box (4 x REG_MAX distribution bins) and class logits
    c_box = max(16, w2 // 4, REG_MAX * 4)
    c_cls = max(w2, min(nc, 100))
    flat: list[str] = []
    anchor_pts: list[np.ndarray] = []
    strides: list[np.ndarray] = []
    for feat, c_in, size in ((o3, w2, hw3), (o4, w3, hw4), (o5, w4, hw5)):
        b, _ = g.conv(feat, c_in, c_box, 3, 1, size)
        b, _ = g.conv(b, c_box, c_box, 3, 1, size)
        b, _ = g.conv(b, c_box, 4 * REG_MAX, 1, 1, size, act=False, role="box_bins")
        c, _ = g.conv(feat, c_in, c_cls, 3, 1, size)
        c, _ = g.conv(c, c_cls, c_cls, 3, 1, size)
        c, _ = g.conv(c, c_cls, nc, 1, 1, size, act=False, role="class_logits")
        both = g.node("Concat", [b, c], axis=1)  # [B, 64+80, h, w]
        flat.append(g.node("Reshape", [both, g.const(np.array([0, 4 * REG_MAX + nc, -1], np.int64), "shape")]))
        ys, xs = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="ij")
        anchor_pts.append(np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5]))
        strides.append(np.full((1, size * size), imgsz / size, np.float32))
    allx = g.node("Concat", flat, axis=2)  # [B, 144, A]
    box_raw, cls_raw = g.name("split"), g.name("split")
    g.nodes.append(
        helper.make_node(
            "Split", [allx, g.const(np.array([4 * REG_MAX, nc], np.int64), "split")], [box_raw, cls_raw], axis=1
        )
    )
    # DFL: softmax over the 16 bins, expectation -> left, top, right, bottom distances (in strides)
    bins = g.node("Reshape", [box_raw, g.const(np.array([0, 4, REG_MAX, -1], np.int64), "shape")])
    soft = g.node("Softmax", [bins], axis=2)
    weights = g.const(np.arange(REG_MAX, dtype=np.float32).reshape(1, 1, REG_MAX, 1), "dfl")
    dist = g.node("ReduceSum", [g.node("Mul", [soft, weights]), g.const(np.array([2], np.int64), "axes")], keepdims=0)
    lt, rb = g.name("split"), g.name("split")
    g.nodes.append(helper.make_node("Split", [dist, g.const(np.array([2, 2], np.int64), "split")], [lt, rb], axis=1))
    anchors = np.concatenate(anchor_pts, axis=1)[None]  # [1, 2, A]
    stride_row = np.concatenate(strides, axis=1)[None]  # [1, 1, A]
    half = g.const(np.array(0.5, np.float32), "half")
    centre = g.node("Add", [g.const(anchors, "anchors"), g.node("Mul", [g.node("Sub", [rb, lt]), half])])
    size_ = g.node("Add", [lt, rb])
    xywh = g.node("Mul", [g.node("Concat", [centre, size_], axis=1), g.const(stride_row, "strides")])
    scores = g.node("Sigmoid", [cls_raw])
    g.nodes.append(helper.make_node("Concat", [xywh, scores], ["output0"], axis=1))

    n_anchors = int(anchors.shape[2])
    graph = helper.make_graph(
        g.nodes,
        "yolov8n_random",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + nc, n_anchors])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-inference-bench")
    model.ir_version = 8
    meta = {
        "name": "yolov8n-random",
        "version": "bench",
        "description": "YOLOv8n-shaped network with random weights (edge-inference benchmark; detects nothing real)",
        "task": "detect",
        "stride": "32",
        "imgsz": str([imgsz, imgsz]),
        "names": repr(dict(enumerate(COCO_NAMES))),
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    _calibrate_head(model, g.roles, imgsz, seed, candidates)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return BuiltModel(path, g.params, 2 * g.macs / 1e9, imgsz, n_anchors)


def _calibrate_head(
    model: onnx.ModelProto, roles: dict[str, list[tuple[str, str]]], imgsz: int, seed: int, candidates: int
) -> None:
    """Scale the last box and class convs so their outputs have unit spread; bias the class logits negative.

    Random deep nets either fade or explode; rather than tune a gain per depth, the features are left as the
    He init makes them and only the head is normalised, from one ONNX Runtime pass over a smooth random image."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed + 1)
    coarse = rng.random((1, 3, imgsz // 16, imgsz // 16)).astype(np.float32)
    image = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)
    image += rng.standard_normal(image.shape).astype(np.float32) * 0.05
    inits = {t.name: t for t in model.graph.initializer}
    heads = {name for pairs in roles.values() for pair in pairs for name in pair}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.ClearField("output")
    outputs = [n.output[0] for n in probe.graph.node if n.op_type == "Conv" and n.input[1] in heads]
    for name in outputs:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(outputs, session.run(outputs, {"images": image}), strict=True))
    by_weight = {n.input[1]: n.output[0] for n in probe.graph.node if n.op_type == "Conv" and n.input[1] in heads}
    logits: list[np.ndarray] = []
    for role, pairs in roles.items():
        spread = float(np.std(np.concatenate([values[by_weight[w]].ravel() for w, _ in pairs]))) or 1.0
        for w_name, _ in pairs:
            w = numpy_helper.to_array(inits[w_name]) / spread
            inits[w_name].CopyFrom(numpy_helper.from_array(w.astype(np.float32), w_name))
        if role == "class_logits":
            logits = [values[by_weight[w]].ravel() / spread for w, _ in pairs]
    flat = np.concatenate(logits)
    bias = -float(np.quantile(flat, 1.0 - min(1.0, candidates / flat.size)))
    for _, b_name in roles["class_logits"]:
        b = np.full(numpy_helper.to_array(inits[b_name]).shape, bias, np.float32)
        inits[b_name].CopyFrom(numpy_helper.from_array(b, b_name))


if __name__ == "__main__":  # python bench/yolov8n_model.py out.onnx [imgsz]
    import sys

    built = build_yolov8n(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 640)
    print(f"{built.path}: {built.params / 1e6:.2f} M parameters, {built.gflops:.1f} GFLOPs, {built.anchors} anchors")

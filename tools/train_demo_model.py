#!/usr/bin/env python3
"""Train the bundled demo defect detector and export it to ONNX (what `make model` runs).

The project's own small single-stage, anchor-free detector in plain PyTorch (no third-party detection code or
weights), trained from scratch on synthetic frames from ``tools.synthetic`` (scratch, dent, spot).
The exported graph speaks the YOLOv8 detection layout so the module's one decode path serves it and real YOLO
exports alike:

- input ``images``: ``[B, 3, 320, 320]`` float32, RGB, 0..1, letterboxed (keep aspect, pad 114, odd pixel of
  the padding at the bottom/right), with a dynamic batch axis;
- output ``output0``: ``[B, 4 + C, N]``, rows 0..3 = cx, cy, w, h in input pixels, rows 4.. = class scores in
  0..1 (sigmoid inside the graph, no objectness), N = 40*40 + 20*20 = 2000 points (strides 8 and 16);
- metadata ``names`` as a Python dict literal, ``imgsz``, ``stride``, ``task``, ``description``, ``version``,
  ``author``, ``license``, ``end2end``.

Training: centre-sampling assignment (points within 1.5 strides of a box centre, on the level picked by the
box size), BCE class loss, GIoU + L1 box loss, AdamW with a cosine schedule and a weight EMA. The script
then measures precision/recall at IoU 0.5 on frames from a seed never used in training (its own numpy
evaluator, with onnxruntime when importable) and refuses to write the model below --min-score.
"""

from __future__ import annotations

import argparse
import ast
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tools.synthetic

from tools.synthetic import CLASS_NAMES, generate_frame  # noqa: E402

IMGSZ = 320
STRIDES = (8, 16)
PAD_VALUE = 114
MODEL_VERSION = "1.0.0"
TRAIN_SEED = 1  # training frames come from SeedSequence([TRAIN_SEED, index])
EVAL_SEED = 4242  # this script's held-out check; the test suite uses yet another seed
# (width, height, weight): the module mostly sees camera frames; a few odd shapes keep the letterbox honest.
TRAIN_SIZES = (
    (1920, 1080, 4),
    (640, 480, 3),
    (1280, 720, 2),
    (1024, 768, 1),
    (800, 600, 1),
    (1280, 1024, 1),
    (1080, 1080, 1),
)
EVAL_SIZES = ((1920, 1080), (640, 480))

FloatArray = npt.NDArray[np.float32]
UInt8Array = npt.NDArray[np.uint8]


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: scale, then padding on the left and top."""

    gain: float
    pad_left: int
    pad_top: int


def letterbox(image: UInt8Array, size: int = IMGSZ) -> tuple[UInt8Array, Letterbox]:
    """Resize keeping the aspect (INTER_LINEAR), pad with 114 to size x size; the odd pixel goes bottom/right."""
    height, width = image.shape[:2]
    gain = min(size / height, size / width)
    new_w, new_h = round(width * gain), round(height * gain)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return padded, Letterbox(gain=gain, pad_left=left, pad_top=top)


def make_sample(index: int) -> tuple[UInt8Array, npt.NDArray[np.int8], FloatArray]:
    """One training sample: letterboxed BGR image and its per-point targets (see ``assign``)."""
    rng = np.random.default_rng([TRAIN_SEED, index])
    weights = np.array([w for _, _, w in TRAIN_SIZES], dtype=np.float64)
    width, height, _ = TRAIN_SIZES[int(rng.choice(len(TRAIN_SIZES), p=weights / weights.sum()))]
    frame, defects = generate_frame(rng, width, height)
    if rng.random() < 0.5:  # frames arrive as JPEGs: learn their artefacts too
        quality = int(rng.integers(60, 96))
        ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        frame = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if ok else frame
    padded, lb = letterbox(frame)
    boxes = np.array([d.box for d in defects], dtype=np.float32).reshape(-1, 4)
    boxes = boxes * lb.gain + np.array([lb.pad_left, lb.pad_top] * 2, dtype=np.float32)
    classes = np.array([d.class_id for d in defects], dtype=np.int64)
    cls_target, box_target = assign(boxes, classes)
    return padded, cls_target, box_target


def build_dataset(count: int, workers: int) -> tuple[UInt8Array, npt.NDArray[np.int8], FloatArray]:
    started = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            samples = pool.map(make_sample, range(count), chunksize=16)
    else:
        samples = [make_sample(i) for i in range(count)]
    images = np.stack([s[0] for s in samples])
    print(f"generated {count} training frames in {time.perf_counter() - started:.0f}s", flush=True)
    return images, np.stack([s[1] for s in samples]), np.stack([s[2] for s in samples])


def to_input(images_bgr: UInt8Array) -> torch.Tensor:
    """uint8 BGR NHWC -> float32 RGB NCHW in 0..1."""
    tensor = torch.from_numpy(np.ascontiguousarray(images_bgr[..., ::-1])).permute(0, 3, 1, 2)
    return tensor.float().div_(255.0)


# ------------------------------------------------------------------------------------------ model


def conv(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.SiLU(inplace=True),
    )


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels), conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DefectNet(nn.Module):
    """Backbone (strides 2..32), a small top-down neck, one head per output level (strides 8 and 16).

    ``forward`` returns raw per-level maps ``[B, 4 + C, H, W]``: (dx, dy, log w, log h, class logits).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(conv(3, 16, 2), conv(16, 32, 2))  # stride 4
        self.stage8 = nn.Sequential(conv(32, 48, 2), Residual(48))  # stride 8
        self.stage16 = nn.Sequential(conv(48, 80, 2), Residual(80))  # stride 16
        self.stage32 = conv(80, 96, 2)  # stride 32: context for the long scratches
        self.lateral16 = conv(96, 80, kernel=1)
        self.fuse16 = conv(80, 80)
        self.lateral8 = conv(80, 48, kernel=1)
        self.fuse8 = conv(48, 48)
        self.head8 = nn.Sequential(conv(48, 48), nn.Conv2d(48, 4 + num_classes, 1))
        self.head16 = nn.Sequential(conv(80, 64), nn.Conv2d(64, 4 + num_classes, 1))
        prior = -math.log((1 - 0.01) / 0.01)  # start every class score at 0.01
        for head in (self.head8, self.head16):
            last = head[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias[4:], prior)
            nn.init.zeros_(last.bias[:4])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c8 = self.stage8(self.stem(x))
        c16 = self.stage16(c8)
        c32 = self.stage32(c16)
        p16 = self.fuse16(c16 + F.interpolate(self.lateral16(c32), scale_factor=2.0, mode="nearest"))
        p8 = self.fuse8(c8 + F.interpolate(self.lateral8(p16), scale_factor=2.0, mode="nearest"))
        return [self.head8(p8), self.head16(p16)]


def make_points(size: int = IMGSZ) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid cell origins (N, 2) in cells, and each point's stride (N,), level by level."""
    grids, strides = [], []
    for stride in STRIDES:
        cells = size // stride
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        grids.append(torch.stack([xs.flatten(), ys.flatten()], dim=1).float())
        strides.append(torch.full((cells * cells,), float(stride)))
    return torch.cat(grids), torch.cat(strides)


def flatten_levels(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-level maps [B, K, H, W] -> [B, N, K]."""
    return torch.cat([m.flatten(2) for m in maps], dim=2).permute(0, 2, 1)


def decode_boxes(raw: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """(dx, dy, log w, log h) per point -> (cx, cy, w, h) in input pixels."""
    centre = (grid + 0.5 + raw[..., :2]) * stride[:, None]
    size = torch.exp(raw[..., 2:4].clamp(max=6.0)) * stride[:, None]
    return torch.cat([centre, size], dim=-1)


class ExportModel(nn.Module):
    """DefectNet with the decode in the graph: [B, 3, H, W] -> [B, 4 + C, N] (YOLOv8 layout)."""

    def __init__(self, net: DefectNet) -> None:
        super().__init__()
        self.net = net
        grid, stride = make_points()
        self.register_buffer("grid", grid)
        self.register_buffer("stride", stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw = flatten_levels(self.net(images))
        grid: torch.Tensor = self.grid  # type: ignore[assignment]
        stride: torch.Tensor = self.stride  # type: ignore[assignment]
        boxes = decode_boxes(raw, grid, stride)
        scores = torch.sigmoid(raw[..., 4:])
        return torch.cat([boxes, scores], dim=-1).permute(0, 2, 1)


# ------------------------------------------------------------------------------------------ training


def point_layout(size: int = IMGSZ) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Point centres (N, 2) in input pixels, strides (N,), level index (N,), level by level."""
    centres, strides, levels = [], [], []
    for level, stride in enumerate(STRIDES):
        cells = size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        centres.append((np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride)
        strides.append(np.full(cells * cells, stride))
        levels.append(np.full(cells * cells, level))
    return (
        np.concatenate(centres).astype(np.float32),
        np.concatenate(strides).astype(np.float32),
        np.concatenate(levels).astype(np.int64),
    )


def flip_permutation(horizontal: bool, vertical: bool, size: int = IMGSZ) -> npt.NDArray[np.int64]:
    """For each point of a flipped image, the point of the original image at the mirrored place."""
    parts, offset = [], 0
    for stride in STRIDES:
        cells = size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        if horizontal:
            xs = cells - 1 - xs
        if vertical:
            ys = cells - 1 - ys
        parts.append(offset + (ys * cells + xs).ravel())
        offset += cells * cells
    return np.concatenate(parts).astype(np.int64)


def assign(boxes: FloatArray, classes: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """Targets for one image: class id per point (-1 = background) and the box (x1, y1, x2, y2) it regresses.

    Positives are the points within 1.5 strides of a box centre on the level picked by the box size (stride 8
    up to 64 px, stride 16 from 48 px, both in between), plus always the nearest such point; a point wanted
    by two boxes goes to the smaller one.
    """
    centres, strides, levels = point_layout()
    n_points = len(centres)
    cls_target = np.full(n_points, -1, dtype=np.int8)
    box_target = np.zeros((n_points, 4), dtype=np.float32)
    if len(boxes) == 0:
        return cls_target, box_target
    gt_centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
    on_level = np.stack([(side <= 64) if s == 8 else (side > 48) for s in STRIDES], axis=1)
    level_ok = on_level[:, levels]  # (G, N)
    distance = np.abs(centres[None, :, :] - gt_centre[:, None, :])  # (G, N, 2)
    near = (distance <= 1.5 * strides[None, :, None]).all(axis=2) & level_ok
    dist2 = np.where(level_ok, (distance**2).sum(axis=2), np.inf)
    near[np.arange(len(boxes)), dist2.argmin(axis=1)] = True
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cost = np.where(near, area[:, None], np.inf)
    owner = cost.argmin(axis=0)
    positive = np.isfinite(cost.min(axis=0))
    cls_target[positive] = classes[owner[positive]]
    box_target[positive] = boxes[owner[positive]]
    return cls_target, box_target


def giou_loss(pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor) -> torch.Tensor:
    x1 = torch.maximum(pred_xyxy[:, 0], target_xyxy[:, 0])
    y1 = torch.maximum(pred_xyxy[:, 1], target_xyxy[:, 1])
    x2 = torch.minimum(pred_xyxy[:, 2], target_xyxy[:, 2])
    y2 = torch.minimum(pred_xyxy[:, 3], target_xyxy[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_p = (pred_xyxy[:, 2] - pred_xyxy[:, 0]) * (pred_xyxy[:, 3] - pred_xyxy[:, 1])
    area_t = (target_xyxy[:, 2] - target_xyxy[:, 0]) * (target_xyxy[:, 3] - target_xyxy[:, 1])
    union = area_p + area_t - inter + 1e-7
    iou = inter / union
    cx1 = torch.minimum(pred_xyxy[:, 0], target_xyxy[:, 0])
    cy1 = torch.minimum(pred_xyxy[:, 1], target_xyxy[:, 1])
    cx2 = torch.maximum(pred_xyxy[:, 2], target_xyxy[:, 2])
    cy2 = torch.maximum(pred_xyxy[:, 3], target_xyxy[:, 3])
    hull = (cx2 - cx1) * (cy2 - cy1) + 1e-7
    return 1.0 - iou + (hull - union) / hull


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:4] / 2
    return torch.cat([b[..., :2] - half, b[..., :2] + half], dim=-1)


def train(args: argparse.Namespace) -> DefectNet:
    images, cls_np, box_np = build_dataset(args.train_frames, args.workers)
    torch.manual_seed(args.seed)
    generator = np.random.default_rng(args.seed)
    num_classes = len(CLASS_NAMES)
    net = DefectNet(num_classes)
    ema = DefectNet(num_classes)
    ema.load_state_dict(net.state_dict())
    ema.eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    params = sum(p.numel() for p in net.parameters())
    print(f"model: {params} parameters", flush=True)
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    grid, stride = make_points()
    steps = args.steps
    warmup = min(300, steps // 10)
    started = time.perf_counter()
    order = generator.permutation(len(images))
    cursor = 0
    net.train()
    for step in range(steps):
        lr = (
            args.lr * (step + 1) / warmup
            if step < warmup
            else (args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        if cursor + args.batch > len(order):
            order, cursor = generator.permutation(len(images)), 0
        index = order[cursor : cursor + args.batch]
        cursor += args.batch
        horizontal, vertical = bool(generator.random() < 0.5), bool(generator.random() < 0.5)
        perm = flip_permutation(horizontal, vertical)
        flips = [d for d, on in ((3, horizontal), (2, vertical)) if on]
        batch = to_input(images[index])
        if flips:
            batch = batch.flip(flips)
        cls_idx = torch.from_numpy(cls_np[index][:, perm].astype(np.int64))
        box_t = torch.from_numpy(box_np[index][:, perm])
        if horizontal:
            box_t[..., [0, 2]] = IMGSZ - box_t[..., [2, 0]]
        if vertical:
            box_t[..., [1, 3]] = IMGSZ - box_t[..., [3, 1]]
        pos = cls_idx >= 0
        cls_t = torch.zeros(len(index), cls_idx.shape[1], num_classes)
        cls_t[pos] = F.one_hot(cls_idx[pos], num_classes).float()
        # Photometric jitter: exposure and contrast of the whole frame.
        gain = torch.from_numpy(generator.uniform(0.75, 1.25, size=(len(index), 1, 1, 1)).astype(np.float32))
        shift = torch.from_numpy(generator.uniform(-0.08, 0.08, size=(len(index), 1, 1, 1)).astype(np.float32))
        batch = ((batch - 0.5) * gain + 0.5 + shift).clamp_(0.0, 1.0)

        raw = flatten_levels(net(batch))
        num_pos = max(1.0, float(pos.sum()))
        cls_loss = F.binary_cross_entropy_with_logits(raw[..., 4:], cls_t, reduction="sum") / num_pos
        if pos.any():
            pred = decode_boxes(raw, grid, stride)[pos]
            pred_xyxy = xywh_to_xyxy(pred)
            target_xyxy = box_t[pos]
            box_loss = giou_loss(pred_xyxy, target_xyxy).mean()
            point_stride = stride[None, :].expand_as(pos)[pos][:, None]
            l1 = (F.l1_loss(pred_xyxy / point_stride, target_xyxy / point_stride, reduction="none")).sum(1).mean()
        else:
            box_loss = l1 = raw.sum() * 0.0
        loss = cls_loss + 2.5 * box_loss + 0.25 * l1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()
        with torch.no_grad():
            d = 0.995 * (1 - math.exp(-(step + 1) / 150))
            for e, p in zip(ema.state_dict().values(), net.state_dict().values(), strict=True):
                if e.dtype.is_floating_point:
                    e.mul_(d).add_(p.detach(), alpha=1 - d)
                else:
                    e.copy_(p)
        if step % 50 == 0 or step == steps - 1:
            elapsed = time.perf_counter() - started
            print(
                f"step {step:5d}/{steps} loss {loss.item():.3f} (cls {cls_loss.item():.3f} giou {box_loss.item():.3f}"
                f" l1 {l1.item():.3f}) lr {lr:.5f} {elapsed:.0f}s",
                flush=True,
            )
    return ema


# ------------------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class EvalFrame:
    padded: UInt8Array
    letterbox: Letterbox
    width: int
    height: int
    boxes: FloatArray
    classes: npt.NDArray[np.int64]


def eval_frames(count: int, seed: int) -> list[EvalFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        width, height = EVAL_SIZES[i % len(EVAL_SIZES)]
        frame, defects = generate_frame(rng, width, height)
        padded, lb = letterbox(frame)
        boxes = np.array([d.box for d in defects], dtype=np.float32).reshape(-1, 4)
        classes = np.array([d.class_id for d in defects], dtype=np.int64)
        frames.append(EvalFrame(padded, lb, width, height, boxes, classes))
    return frames


def decode_output(
    output: FloatArray, lb: Letterbox, width: int, height: int, conf: float = 0.5, iou: float = 0.45
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """One image's [4 + C, N] output -> boxes (x1, y1, x2, y2 frame pixels), scores, class ids after NMS."""
    preds = output.T
    class_ids = preds[:, 4:].argmax(axis=1)
    scores = preds[np.arange(len(preds)), 4 + class_ids]
    keep = scores > conf
    preds, scores, class_ids = preds[keep], scores[keep], class_ids[keep]
    xyxy = np.concatenate([preds[:, :2] - preds[:, 2:4] / 2, preds[:, :2] + preds[:, 2:4] / 2], axis=1)
    xyxy -= np.array([lb.pad_left, lb.pad_top] * 2, dtype=np.float32)
    xyxy /= lb.gain
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    if len(xyxy) == 0:
        return xyxy, scores, class_ids
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(), conf, iou)
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    return xyxy[kept], scores[kept], class_ids[kept]


def box_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    result: FloatArray = inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)
    return result


def match(
    pred_boxes: FloatArray, scores: FloatArray, pred_classes: npt.NDArray[np.int64], frame: EvalFrame
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) at IoU 0.5, same class, greedy by confidence."""
    used = np.zeros(len(frame.boxes), dtype=bool)
    tp = 0
    ious = box_iou(pred_boxes, frame.boxes) if len(pred_boxes) and len(frame.boxes) else None
    for i in np.argsort(-scores):
        if ious is None:
            break
        candidates = np.where((frame.classes == pred_classes[i]) & ~used, ious[i], 0.0)
        j = int(candidates.argmax())
        if candidates[j] >= 0.5:
            used[j] = True
            tp += 1
    return tp, len(pred_boxes) - tp, len(frame.boxes) - tp


def precision_recall(outputs: Sequence[FloatArray], frames: Sequence[EvalFrame]) -> tuple[float, float, list[str]]:
    tp = fp = fn = 0
    per_class = np.zeros((len(CLASS_NAMES), 3), dtype=np.int64)
    for output, frame in zip(outputs, frames, strict=True):
        boxes, scores, classes = decode_output(output, frame.letterbox, frame.width, frame.height)
        t, f, n = match(boxes, scores, classes, frame)
        tp, fp, fn = tp + t, fp + f, fn + n
        for c in range(len(CLASS_NAMES)):
            sel = classes == c
            gt = frame.classes == c
            sub = EvalFrame(
                frame.padded, frame.letterbox, frame.width, frame.height, frame.boxes[gt], frame.classes[gt]
            )
            per_class[c] += match(boxes[sel], scores[sel], classes[sel], sub)
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    notes = [f"{name}: tp {t} fp {f} fn {n}" for name, (t, f, n) in zip(CLASS_NAMES, per_class.tolist(), strict=True)]
    return precision, recall, notes


def torch_outputs(model: nn.Module, frames: Sequence[EvalFrame]) -> list[FloatArray]:
    outputs: list[FloatArray] = []
    with torch.no_grad():
        for start in range(0, len(frames), 16):
            chunk = np.stack([f.padded for f in frames[start : start + 16]])
            outputs.extend(model(to_input(chunk)).numpy())
    return outputs


# ------------------------------------------------------------------------------------------ export


def export(net: DefectNet, path: Path, name: str) -> None:
    model = ExportModel(net).eval()
    dummy = torch.zeros(1, 3, IMGSZ, IMGSZ)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    metadata = {
        "description": "edge-inference demo defect detector (scratch, dent, spot) trained on synthetic frames",
        "author": "edge-inference",
        "version": MODEL_VERSION,
        "license": "MIT",
        "task": "detect",
        "stride": str(max(STRIDES)),
        "imgsz": str([IMGSZ, IMGSZ]),
        "names": str(dict(enumerate(CLASS_NAMES))),
        "end2end": "False",
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "edge-inference"
    proto.graph.name = name  # ONNX Runtime's graph_name: the module's model name when metadata has none
    proto.doc_string = metadata["description"]
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    assert ast.literal_eval(metadata["names"]) == dict(enumerate(CLASS_NAMES))


def onnx_outputs(path: Path, frames: Sequence[EvalFrame], reference: Sequence[FloatArray]) -> list[FloatArray] | None:
    """Run the exported file with onnxruntime (CPU) at batch 1 and 4; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort  # type: ignore[import-not-found]
    except ImportError:
        print("onnxruntime not importable: skipping the ONNX Runtime check", flush=True)
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert not isinstance(shape[0], int), f"batch axis is not dynamic: {shape}"
    outputs: list[FloatArray] = []
    single = to_input(np.stack([frames[0].padded])).numpy()
    (first,) = session.run(None, {"images": single})
    assert first.shape == (1, 4 + len(CLASS_NAMES), sum((IMGSZ // s) ** 2 for s in STRIDES)), first.shape
    for start in range(0, len(frames), 4):
        chunk = to_input(np.stack([f.padded for f in frames[start : start + 4]])).numpy()
        (out,) = session.run(None, {"images": chunk})
        outputs.extend(out)
    diff = max(float(np.abs(o - r).max()) for o, r in zip(outputs, reference, strict=True))
    print(f"onnxruntime: batch 1 and 4 run; max |onnx - torch| = {diff:.2e}", flush=True)
    assert np.allclose(first[0], outputs[0], atol=1e-3), "batch 1 and batch 4 disagree"
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the ONNX model")
    parser.add_argument("--train-frames", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-frames", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="processes that generate the training frames")
    parser.add_argument("--min-score", type=float, default=0.9, help="refuse to write the model below this P or R")
    parser.add_argument("--checkpoint", type=Path, help="also save the PyTorch weights here")
    parser.add_argument("--weights", type=Path, help="skip training: evaluate and export these saved weights")
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    started = time.perf_counter()
    if args.weights:
        net = DefectNet(len(CLASS_NAMES))
        net.load_state_dict(torch.load(args.weights))
    else:
        net = train(args)
    net.eval()
    print(f"trained in {time.perf_counter() - started:.0f}s", flush=True)
    if args.checkpoint:
        torch.save(net.state_dict(), args.checkpoint)

    frames = eval_frames(args.eval_frames, EVAL_SEED)
    reference = torch_outputs(ExportModel(net).eval(), frames)
    precision, recall, notes = precision_recall(reference, frames)
    print(f"held-out (seed {EVAL_SEED}, {len(frames)} frames) torch: precision {precision:.3f} recall {recall:.3f}")
    for note in notes:
        print(f"  {note}")

    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    export(net, tmp, args.out.stem)
    ort_outputs = onnx_outputs(tmp, frames, reference)
    if ort_outputs is not None:
        precision, recall, _ = precision_recall(ort_outputs, frames)
        print(f"held-out onnxruntime: precision {precision:.3f} recall {recall:.3f}")
    if precision < args.min_score or recall < args.min_score:
        tmp.unlink()
        print(f"refusing to write {args.out}: precision/recall below {args.min_score}", file=sys.stderr)
        return 1
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f}s total")
    return 0


if __name__ == "__main__":
    sys.exit(main())

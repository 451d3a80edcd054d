"""Synthetic industrial frames with defects at known boxes.

The bundled demo model is trained on these frames (``tools/train_demo_model.py``), ``make demo`` drops them
onto the input share (``tools/drop_frames.py``), the tests and benchmarks use them, and
``tools/selftest_frame.py`` made the module's selfTest frame (``models/selftest.jpg``) from one of them.
A frame is a metal or plastic surface (brushed texture, lighting gradient, sensor noise and some clutter that
is not a defect: faint brushing lines, seams, mottling) with 0..N defects of three classes:

- ``scratch``: a thin, long, slightly curved bright or dark stroke at a random angle;
- ``dent``: a shallow elliptical depression, shaded by the light (a bright and a dark crescent, a dark rim);
- ``spot``: a small irregular stain (dark, rust-coloured, or light on dark surfaces).

Defect sizes scale with the frame's longer side, so they stay visible after the frame is letterboxed to the
model's input (1920x1080 -> 320x180). Boxes are tight (x1, y1, x2, y2) in frame pixels. NumPy and OpenCV
only (the module's own pins): a development tool, not shipped in the image. Everything is drawn from the caller's ``numpy.random.Generator``, so a
frame is a pure function of the generator's state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

CLASS_NAMES: tuple[str, ...] = ("scratch", "dent", "spot")

FloatImage = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]

_PLACEMENT_TRIES = 25
_EDGE_MARGIN = 0.02  # defects keep this fraction of the frame's size away from its borders
_MIN_SIDE = 16


@dataclass(frozen=True)
class SyntheticDefect:
    """One defect drawn into a frame: its class and tight box (x1, y1, x2, y2) in frame pixels."""

    class_id: int
    label: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class _Stamp:
    """A defect ready to be blended: its box, and a function that draws it into the albedo canvas."""

    box: Box
    draw: Callable[[FloatImage], None]


def generate_frame(
    rng: np.random.Generator,
    width: int = 1920,
    height: int = 1080,
    max_defects: int = 4,
    min_defects: int = 0,
    defect_scale: int | None = None,
) -> tuple[npt.NDArray[np.uint8], list[SyntheticDefect]]:
    """Return one BGR uint8 frame (height x width x 3) and the defects drawn into it.

    Defects are sized for a frame whose longer side is ``defect_scale`` (default: this frame's): a 4K frame with
    ``defect_scale=320`` carries defects a few pixels wide, as small as they are in a 320-pixel model input.

    The number of defects is drawn uniformly from ``min_defects..max_defects``; a defect that finds no free
    place (defects never overlap) is left out, so a crowded small frame can hold fewer.
    """
    if width < _MIN_SIDE or height < _MIN_SIDE:
        raise ValueError(f"frame must be at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got {width}x{height}")
    if not 0 <= min_defects <= max_defects:
        raise ValueError(f"need 0 <= min_defects <= max_defects, got {min_defects} and {max_defects}")

    albedo, base_luma = _surface(rng, width, height)
    _add_clutter(rng, albedo)

    defects: list[SyntheticDefect] = []
    count = int(rng.integers(min_defects, max_defects + 1))
    for _ in range(count):
        class_id = int(rng.integers(0, len(CLASS_NAMES)))
        scale = defect_scale or max(width, height)
        stamp = _place(rng, class_id, width, height, base_luma, [d.box for d in defects], scale)
        if stamp is None:
            continue
        stamp.draw(albedo)
        defects.append(SyntheticDefect(class_id=class_id, label=CLASS_NAMES[class_id], box=stamp.box))

    albedo *= _lighting(rng, width, height)[:, :, None]
    noise = rng.standard_normal((height, width, 3), dtype=np.float32)
    noise *= np.float32(rng.uniform(1.5, 5.0))
    albedo += noise
    albedo += np.float32(0.5)  # the uint8 cast truncates: this rounds
    np.clip(albedo, 0.0, 255.0, out=albedo)
    image: npt.NDArray[np.uint8] = albedo.astype(np.uint8)
    return image, defects


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """Encode a BGR uint8 image as JPEG bytes."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG")
    return bytes(buffer.tobytes())


# ---------------------------------------------------------------------------------------------- surface


def _surface(rng: np.random.Generator, width: int, height: int) -> tuple[FloatImage, float]:
    """Albedo canvas (float32 BGR, 0..255 scale) of brushed metal or plastic, and its mean luminance."""
    metal = bool(rng.random() < 0.6)
    if metal:
        level = float(rng.uniform(105.0, 195.0))
        tint = rng.uniform(0.95, 1.05, size=3)
        color = level * tint
        texture = _brushed(rng, width, height, amplitude=float(rng.uniform(0.03, 0.07)))
    else:
        palette = np.array(
            [[200, 200, 205], [150, 150, 150], [175, 120, 60], [60, 120, 170], [70, 140, 80], [60, 60, 62]],
            dtype=np.float64,
        )
        color = palette[int(rng.integers(0, len(palette)))] * rng.uniform(0.9, 1.1, size=3)
        texture = _speckle(rng, width, height, amplitude=float(rng.uniform(0.015, 0.035)))
    texture *= _mottling(rng, width, height, amplitude=float(rng.uniform(0.02, 0.06)))
    canvas: FloatImage = texture[:, :, None] * color.astype(np.float32)[None, None, :]
    luma = float(0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2])
    return canvas, luma


def _brushed(rng: np.random.Generator, width: int, height: int, amplitude: float) -> FloatImage:
    """1 + streaks along one axis (brushed metal), from noise blurred with a long box filter."""
    horizontal = bool(rng.random() < 0.7)
    noise = rng.standard_normal((height, width), dtype=np.float32)
    along = width if horizontal else height
    length = max(3, int(along * rng.uniform(0.03, 0.08)))
    kernel = (length, 1) if horizontal else (1, length)
    streaks = cv2.blur(noise, kernel).astype(np.float32, copy=False)
    streaks *= np.float32(amplitude * math.sqrt(length))  # a box blur of unit noise has std 1/sqrt(length)
    streaks += np.float32(1.0)
    return streaks


def _speckle(rng: np.random.Generator, width: int, height: int, amplitude: float) -> FloatImage:
    """1 + fine isotropic grain (moulded plastic)."""
    noise = rng.standard_normal((height, width), dtype=np.float32)
    grain = cv2.GaussianBlur(noise, (0, 0), sigmaX=1.2).astype(np.float32, copy=False)
    grain *= np.float32(amplitude * 3.0)
    grain += np.float32(1.0)
    return grain


def _mottling(rng: np.random.Generator, width: int, height: int, amplitude: float) -> FloatImage:
    """1 + low-frequency blotches (oil film, uneven finish); large and faint, never a defect."""
    coarse = rng.standard_normal((6, 10)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32, copy=False)
    field *= np.float32(amplitude)
    field += np.float32(1.0)
    return field


def _add_clutter(rng: np.random.Generator, albedo: FloatImage) -> None:
    """Faint frame-long lines (brushing marks, seams) that a defect detector must ignore."""
    height, width = albedo.shape[:2]
    scale = max(width, height)
    for _ in range(int(rng.integers(0, 6))):
        horizontal = bool(rng.random() < 0.75)
        thickness = max(1, round(scale * rng.uniform(0.001, 0.004)))
        contrast = float(rng.uniform(-0.07, 0.07))
        # Draw on the transposed view for vertical lines: the line runs across the first axis.
        view = albedo if horizontal else albedo.transpose(1, 0, 2)
        across, along = view.shape[:2]
        start = float(rng.uniform(0, across))
        end = start + float(rng.uniform(-0.05, 0.05)) * across
        low = max(0, int(min(start, end)) - thickness - 2)
        high = min(across, int(max(start, end)) + thickness + 3)
        if high <= low:
            continue
        band = np.zeros((high - low, along), dtype=np.uint8)
        cv2.line(band, (0, round(start) - low), (along - 1, round(end) - low), 255, thickness, cv2.LINE_AA)
        gain = 1.0 + band.astype(np.float32) * np.float32(contrast / 255.0)
        view[low:high] *= gain[:, :, None]


def _lighting(rng: np.random.Generator, width: int, height: int) -> FloatImage:
    """Multiplicative illumination: a linear gradient plus a soft hotspot or vignette."""
    gh, gw = 36, 64
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    xs /= gw - 1
    ys /= gh - 1
    gx, gy = rng.uniform(-0.35, 0.35, size=2)
    light = 1.0 + gx * (xs - 0.5) + gy * (ys - 0.5)
    hx, hy = rng.uniform(0.0, 1.0, size=2)
    spread = float(rng.uniform(0.2, 0.6))
    strength = float(rng.uniform(-0.25, 0.3))
    light += strength * np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / (2.0 * spread**2))
    resized = cv2.resize(light.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    field: FloatImage = np.clip(resized, 0.35, 1.6).astype(np.float32, copy=False)
    return field


# ---------------------------------------------------------------------------------------------- defects


def _place(
    rng: np.random.Generator,
    class_id: int,
    width: int,
    height: int,
    base_luma: float,
    taken: list[Box],
    scale: int,
) -> _Stamp | None:
    """Propose a defect of the class until it fits inside the frame without touching another; None if never."""
    propose = (_scratch, _dent, _spot)[class_id]
    margin_x, margin_y = width * _EDGE_MARGIN, height * _EDGE_MARGIN
    for _ in range(_PLACEMENT_TRIES):
        stamp = propose(rng, width, height, base_luma, scale)
        x1, y1, x2, y2 = stamp.box
        if x1 < margin_x or y1 < margin_y or x2 > width - margin_x or y2 > height - margin_y:
            continue
        if any(_near(stamp.box, other) for other in taken):
            continue
        return stamp
    return None


def _near(a: Box, b: Box) -> bool:
    """Whether two boxes touch once each is grown by a tenth of its size (defects stay apart)."""
    pad_a = 0.1 * max(a[2] - a[0], a[3] - a[1])
    pad_b = 0.1 * max(b[2] - b[0], b[3] - b[1])
    pad = pad_a + pad_b
    return not (a[2] + pad <= b[0] or b[2] + pad <= a[0] or a[3] + pad <= b[1] or b[3] + pad <= a[1])


def _mask_box(mask: FloatImage, left: int, top: int, level: float) -> Box | None:
    """Tight box (frame pixels) of the mask's pixels above level; the mask's corner is at (left, top)."""
    rows = np.flatnonzero((mask > level).any(axis=1))
    cols = np.flatnonzero((mask > level).any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    return (float(left + cols[0]), float(top + rows[0]), float(left + cols[-1] + 1), float(top + rows[-1] + 1))


def _blend_multiply(albedo: FloatImage, left: int, top: int, factor: FloatImage) -> None:
    """albedo[roi] *= factor (a per-pixel gain, H x W), clipped to the frame."""
    h, w = factor.shape
    region = albedo[top : top + h, left : left + w]
    region *= factor[: region.shape[0], : region.shape[1], None]


def _unusable(rng: np.random.Generator) -> _Stamp:
    """A stamp that can never be placed (its box lies outside every frame)."""
    return _Stamp(box=(-1.0, -1.0, -1.0, -1.0), draw=lambda albedo: None)


def _scratch(rng: np.random.Generator, width: int, height: int, base_luma: float, scale: int) -> _Stamp:
    """A thin, long stroke along a gently curved path, brighter (polished) or darker (groove) than the surface."""
    length = scale * float(rng.uniform(0.08, 0.26))
    thickness = scale * float(rng.uniform(0.004, 0.008))
    # Keep the box at least ~3 % of the frame on its short side, so it is a box and not a line.
    min_extent = 0.035 * scale
    low = math.asin(min(1.0, min_extent / length))
    angle = float(rng.uniform(low, math.pi / 2 - low)) if low < math.pi / 4 else math.pi / 4
    angle += float(rng.integers(0, 2)) * math.pi / 2
    cx = float(rng.uniform(0, width))
    cy = float(rng.uniform(0, height))
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    bend = float(rng.uniform(-0.12, 0.12)) * length
    control = (cx - math.sin(angle) * bend, cy + math.cos(angle) * bend)
    t = np.linspace(0.0, 1.0, 32)
    px = (1 - t) ** 2 * (cx - dx) + 2 * (1 - t) * t * control[0] + t**2 * (cx + dx)
    py = (1 - t) ** 2 * (cy - dy) + 2 * (1 - t) * t * control[1] + t**2 * (cy + dy)
    pad = int(thickness) + 3
    left = math.floor(px.min()) - pad
    top = math.floor(py.min()) - pad
    right = math.ceil(px.max()) + pad
    bottom = math.ceil(py.max()) + pad
    if left < 0 or top < 0 or right >= width or bottom >= height:
        return _unusable(rng)
    canvas = np.zeros((bottom - top, right - left), dtype=np.uint8)
    shift = 4
    points = np.stack([(px - left) * (1 << shift), (py - top) * (1 << shift)], axis=1).round().astype(np.int32)
    cv2.polylines(canvas, [points], False, 255, max(1, round(thickness)), cv2.LINE_AA, shift)
    mask = canvas.astype(np.float32) / np.float32(255.0)
    box = _mask_box(mask, left, top, 0.3)
    if box is None:
        return _unusable(rng)
    # Intensity varies along the scratch (uneven depth); bright or dark against the surface.
    wobble = cv2.resize(rng.uniform(0.65, 1.0, size=(3, 3)).astype(np.float32), (mask.shape[1], mask.shape[0]))
    bright = bool(rng.random() < 0.5) if base_luma < 170 else False
    strength = float(rng.uniform(0.45, 0.8)) if bright else -float(rng.uniform(0.4, 0.6))
    factor = 1.0 + mask * wobble * np.float32(strength)

    def draw(albedo: FloatImage) -> None:
        _blend_multiply(albedo, left, top, factor.astype(np.float32))

    return _Stamp(box=box, draw=draw)


def _dent(rng: np.random.Generator, width: int, height: int, base_luma: float, scale: int) -> _Stamp:
    """A shallow elliptical depression: shading from the light's direction plus a darker rim."""
    major = scale * float(rng.uniform(0.022, 0.05))
    minor = major * float(rng.uniform(0.6, 1.0))
    theta = float(rng.uniform(0, math.pi))
    cx = float(rng.uniform(0, width))
    cy = float(rng.uniform(0, height))
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    half_w = math.sqrt((major * cos_t) ** 2 + (minor * sin_t) ** 2)
    half_h = math.sqrt((major * sin_t) ** 2 + (minor * cos_t) ** 2)
    box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    left, top = math.floor(box[0]) - 2, math.floor(box[1]) - 2
    right, bottom = math.ceil(box[2]) + 2, math.ceil(box[3]) + 2
    if left < 0 or top < 0 or right >= width or bottom >= height:
        return _unusable(rng)
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
    xs += np.float32(0.5 - cx)
    ys += np.float32(0.5 - cy)
    u = xs * cos_t + ys * sin_t
    v = -xs * sin_t + ys * cos_t
    r2 = (u / major) ** 2 + (v / minor) ** 2
    inside = (r2 < 1.0).astype(np.float32)
    # Height h = 1 - r^2 (a bowl); its gradient, scaled by the major axis, is about 2 at the rim.
    gx = -2.0 * (u * cos_t / major**2 - v * sin_t / minor**2) * major
    gy = -2.0 * (u * sin_t / major**2 + v * cos_t / minor**2) * major
    phi = float(rng.uniform(0, 2 * math.pi))
    shading = (gx * math.cos(phi) + gy * math.sin(phi)) * float(rng.uniform(0.12, 0.2))
    rim = np.clip((r2 - 0.72) / 0.28, 0.0, 1.0) * float(rng.uniform(0.1, 0.2))
    floor = (1.0 - r2) * float(rng.uniform(0.0, 0.08))
    factor = 1.0 + (shading - rim - floor) * inside
    factor = cv2.GaussianBlur(factor.astype(np.float32), (0, 0), sigmaX=max(0.6, 0.04 * minor))

    def draw(albedo: FloatImage) -> None:
        _blend_multiply(albedo, left, top, factor)

    return _Stamp(box=box, draw=draw)


def _spot(rng: np.random.Generator, width: int, height: int, base_luma: float, scale: int) -> _Stamp:
    """A small irregular stain: dark or rust-coloured on light surfaces, light residue on dark ones."""
    radius = scale * float(rng.uniform(0.01, 0.022))
    cx = float(rng.uniform(0, width))
    cy = float(rng.uniform(0, height))
    vertices = 20
    angles = np.linspace(0.0, 2 * math.pi, vertices, endpoint=False)
    # Smooth radial noise: a few low harmonics with random phases.
    wobble = np.ones(vertices)
    for harmonic in (2, 3, 5):
        wobble += rng.uniform(0.0, 0.12) * np.cos(harmonic * angles + rng.uniform(0, 2 * math.pi))
    stretch = float(rng.uniform(0.7, 1.0))
    turn = float(rng.uniform(0, math.pi))
    ex = radius * wobble * np.cos(angles)
    ey = radius * wobble * np.sin(angles) * stretch
    px = cx + ex * math.cos(turn) - ey * math.sin(turn)
    py = cy + ex * math.sin(turn) + ey * math.cos(turn)
    pad = int(radius * 0.3) + 3
    left, top = math.floor(px.min()) - pad, math.floor(py.min()) - pad
    right, bottom = math.ceil(px.max()) + pad, math.ceil(py.max()) + pad
    if left < 0 or top < 0 or right >= width or bottom >= height:
        return _unusable(rng)
    canvas = np.zeros((bottom - top, right - left), dtype=np.uint8)
    shift = 4
    points = np.stack([(px - left) * (1 << shift), (py - top) * (1 << shift)], axis=1).round().astype(np.int32)
    cv2.fillPoly(canvas, [points], 255, cv2.LINE_AA, shift)
    blurred = cv2.GaussianBlur(canvas.astype(np.float32) / np.float32(255.0), (0, 0), sigmaX=max(0.5, 0.08 * radius))
    mask: FloatImage = blurred.astype(np.float32, copy=False)
    box = _mask_box(mask, left, top, 0.5)
    if box is None:
        return _unusable(rng)
    if base_luma < 90:
        color = np.array([205, 210, 215], dtype=np.float32) * np.float32(rng.uniform(0.85, 1.05))
    elif rng.random() < 0.5:
        color = np.array([35, 45, 60], dtype=np.float32) * np.float32(rng.uniform(0.6, 1.3))
    else:
        color = np.array([40, 85, 150], dtype=np.float32) * np.float32(rng.uniform(0.8, 1.15))
    alpha = mask * np.float32(rng.uniform(0.7, 0.92))

    def draw(albedo: FloatImage) -> None:
        h, w = alpha.shape
        region = albedo[top : top + h, left : left + w]
        a = alpha[: region.shape[0], : region.shape[1], None]
        region *= 1.0 - a
        region += a * color[None, None, :]

    return _Stamp(box=box, draw=draw)

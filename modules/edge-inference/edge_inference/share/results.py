"""Writing per-frame outputs to the output share: results/, annotated/, failed/.

Every file appears atomically (temp name in the same folder, fsync, rename), so readers on the share and a
crash at any moment see either the old file or the complete new one, never half of one. The result file
is the mark of a finished frame. A full share raises `OutputFullError` after removing its temp file.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_inference.entities import Detection, FrameResult
from edge_inference.errors import EdgeInferenceError, OutputFullError
from edge_inference.names import shown
from edge_inference.share.claims import safe_join
from edge_inference.share.tempfiles import discard, temp_path


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        discard(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputFullError(f"output share full while writing {path.name}") from exc
        raise


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()


def write_group_atomic(items: list[tuple[Path, bytes]]) -> None:
    """Write several files atomically with one durable flush: every temp file is written, then one syncfs(2)
    makes them all durable (per-file fsync where syncfs is missing), then each is renamed into place.
    A crash leaves at most temp files (removed at the next start), never a partial result."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(path)
            temps.append((tmp, path))
            with open(tmp, "wb") as fh:
                fh.write(data)
                if _SYNCFS is None or len(items) == 1:
                    fh.flush()
                    os.fsync(fh.fileno())
        if _SYNCFS is not None and len(items) > 1:
            fd = os.open(temps[0][0].parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _SYNCFS(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
        for tmp, path in temps:
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _path in temps:
            discard(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputFullError(f"output share full while writing {len(items)} results") from exc
        raise


_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72)]


def draw_detections(image: np.ndarray, detections: tuple[Detection, ...]) -> np.ndarray:
    canvas = image.copy()
    thickness = max(1, round(sum(canvas.shape[:2]) / 600))
    for det in detections:
        color = _PALETTE[det.class_id % len(_PALETTE)]
        x1, y1, x2, y2 = (round(v) for v in det.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        text = f"{det.label} {det.confidence:.2f}"
        scale = thickness / 3
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(y1 - th - 4, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + 4), color, -1)
        cv2.putText(canvas, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)
    return canvas


class ResultWriter:
    """The output share's layout: results/<rel>.json, annotated/<rel>.jpg, failed/<rel>.error.json."""

    def __init__(self, output_dir: Path, *, fsync: bool = True) -> None:
        self.output_dir = output_dir
        self.fsync = fsync

    def result_path(self, rel_path: str) -> Path:
        return safe_join(self.output_dir / "results", fit_name(rel_path, ".json"))

    def write_result(self, result: FrameResult) -> Path:
        path = self.result_path(result.rel_path)
        body = json.dumps(result.as_dict(), ensure_ascii=False, separators=(",", ":")).encode()
        write_atomic(path, body, fsync=self.fsync)
        return path

    def write_results(self, results: list[FrameResult]) -> None:
        """Several results with one durable flush (the dispatcher's group)."""
        items = [
            (self.result_path(r.rel_path), json.dumps(r.as_dict(), ensure_ascii=False, separators=(",", ":")).encode())
            for r in results
        ]
        if self.fsync:
            write_group_atomic(items)
        else:
            for path, data in items:
                write_atomic(path, data, fsync=False)

    def write_annotated(
        self, rel_path: str, image: np.ndarray, detections: tuple[Detection, ...], original_width: int | None = None
    ) -> Path:
        """The frame with its boxes; an image decoded at reduced size is annotated at that size."""
        path = safe_join(self.output_dir / "annotated", fit_name(_with_jpg(rel_path)))
        factor = image.shape[1] / original_width if original_width else 1.0
        if factor != 1.0:
            detections = tuple(
                Detection(d.label, d.class_id, d.confidence, tuple(v * factor for v in d.box))  # type: ignore[arg-type]
                for d in detections
            )
        ok, buf = cv2.imencode(".jpg", draw_detections(image, detections), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise EdgeInferenceError(f"cannot encode the annotated frame for {rel_path}")
        write_atomic(path, buf.tobytes(), fsync=self.fsync)
        return path

    def write_error(self, rel_path: str, error: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        path = safe_join(self.output_dir / "failed", fit_name(rel_path, ".error.json"))
        body = {"path": shown(rel_path), "error": {k: shown(str(v)) for k, v in error.items()}, **(extra or {})}
        write_atomic(path, json.dumps(body, ensure_ascii=False, indent=1).encode(), fsync=self.fsync)
        return path


def _with_jpg(rel_path: str) -> str:
    root, ext = os.path.splitext(rel_path)
    return rel_path if ext.lower() in (".jpg", ".jpeg") else root + ".jpg"


NAME_MAX = 255  # bytes in one file name on Linux file systems (ext4, xfs, tmpfs; cifs and nfs agree)


def fit_name(rel_path: str, suffix: str = "") -> str:
    """`rel_path + suffix`, unless its last name would pass NAME_MAX bytes (a 251..255-byte frame name gets
    `.json` added): then the name is cut at a character boundary and `~<12 hex of its sha256>` keeps it unique.
    The result body still carries the full path; without this such a frame could never be written."""
    head, _, name = rel_path.rpartition("/")
    full = name + suffix
    if len(os.fsencode(full)) <= NAME_MAX:
        return rel_path + suffix
    tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    room = NAME_MAX - len(os.fsencode(tag + suffix))
    cut = os.fsdecode(os.fsencode(name)[:room])  # a cut multi-byte character stays as its raw bytes
    return f"{head}/{cut}{tag}{suffix}" if head else f"{cut}{tag}{suffix}"

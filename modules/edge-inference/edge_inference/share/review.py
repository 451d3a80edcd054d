"""Review copies for retraining: a chosen frame copied to OUTPUT_DIR/review/<date>/<path>, with a YOLO label file.

    review/classes.txt                       the model's class names, one per line (line n = class id n)
    review/<date>/<folders>/<stem>.<ext>     the original frame, byte for byte
    review/<date>/<folders>/<stem>.txt       one line per detection: `class cx cy w h`, normalised to 0..1
    review/crops/<date>/<id>_<label>/...     with `crops`: each detection cut out (its box plus `padding`)

The label file holds the module's predictions as pre-labels for annotation tools (CVAT, Label Studio, Roboflow
read the YOLO format from an image and the `.txt` of the same stem; output_layout.py keeps stems one-to-one).
A result without detections (nothing found, or a task with no boxes) gets an empty label file, which the YOLO
format reads as "no objects"; fields of a detection other than its class and box are not part of the format
and are ignored. Which frames are copied is decided in pipeline/review.py. Every file is recorded in the output
catalog first (share/catalog.py), so review/ falls under the output retention like the other folders.

review/ is meant to be an Azure Stack Edge cloud share (its files go to Blob storage), where renaming a file once
created is not supported (ASE's documented upload caveats): its files are written under their final names, not
through a temp name and a rename as results/ is.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge_inference.entities import Detection, FrameResult
from edge_inference.share import share_fs
from edge_inference.share.catalog import OutputCatalog, OutputFile
from edge_inference.share.guard import mount_gone, share_mount
from edge_inference.share.output_layout import review_crop_path, review_paths

log = logging.getLogger(__name__)

CLASSES_FILE = "review/classes.txt"
CROP_QUALITY = 90


def yolo_labels(detections: Sequence[Detection], width: int, height: int) -> str:
    """The YOLO label text of these detections in a `width` x `height` frame (boxes in its pixels)."""
    if width <= 0 or height <= 0:
        return ""
    lines = []
    for det in detections:
        x1, y1, x2, y2 = (float(v) for v in det.box)
        x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
        y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{det.class_id} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "".join(line + "\n" for line in lines)


def crop_box(box: Sequence[float], padding: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The pixel rectangle (x1, y1, x2, y2) of a detection with `padding` (a share of its width and height) added
    on every side, clipped to the frame; None when nothing is left."""
    x1, y1, x2, y2 = (float(v) for v in box)
    pad_x, pad_y = (x2 - x1) * padding, (y2 - y1) * padding
    left, top = max(0, int(np.floor(x1 - pad_x))), max(0, int(np.floor(y1 - pad_y)))
    right, bottom = min(width, int(np.ceil(x2 + pad_x))), min(height, int(np.ceil(y2 + pad_y)))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


class ReviewWriter:
    """Writes review copies, their label files and crops to the output share."""

    def __init__(self, output_dir: Path, catalog: OutputCatalog, class_names: Callable[[], Sequence[str]]) -> None:
        self.output_dir = output_dir
        self.catalog = catalog
        self._class_names = class_names  # the serving model's (a model rollout may change them)
        self._classes_written = ""
        self._mount = share_mount(output_dir / "review")  # review/ may be a share of its own (DEPLOY.md 5a)

    def copy(
        self, result: FrameResult, source: tuple[Path, str], day: str, *, crops: bool, padding: float
    ) -> list[str]:
        """Copy the frame at `source` (root, relative path) with its label file (and crops); returns the paths
        written, relative to OUTPUT_DIR. Raises OSError when the share refuses (the frame itself is not affected)."""
        if mount_gone(self._mount):  # its mount point left as a plain folder: files there would be hidden
            raise OSError(errno.ENODEV, "the review share is no longer mounted")
        self._write_classes()
        image, label = review_paths(day, result.rel_path)
        labels = yolo_labels(result.detections, result.width or 0, result.height or 0).encode()
        size = share_fs.lstat(*source).st_size
        frame = f"{day}/{result.rel_path}"
        self.catalog.record([OutputFile(image, frame, size), OutputFile(label, frame, len(labels))])
        share_fs.copy(source[0], source[1], self.output_dir, image, in_place=True)
        share_fs.write_in_place(self.output_dir, label, labels)
        written = [image, label]
        if crops and result.detections:
            written += self._crops(result, image, day, frame, padding)
        return written

    def _crops(self, result: FrameResult, image: str, day: str, frame: str, padding: float) -> list[str]:
        with share_fs.readable_path(self.output_dir, image) as path:  # the copy, reached without following a link
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                data = np.frombuffer(fh.read(), dtype=np.uint8)
        picture = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if picture is None:
            log.warning("review: %s cannot be decoded again for its crops", image)
            return []
        height, width = picture.shape[:2]
        items: list[tuple[str, bytes]] = []
        for i, det in enumerate(result.detections):
            box = crop_box(det.box, padding, width, height)
            if box is None:
                continue
            left, top, right, bottom = box
            ok, buf = cv2.imencode(".jpg", picture[top:bottom, left:right], [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY])
            if ok:
                items.append((review_crop_path(day, det.class_id, det.label, result.rel_path, i), buf.tobytes()))
        self.catalog.record([OutputFile(crop, frame, len(blob)) for crop, blob in items])
        for crop, blob in items:
            share_fs.write_in_place(self.output_dir, crop, blob)
        return [crop for crop, _ in items]

    def _write_classes(self) -> None:
        """review/classes.txt, written before the first copy of this process and again when a model swap changed
        the class names."""
        classes = "".join(f"{name}\n" for name in self._class_names())
        if classes != self._classes_written:
            share_fs.write_in_place(self.output_dir, CLASSES_FILE, classes.encode())
            self._classes_written = classes

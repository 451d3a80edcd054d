"""Writing per-frame outputs to the output share: results/, annotated/ (the drawn frame, and a segmentation
model's masks as a PNG), failed/.

Every file appears atomically (temp name in the same folder, fsync, rename), so readers on the share and a
crash at any moment see either the old file or the complete new one, never half of one. The result file
is the mark of a finished frame. A full share raises `OutputFullError` after removing its temp file. Folders are
walked without following a symlink (`share_fs`): a link planted on the output share never redirects a write.
Each file is recorded in the output catalog (share/catalog.py) before it is written: the output retention removes
only files the module wrote.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_inference.entities import FrameResult
from edge_inference.errors import EdgeInferenceError, OutputFullError
from edge_inference.names import shown
from edge_inference.share import output_layout as layout
from edge_inference.share.catalog import OutputCatalog, OutputFile
from edge_inference.share.output_layout import NAME_MAX, fit_name
from edge_inference.share.share_fs import create_in, split
from edge_inference.share.tempfiles import discard, temp_name
from edge_inference.vision.annotate import draw
from edge_inference.vision.masks import label_map

__all__ = ["NAME_MAX", "OutputFullError", "ResultWriter", "fit_name", "write_atomic", "write_group_atomic"]


def write_atomic(root: Path, rel_path: str, data: bytes, *, fsync: bool = True) -> None:
    """Write `root/rel_path` atomically: a temp file beside it, fsync, rename; its folders are walked (and made)
    without following a symlink, so nothing is ever written outside `root`."""
    write_group_atomic(root, [(rel_path, data)], fsync=fsync)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()


def write_group_atomic(root: Path, items: list[tuple[str, bytes]], *, fsync: bool = True) -> None:
    """Write several files under `root` atomically with one durable flush: every temp file is written, then one
    syncfs(2) makes them all durable (per-file fsync where syncfs is missing), then each is renamed into place.
    A crash leaves at most temp files (removed at the next start), never a partial result."""
    temps: list[tuple[int, str, str, str]] = []  # (folder fd, temp name, name, rel path)
    group_sync = fsync and _SYNCFS is not None and len(items) > 1
    try:
        for rel_path, data in items:
            parts = split(rel_path)
            tmp = temp_name(parts[-1])
            fd, out = create_in(
                root, parts[:-1], tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            )
            temps.append((fd, tmp, parts[-1], rel_path))
            try:
                _write_all(out, data)
                if fsync and not group_sync:
                    os.fsync(out)
            finally:
                os.close(out)
        if group_sync and _SYNCFS is not None and _SYNCFS(temps[0][0]) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        for fd, tmp, name, _rel in temps:
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError as exc:
        for fd, tmp, _name, rel in temps:
            try:
                os.unlink(tmp, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError:
                discard((root / rel).with_name(tmp))
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputFullError(f"output share full while writing {len(items)} files") from exc
        raise
    finally:
        for fd, *_rest in temps:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ResultWriter:
    """The output share's files (their names: `output_layout`): results/, annotated/, failed/*.error.json."""

    def __init__(self, output_dir: Path, *, fsync: bool = True, catalog: OutputCatalog | None = None) -> None:
        self.output_dir = output_dir
        self.fsync = fsync
        self.catalog = catalog

    def _write(self, frame: str, items: list[tuple[str, bytes]]) -> None:
        """Record the files in the catalog (one transaction), then write them with one durable flush."""
        if self.catalog is not None:
            self.catalog.record(OutputFile(rel, frame, len(data)) for rel, data in items)
        write_group_atomic(self.output_dir, items, fsync=self.fsync)

    def result_path(self, rel_path: str) -> Path:
        return self.output_dir / layout.result_path(rel_path)

    def write_result(self, result: FrameResult) -> Path:
        self.write_results([result])
        return self.result_path(result.rel_path)

    def write_results(self, results: list[FrameResult]) -> None:
        """Several results with one durable flush (the dispatcher's group)."""
        items = [
            (
                layout.result_path(r.rel_path),
                json.dumps(r.as_dict(), ensure_ascii=False, separators=(",", ":")).encode(),
            )
            for r in results
        ]
        if self.catalog is not None:
            self.catalog.record(
                OutputFile(rel, r.rel_path, len(data)) for (rel, data), r in zip(items, results, strict=True)
            )
        write_group_atomic(self.output_dir, items, fsync=self.fsync)

    def write_annotated(self, rel_path: str, image: np.ndarray, result: FrameResult) -> Path:
        """The frame with its result drawn on it, at its full size (pipeline/prepare.py never decodes a frame to
        annotate reduced; an image smaller than the result's width is drawn at its own scale) and,
        for a segmentation model, `<path>.mask.png`: its masks at full resolution, pixel = 1 + the detection's
        index in the result (0: none; 16-bit past 255 detections)."""
        rel = layout.annotated_path(rel_path)
        scale = image.shape[1] / result.width if result.width else 1.0
        drawn = draw(image, result.detections, result.classification, scale)
        ok, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise EdgeInferenceError(f"cannot encode the annotated frame for {rel_path}")
        files = [(rel, buf.tobytes())]
        labels = label_map(result.detections, result.width or 0, result.height or 0)
        if labels is not None:
            ok, png = cv2.imencode(".png", labels)
            if not ok:
                raise EdgeInferenceError(f"cannot encode the mask PNG for {rel_path}")
            files.append((layout.annotated_mask_path(rel_path), png.tobytes()))
        self._write(rel_path, files)
        return self.output_dir / rel

    def write_error(self, rel_path: str, error: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        rel = layout.failed_error_path(rel_path)
        body = {"path": shown(rel_path), "error": {k: shown(str(v)) for k, v in error.items()}, **(extra or {})}
        self._write(rel_path, [(rel, json.dumps(body, ensure_ascii=False, indent=1).encode())])
        return self.output_dir / rel

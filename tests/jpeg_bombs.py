"""Hostile images built here, for the decode-limit tests: a progressive JPEG "scan bomb" and deep PNGs."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def progressive_jpeg(width: int = 2000, height: int = 2000) -> bytes:
    """A flat grey progressive JPEG: its refinement scans are a few bytes each, but each one walks every block."""
    image = np.full((height, width, 3), 128, np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return buf.tobytes()


def scan_bomb(extra_scans: int, width: int = 2000, height: int = 2000) -> bytes:
    """`progressive_jpeg` with its last scan repeated `extra_scans` times (libjpeg decodes each one again)."""
    data = progressive_jpeg(width, height)
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    last, end = starts[-1], data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * extra_scans + data[end:]


def deep_png(width: int, height: int, channels: int = 4, bit_depth: int = 16) -> bytes:
    """An all-zero PNG written row by row (small on disk whatever its size: the test of a memory estimate)."""
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    row = b"\x00" + bytes(width * channels * bit_depth // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")

"""Fuzz checks over hostile input, shared by the short runs of `make test` (tests/test_fuzz_input.py) and the long
runs of `make test-faults` (tests/faults/test_fuzz_input.py): file names as bytes, image headers (dimensions, bit
depth, colour type, scans) and, in tests/test_twin.py, twin values. Each check states what must hold for any
input; the two files only choose how many inputs (Hypothesis examples) to try.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
import zlib

from hypothesis import strategies as st

from edge_inference.entities import FrameJob, FrameResult, ModelInfo
from edge_inference.errors import FrameError
from edge_inference.names import shown
from edge_inference.vision.decode import decode_frame
from tests.jpeg_bombs import progressive_jpeg

# A file name as Linux can hold it: any bytes but `/` and NUL, not `.` or `..`.
name_bytes = st.binary(min_size=1, max_size=255).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


def check_file_name(raw: bytes) -> None:
    """A name as the file system gives it (surrogate-escaped by os.fsdecode) gets a deterministic id, shows as valid
    text that goes into JSON and gives the bytes back, and its result serialises."""
    rel = os.fsdecode(raw)
    job = FrameJob(rel, os.path.join("/share", rel), 10, 20, "scan", 0.0)  # type: ignore[arg-type]
    key = raw + b"\0" + b"10\0" + b"20"
    assert job.frame_id == hashlib.sha256(key).hexdigest()[:32] == FrameJob(rel, job.path, 10, 20, "poll", 1.0).frame_id
    text = shown(rel)
    text.encode("utf-8")  # valid text, whatever the bytes
    if b"\\" not in raw:  # share paths never hold a backslash: then the shown form gives the bytes back
        back = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), text.encode("utf-8"))
        assert back == raw
    result = FrameResult(rel, job.frame_id, 1, 1, "", ModelInfo("m", "1", "CPU"), 0.5, 0.45, (), {}, "now")
    body = json.dumps(result.as_dict(), ensure_ascii=False).encode("utf-8")
    assert json.loads(body)["frame"]["path"] == text


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@st.composite
def png_headers(draw: st.DrawFn) -> bytes:
    """A PNG whose IHDR says anything (dimensions up to 2**31, any bit depth and colour type), with a small body."""
    width = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1)))
    height = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1)))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    body = zlib.compress(draw(st.binary(max_size=512)))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, draw(st.sampled_from([0, 1])))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


_BASE_JPEG = progressive_jpeg(64, 48)
_SCANS = [m.start() for m in re.finditer(rb"\xff\xda", _BASE_JPEG)]


@st.composite
def jpeg_headers(draw: st.DrawFn) -> bytes:
    """The small progressive JPEG with its frame header's size changed, scans repeated or dropped, and bytes flipped."""
    data = bytearray(_BASE_JPEG)
    sof = data.index(b"\xff\xc2")
    struct.pack_into(">HH", data, sof + 5, draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    end = data.rindex(b"\xff\xd9")
    scan = bytes(data[_SCANS[-1] : end])
    data[end:end] = scan * draw(st.integers(0, 400))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(len(data) // 2, len(data)))]) if draw(st.booleans()) else bytes(data)


def check_image(data: bytes) -> None:
    """Any bytes under the module's limits: a decoded BGR image of the header's size, or a FrameError with a code
    and a sentence; never another exception, and never a long decode (the limits are checked first)."""
    started = time.monotonic()
    try:
        frame = decode_frame(data, 4_000_000, max_scans=100, max_decode_bytes=64 * 1024 * 1024)
    except FrameError as exc:
        assert exc.code and exc.message
    else:
        assert frame.image.dtype.name == "uint8" and frame.image.ndim == 3 and frame.image.shape[2] == 3
        assert frame.image.shape[:2] == (frame.height, frame.width)
    assert time.monotonic() - started < 10

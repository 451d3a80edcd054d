"""Reading a frame's bytes once and decoding them into a BGR uint8 image, with every bad input named.

Checks happen cheapest first: the file is a regular file, not empty, not over MAX_FILE_MB; the header
(read by Pillow without decoding pixels) is an image of at most MAX_IMAGE_PIXELS, a progressive JPEG has
at most JPEG_MAX_SCANS scans (counted from its markers: a "scan bomb" of thousands of tiny scans decodes
for minutes), and the memory the decode needs (`ImageHeader.decode_bytes`: pixels x channels x bytes per
sample, plus the 8-bit BGR copy) is within MAX_DECODE_MB. A bomb is refused before a byte of it is decoded.
Then OpenCV (libjpeg-turbo) decodes it, applying the EXIF orientation. Grayscale becomes 3-channel, alpha is
dropped, 16-bit is scaled to 8-bit. A JPEG without its end-of-image marker is a truncated upload and is
refused rather than half-decoded. (The decode time budget is decode_guard.py's.)
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from edge_inference.errors import FrameError
from edge_inference.names import shown

Image.MAX_IMAGE_PIXELS = None  # our own limit applies (MAX_IMAGE_PIXELS), with our own error
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "MPO"}


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    orientation: int = 1  # EXIF orientation (5..8 swap width and height on display)
    channels: int = 3  # samples per pixel in the file (1 grey, 2 grey + alpha, 3 colour, 4 with alpha or CMYK)
    sample_bytes: int = 1  # bytes per sample: 1 (8-bit), 2 (16-bit), 4 (32-bit integer or float)
    scans: int = 1  # JPEG scans (a progressive JPEG has several); 1 for the other formats

    @property
    def decode_bytes(self) -> int:
        """The memory a full decode needs: the decoded samples (at least 3 channels, as OpenCV decodes colour),
        plus the 8-bit BGR copy made from a deeper image."""
        pixels = self.width * self.height
        decoded = pixels * max(self.channels, 3) * self.sample_bytes
        return decoded + (pixels * 3 if self.sample_bytes > 1 else 0)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) after the EXIF orientation is applied, as OpenCV decodes it."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


@dataclass(frozen=True)
class DecodedFrame:
    """A decoded BGR uint8 image and the size of the original frame (the image may be reduced)."""

    image: np.ndarray
    width: int
    height: int


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def reduction_factor(width: int, height: int, target_hw: tuple[int, int]) -> int:
    """The largest JPEG DCT scale (8, 4, 2) that keeps the image at least as large as its letterboxed size."""
    return scale_reduction(min(target_hw[0] / height, target_hw[1] / width))


def scale_reduction(scale: float) -> int:
    """The largest JPEG DCT scale (8, 4, 2) that keeps an image resized by `scale` (model pixels per original
    pixel) still shrinking: decoded 1/factor as large, it is still at least as large as the model needs."""
    for factor in (8, 4, 2):
        if factor * scale <= 1.0:
            return factor
    return 1


def read_file(path: Path, max_bytes: int) -> bytes:
    """Read a frame file once, refusing non-regular files, empty files and files over the limit."""
    name = shown(path.name)
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise FrameError(FrameError.READ_FAILED, f"{name}: file disappeared before it was read") from None
    if not stat.S_ISREG(st.st_mode):
        raise FrameError(FrameError.NOT_A_FILE, f"{name}: not a regular file (mode {stat.filemode(st.st_mode)})")
    if st.st_size == 0:
        raise FrameError(FrameError.EMPTY, f"{name}: the file is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise FrameError(
            FrameError.TOO_LARGE,
            f"{name}: {st.st_size} bytes is over the limit of {max_bytes} bytes (MAX_FILE_MB)",
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise FrameError(FrameError.READ_FAILED, f"{name}: cannot open: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FrameError(FrameError.TOO_LARGE, f"{name}: grew over the limit of {max_bytes} bytes while read")
    if not data:
        raise FrameError(FrameError.EMPTY, f"{name}: the file is empty (0 bytes)")
    return data


def read_header(data: bytes) -> ImageHeader:
    """The format and size from the header alone (no pixel is decoded)."""
    if not data:
        raise FrameError(FrameError.EMPTY, "the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = str(img.format), img.size
                orientation = int(img.getexif().get(0x0112, 1) or 1) if fmt in ("JPEG", "MPO", "TIFF", "WEBP") else 1
                channels, sample_bytes = _samples(img, data)
    except UnidentifiedImageError:
        magic = _magic_format(data)
        if magic:
            raise FrameError(FrameError.CORRUPT, f"corrupt {magic} image: the header cannot be read") from None
        raise FrameError(
            FrameError.NOT_AN_IMAGE, "not an image: no known image header (JPEG, PNG, BMP, TIFF, WebP)"
        ) from None
    except Exception as exc:  # Pillow raises many types on broken headers
        raise FrameError(FrameError.CORRUPT, f"corrupt image header: {exc}") from None
    if fmt not in _FORMATS:
        raise FrameError(FrameError.UNSUPPORTED, f"unsupported image format {fmt}")
    scans = jpeg_scan_count(data) if fmt in ("JPEG", "MPO") else 1
    return ImageHeader(fmt, width, height, orientation, channels, sample_bytes, scans)


def check_header(
    data: bytes, max_pixels: int, *, max_scans: int | None = None, max_decode_bytes: int | None = None
) -> ImageHeader:
    """The header, once it passes every limit that can be checked before decoding (else a FrameError)."""
    header = read_header(data)
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise FrameError(
            FrameError.TOO_MANY_PIXELS,
            f"{header.width}x{header.height} = {pixels} pixels is over the limit of {max_pixels} (MAX_IMAGE_PIXELS)",
        )
    if max_scans is not None and header.scans > max_scans:
        raise FrameError(
            FrameError.TOO_MANY_SCANS,
            f"a JPEG of {header.scans} scans is over the limit of {max_scans} (JPEG_MAX_SCANS): refused undecoded",
        )
    if max_decode_bytes is not None and header.decode_bytes > max_decode_bytes:
        raise FrameError(
            FrameError.DECODE_MEMORY,
            f"{header.width}x{header.height}, {header.channels} x {8 * header.sample_bytes}-bit samples needs about "
            f"{_mb(header.decode_bytes)} MB to decode, over the limit of {_mb(max_decode_bytes)} MB (MAX_DECODE_MB)",
        )
    if header.format in ("JPEG", "MPO") and not _jpeg_complete(data):
        raise FrameError(FrameError.CORRUPT, "truncated JPEG: the end-of-image marker is missing")
    return header


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode to a full-size BGR uint8 image (EXIF orientation applied)."""
    return decode_frame(data, max_pixels).image


def decode_frame(
    data: bytes,
    max_pixels: int,
    target_hw: tuple[int, int] | None = None,
    *,
    max_scans: int | None = None,
    max_decode_bytes: int | None = None,
) -> DecodedFrame:
    """Check the header against the limits, then decode (`decode_checked`)."""
    header = check_header(data, max_pixels, max_scans=max_scans, max_decode_bytes=max_decode_bytes)
    if target_hw is None:
        return decode_checked(data, header)
    width, height = header.display_size
    return decode_checked(data, header, min(target_hw[0] / height, target_hw[1] / width))


def decode_checked(data: bytes, header: ImageHeader, scale: float | None = None) -> DecodedFrame:
    """Decode to BGR uint8 (EXIF orientation applied). With `scale` (model pixels per original pixel: reduced
    decoding, JPEG_REDUCED_DECODE), a JPEG much larger than the model input is decoded at 1/2, 1/4 or 1/8 size by
    libjpeg-turbo's DCT scaling: several times faster, and the image stays at least as large as the model input
    needs, so the final resize still only shrinks it - but its pixels are not the full decode's."""
    width, height = header.display_size
    buffer = np.frombuffer(data, dtype=np.uint8)
    factor = 1
    if scale is not None and header.format == "JPEG":
        factor = scale_reduction(scale)
    flags = _REDUCED_FLAGS[factor] if factor > 1 else cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:  # a header the decoder itself refuses (OpenCV raises instead of returning None)
        raise FrameError(FrameError.CORRUPT, f"corrupt {header.format} image: {str(exc).strip()[-200:]}") from None
    if image is None or image.size == 0:
        raise FrameError(FrameError.CORRUPT, f"corrupt {header.format} image: the decoder could not read it")
    if image.dtype == np.uint16:
        np.right_shift(image, 8, out=image)  # in place: no second 16-bit copy, only the 8-bit one below
        image = image.astype(np.uint8)
    elif image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) * (255.0 / (hi - lo or 1.0))).astype(np.uint8)
    return DecodedFrame(np.asarray(image, dtype=np.uint8), width, height)


def _magic_format(data: bytes) -> str | None:
    """The format the first bytes claim, so a broken image is told apart from a non-image."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _mb(nbytes: int) -> str:
    return f"{nbytes / (1024 * 1024):.0f}"


def _samples(img: Image.Image, data: bytes) -> tuple[int, int]:
    """(samples per pixel, bytes per sample) as stored in the file: Pillow's mode hides a 16-bit PNG (it opens
    as 8-bit RGB), so PNG's IHDR and TIFF's BitsPerSample tag are read where they tell more."""
    channels, sample_bytes = len(img.getbands()), 1
    if img.mode in ("I", "F") or img.mode.startswith("I;32"):
        sample_bytes = 4
    elif img.mode.startswith("I;16"):
        sample_bytes = 2
    if img.format == "PNG" and len(data) >= 26 and data[12:16] == b"IHDR":
        bit_depth, colour_type = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type, channels)
        sample_bytes = 2 if bit_depth == 16 else 1
    elif img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})
        bits = tags.get(258)
        depth = max(bits) if isinstance(bits, tuple) and bits else bits
        if isinstance(depth, int) and depth > 8:
            sample_bytes = 2 if depth <= 16 else 4
        spp = tags.get(277)
        if isinstance(spp, int) and spp > 0:
            channels = spp
    return channels, sample_bytes


_SOS = re.compile(b"\xff\xda")


def jpeg_scan_count(data: bytes) -> int:
    """How many scans (SOS segments) a JPEG holds, from its markers alone. The segments before the first scan are
    walked by their lengths (so an EXIF thumbnail inside APP1 is not counted); after it, each SOS marker counts
    (entropy-coded data cannot hold one: a 0xFF byte there is always followed by 0x00 or a restart marker)."""
    pos = 2
    end = len(data) - 4
    while pos < end:
        if data[pos] != 0xFF:
            return 0  # not a marker where one must be: the decoder will say what is wrong
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return 1 + len(_SOS.findall(data, pos + 2))  # the regex engine: 3x faster here than bytes.count
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
    return 0


def _jpeg_complete(data: bytes) -> bool:
    """A JPEG ends with FFD9 (some cameras append padding or a trailer: look near the end)."""
    tail = data[-4096:]
    return b"\xff\xd9" in tail

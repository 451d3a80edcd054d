"""Every bad frame gets a clear, stable error code; odd-but-valid images decode to BGR uint8."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_inference.errors import FrameError
from edge_inference.vision.decode import decode, read_file

pytestmark = pytest.mark.timeout(20)


def jpeg(width: int = 64, height: int = 48) -> bytes:
    image = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def code_of(data: bytes, max_pixels: int = 10**8) -> str:
    with pytest.raises(FrameError) as err:
        decode(data, max_pixels)
    assert err.value.message  # always a sentence, never empty
    return err.value.code


def test_good_jpeg_and_png_decode_to_bgr_uint8() -> None:
    assert decode(jpeg(), 10**8).shape == (48, 64, 3)
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 2] = 200
    out = decode(png(img), 10**8)
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [0, 0, 200]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"this is a text file named .jpg\n", "not_an_image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "corrupt_image"),
    ],
)
def test_bad_bytes(data: bytes, code: str) -> None:
    assert code_of(data) == code


def test_truncated_jpeg_is_refused_not_half_decoded() -> None:
    data = jpeg(640, 480)
    assert code_of(data[: len(data) // 2]) == "corrupt_image"


def test_truncated_png_is_refused() -> None:
    data = png(np.random.default_rng(2).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    assert code_of(data[: len(data) // 2]) == "corrupt_image"


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 20000 x 20000 black PNG compresses to a few hundred KB; its header alone says 400 Mpx
    bomb = Image.new("1", (20000, 20000))
    buf = io.BytesIO()
    bomb.save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 2_000_000
    assert code_of(buf.getvalue(), max_pixels=50_000_000) == "too_many_pixels"


def test_sixteen_bit_grayscale_and_alpha_images() -> None:
    deep = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 30).astype(np.uint16)
    ok, tiff = cv2.imencode(".tiff", deep)
    assert ok
    out = decode(tiff.tobytes(), 10**8)
    assert out.shape == (32, 64, 3) and out.dtype == np.uint8
    assert out[-1, -1, 0] == (int(deep[-1, -1]) >> 8)
    gray = decode(png(np.full((8, 8), 77, np.uint8)), 10**8)
    assert gray.shape == (8, 8, 3) and (gray == 77).all()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1] = 90
    assert decode(png(rgba), 10**8).shape == (8, 8, 3)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode(buf.getvalue(), 10**8).shape == (40, 20, 3)


def test_read_file_refuses_empty_huge_and_special_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(FrameError) as err:
        read_file(empty, 1000)
    assert err.value.code == "empty_file"
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(FrameError) as err:
        read_file(big, 1000)
    assert err.value.code == "file_too_large"
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(FrameError) as err:
        read_file(fifo, 1000)
    assert err.value.code == "not_a_regular_file"
    link = tmp_path / "link.jpg"
    link.symlink_to("/etc/hostname")
    with pytest.raises(FrameError) as err:
        read_file(link, 1000)
    assert err.value.code == "not_a_regular_file"


def test_large_jpegs_decode_reduced_but_report_the_original_size() -> None:
    from edge_inference.vision.decode import decode_frame, reduction_factor

    assert reduction_factor(1920, 1080, (320, 320)) == 4  # 1/6 scale: 1/4 keeps 480x270 >= 320x180
    assert reduction_factor(1920, 1080, (640, 640)) == 2
    assert reduction_factor(640, 480, (640, 640)) == 1
    data = jpeg(1920, 1080)
    frame = decode_frame(data, 10**8, (320, 320))
    assert frame.image.shape == (270, 480, 3) and (frame.width, frame.height) == (1920, 1080)
    assert decode_frame(data, 10**8).image.shape == (1080, 1920, 3)
    png_frame = decode_frame(png(np.zeros((1080, 1920, 3), np.uint8)), 10**8, (320, 320))
    assert png_frame.image.shape == (1080, 1920, 3)  # only JPEG has DCT scaling


def test_reduced_decode_of_a_rotated_jpeg_keeps_the_displayed_size() -> None:
    from edge_inference.vision.decode import decode_frame

    image = Image.new("RGB", (1600, 800), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes())
    frame = decode_frame(buf.getvalue(), 10**8, (100, 100))
    assert (frame.width, frame.height) == (800, 1600)
    assert frame.image.shape[0] > frame.image.shape[1]


def test_reduced_and_full_decode_map_boxes_to_the_same_original_pixels() -> None:
    from edge_inference.vision.decode import decode_frame
    from edge_inference.vision.preprocess import InputTransform, prepare, prepare_frame

    data = jpeg(1920, 1080)
    full_tensor, full_box = prepare(decode(data, 10**8), (320, 320))
    frame = decode_frame(data, 10**8, (320, 320))
    tensor, box = prepare_frame(frame.image, (frame.width, frame.height), InputTransform("letterbox", (320, 320)))
    assert tensor.shape == full_tensor.shape
    model_box = np.array([[100.0, 100.0, 200.0, 150.0]])
    assert np.abs(box.to_original(model_box) - full_box.to_original(model_box)).max() < 1.0


def test_header_tells_scans_samples_and_the_memory_a_decode_needs() -> None:
    from edge_inference.vision.decode import read_header
    from tests.jpeg_bombs import deep_png, progressive_jpeg, scan_bomb

    assert read_header(jpeg(64, 48)).scans == 1
    assert read_header(progressive_jpeg(64, 48)).scans == 10
    assert read_header(scan_bomb(500, 64, 48)).scans == 510
    deep = read_header(deep_png(100, 50, channels=4, bit_depth=16))
    assert (deep.channels, deep.sample_bytes) == (4, 2)
    assert deep.decode_bytes == 100 * 50 * 4 * 2 + 100 * 50 * 3  # 16-bit samples, then the 8-bit BGR copy
    grey = read_header(png(np.zeros((50, 100), np.uint8)))
    assert (grey.channels, grey.sample_bytes, grey.decode_bytes) == (1, 1, 100 * 50 * 3)  # decoded as BGR


def test_limits_are_checked_before_decoding() -> None:
    from edge_inference.vision.decode import decode_frame
    from tests.jpeg_bombs import deep_png, scan_bomb

    with pytest.raises(FrameError) as err:
        decode_frame(scan_bomb(200, 64, 48), 10**8, max_scans=100)
    assert err.value.code == "too_many_scans" and "210 scans" in err.value.message
    with pytest.raises(FrameError) as err:
        decode_frame(deep_png(1000, 1000), 10**8, max_decode_bytes=10 * 1024 * 1024)
    assert err.value.code == "decode_memory_over_limit" and "(MAX_DECODE_MB)" in err.value.message
    assert decode_frame(scan_bomb(20, 64, 48), 10**8, max_scans=100).image.shape == (48, 64, 3)

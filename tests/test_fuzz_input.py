"""The short fuzz runs (`make test`): file names as bytes and image headers; the long ones are in tests/faults/."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz_inputs import check_file_name, check_image, jpeg_headers, name_bytes, png_headers

SHORT = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.timeout(120)
@SHORT
@given(name_bytes)
def test_fuzz_file_names_as_bytes(raw: bytes) -> None:
    check_file_name(raw)


@pytest.mark.timeout(120)
@SHORT
@given(png_headers())
def test_fuzz_png_headers(data: bytes) -> None:
    check_image(data)


@pytest.mark.timeout(120)
@SHORT
@given(jpeg_headers())
def test_fuzz_jpeg_headers_and_scans(data: bytes) -> None:
    check_image(data)

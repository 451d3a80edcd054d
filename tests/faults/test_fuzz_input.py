"""The long fuzz runs (`make test-faults`, marked slow): the checks of tests/fuzz_inputs.py over many more inputs,
each run bounded by its example count and its timeout. The short runs are tests/test_fuzz_input.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz_inputs import check_file_name, check_image, jpeg_headers, name_bytes, png_headers
from tests.test_twin import check_patch, patches

LONG = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@LONG
@given(name_bytes)
def test_fuzz_file_names_as_bytes_long(raw: bytes) -> None:
    check_file_name(raw)


@LONG
@given(png_headers())
def test_fuzz_png_headers_long(data: bytes) -> None:
    check_image(data)


@LONG
@given(jpeg_headers())
def test_fuzz_jpeg_headers_and_scans_long(data: bytes) -> None:
    check_image(data)


@LONG
@given(patches)
def test_fuzz_twin_values_long(patch: dict[str, Any]) -> None:
    check_patch(patch)

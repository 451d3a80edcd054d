"""The heap kept for frames: a frame-sized buffer freed is reused by the next allocation, not faulted in again
(the measured effect on whole frames is in `make bench`: page faults and CPU per frame)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

# Allocate and free a 20 MiB buffer (a 4K frame's decode is 25 MB) five times; count the page faults of the last
# four. glibc's own thresholds give it a fresh mapping each time; kept, the freed memory is reused.
PROBE = """
import resource, sys
import numpy as np
from edge_inference.frame_memory import keep_frame_buffers
took = keep_frame_buffers() if sys.argv[1] == "kept" else None
def frame():
    buffer = np.ones(20 << 20, np.uint8)
    del buffer
frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    frame()
print(took, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


def faults(mode: str) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    ).stdout
    took, per_frame = out.split()
    return took, float(per_frame)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_frame_buffer_is_reused_not_faulted_in_again() -> None:
    took, kept = faults("kept")
    assert took == "True"
    assert kept < 5  # 20 MiB is 5,120 pages (or 10 huge pages): none faulted in again
    _, default = faults("default")
    assert default > kept

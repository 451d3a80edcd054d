"""The process heap kept for frames: a decode buffer freed by one frame is reused by the next, not given back to
the kernel and faulted in again.

Every frame allocates the same large buffers: its file's bytes, the decoded image (6 MB for 1080p, 25 MB for 4K),
the resized image, the input tensor. glibc's malloc puts allocations over its mmap threshold (128 KiB at first,
moved up and down as it goes) in fresh mappings and returns the top of its heaps to the kernel past its trim
threshold, so with several threads at work nearly every such buffer is new memory: the kernel faults in and zeroes
its pages on every frame. Measured on 1080p JPEGs through the module (a tiny model, so that decoding is nearly all
the work): about 2,000 page faults and 18.9 ms of CPU per frame; with the thresholds below, about 100 faults and
10.7 ms (docs/PERFORMANCE.md). `keep_frame_buffers()` fixes the mmap threshold at 32 MiB (the most glibc allows:
a 4K frame's decode stays on the heap) and the trim threshold at 128 MiB (freed frame buffers stay for the next
frame), and is called once at start-up. A C library without `mallopt` (musl, macOS) is left as it is.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024


def keep_frame_buffers() -> bool:
    """Tune malloc so frame-sized buffers are reused; True when the C library took both settings."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: the heap is left as it is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    took = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)
    took = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1) and took
    if not took:
        log.debug("mallopt refused the frame buffer thresholds: the heap is left as it is")
    return took

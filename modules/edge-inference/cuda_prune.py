"""Files of the CUDA wheels that nothing in the amd64.gpu image loads; the Dockerfile removes them in the same
layer as the install (removed in a later layer they would still be in the image).

What ONNX Runtime 1.26's CUDA provider links (readelf: cuBLAS/cuBLASLt, cuRAND, cuFFT, the CUDA runtime,
cuDNN) and what `onnxruntime.preload_dlls()` loads (those plus NVRTC, which cuDNN's runtime-compiled engines
use; cuDNN's sub-libraries are loaded by cuDNN on demand) all stay. Removed: headers and static libraries (for
building, not running), NVRTC's `.alt` builds (nothing links them), cuFFTW (FFTW's API on cuFFT) and NVBLAS (a
BLAS interposer for CPU programs). `tools/gpu_image_size.py` measures what this saves from the wheels.

    python cuda_prune.py [SITE_PACKAGES]   # default: this interpreter's site-packages
"""

from __future__ import annotations

import fnmatch
import shutil
import sys
import sysconfig
from pathlib import Path

PRUNE = (
    "nvidia/*/include/*",
    "nvidia/*/lib/*.a",
    "nvidia/cuda_nvrtc/lib/libnvrtc.alt.so.*",
    "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.alt.so.*",
    "nvidia/cufft/lib/libcufftw.so.*",
    "nvidia/cublas/lib/libnvblas.so.*",
)


def prunable(name: str) -> bool:
    """True for a path (relative to site-packages, '/'-separated) that PRUNE removes."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in PRUNE)


def prune(site_packages: Path) -> int:
    """Remove the prunable files under `site_packages`; returns the bytes freed."""
    freed = 0
    for path in sorted((site_packages / "nvidia").rglob("*")) if (site_packages / "nvidia").is_dir() else []:
        relative = path.relative_to(site_packages).as_posix()
        if path.is_file() and prunable(relative):
            freed += path.stat().st_size
            path.unlink()
    for include in (site_packages / "nvidia").glob("*/include"):
        shutil.rmtree(include, ignore_errors=True)
    return freed


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sysconfig.get_paths()["purelib"])
    print(f"cuda_prune: {prune(target) / 2**20:.1f} MiB removed from {target}")

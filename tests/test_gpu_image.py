"""The GPU image and the GPU deployment: CUDA numbering, REQUIRE_GPU on GPU platforms, the optional TensorRT
layer, and the CUDA prune list that keeps every library ONNX Runtime loads."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import onnxruntime
import pytest

from tools import manifest as mf

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "modules" / "edge-inference"
GPU_DOCKERFILE = MODULE_DIR / "Dockerfile.amd64.gpu"
MODULE = "edge-inference"

_spec = importlib.util.spec_from_file_location("cuda_prune", MODULE_DIR / "cuda_prune.py")
assert _spec is not None and _spec.loader is not None
cuda_prune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cuda_prune)

pytestmark = pytest.mark.timeout(30)


def env_of(manifest: dict[str, Any], target: str) -> dict[str, str]:
    modules = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    return {k: v["value"] for k, v in modules[MODULE]["env"].items()}


@pytest.mark.parametrize("target", ["docker", "ase"])
def test_gpu_platforms_deploy_with_require_gpu_true(target: str) -> None:
    values = mf.read_env_file(mf.ENV_EXAMPLE)
    # given the .env.example values (REQUIRE_GPU left empty)
    assert values["REQUIRE_GPU"] == ""
    # then the GPU image refuses to serve from the CPU, a CPU image keeps the module default (false)
    assert env_of(mf.build_manifest(target, values, platform="amd64.gpu"), target)["REQUIRE_GPU"] == "true"
    for cpu_platform in ("amd64", "arm64v8"):
        assert "REQUIRE_GPU" not in env_of(mf.build_manifest(target, values, platform=cpu_platform), target)
    # and an explicit value in .env wins
    explicit = mf.build_manifest(target, {**values, "REQUIRE_GPU": "false"}, platform="amd64.gpu")
    assert env_of(explicit, target)["REQUIRE_GPU"] == "false"


def _env_lines(dockerfile: Path) -> str:
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    return " ".join(line for line in text.splitlines() if line.strip().startswith("ENV "))


def test_gpu_image_numbers_cuda_devices_in_pci_order_and_prunes_in_the_install_layer() -> None:
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in _env_lines(GPU_DOCKERFILE)
    for other in sorted(MODULE_DIR.glob("Dockerfile.*")):
        if other != GPU_DOCKERFILE:
            assert "CUDA_DEVICE_ORDER" not in _env_lines(other)
    text = GPU_DOCKERFILE.read_text()
    # the prune runs in the same RUN as the CUDA install (a later layer would not shrink the image)
    assert re.search(
        r"RUN pip install --no-cache-dir --require-hashes -r requirements-gpu.lock && python cuda_prune.py", text
    )
    assert "ARG TENSORRT=false" in text and "requirements-trt.txt" in text


def test_the_tensorrt_layer_pins_tensorrt_10_from_nvidias_index() -> None:
    lines = [ln.strip() for ln in (MODULE_DIR / "requirements-trt.txt").read_text().splitlines()]
    pins = [ln for ln in lines if ln and not ln.startswith(("#", "--"))]
    # the TensorRT provider of onnxruntime-gpu 1.26 links libnvinfer.so.10: TensorRT 11 cannot load
    assert pins == ["tensorrt-cu12-libs==10.14.1.48"]
    assert "--extra-index-url https://pypi.nvidia.com" in lines


def test_the_prune_list_keeps_every_library_onnx_runtime_loads() -> None:
    # what preload_dlls() loads (ONNX Runtime's own list) and what the CUDA provider links (readelf, 1.26.0)
    preload = [
        "/".join(parts)
        for parts in onnxruntime._get_nvidia_dll_paths(False)  # type: ignore[attr-defined]
    ]
    linked = [
        "nvidia/cublas/lib/libcublasLt.so.12",
        "nvidia/cublas/lib/libcublas.so.12",
        "nvidia/curand/lib/libcurand.so.10",
        "nvidia/cufft/lib/libcufft.so.11",
        "nvidia/cuda_runtime/lib/libcudart.so.12",
        "nvidia/cudnn/lib/libcudnn.so.9",
        "nvidia/nvjitlink/lib/libnvJitLink.so.12",  # cuFFT's own dependency
        "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9",  # NVRTC's
    ]
    cudnn_parts = [
        f"nvidia/cudnn/lib/libcudnn_{p}.so.9"
        for p in ("adv", "cnn", "engines_precompiled", "engines_runtime_compiled", "graph", "heuristic", "ops")
    ]
    assert len(preload) >= 7
    for kept in preload + linked + cudnn_parts:
        assert not cuda_prune.prunable(kept), kept


def test_prune_removes_headers_static_libraries_and_unused_builds(tmp_path: Path) -> None:
    files = {
        "nvidia/cuda_runtime/include/cuda.h": True,
        "nvidia/cuda_runtime/lib/libcudadevrt.a": True,
        "nvidia/cuda_runtime/lib/libcudart.so.12": False,
        "nvidia/cuda_nvrtc/lib/libnvrtc.alt.so.12": True,
        "nvidia/cuda_nvrtc/lib/libnvrtc.so.12": False,
        "nvidia/cufft/lib/libcufftw.so.11": True,
        "nvidia/cufft/lib/libcufft.so.11": False,
        "nvidia/cudnn/lib/libcudnn_adv.so.9": False,
    }
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * 10)
    freed = cuda_prune.prune(tmp_path)
    assert freed == 10 * sum(files.values())
    assert {n for n in files if (tmp_path / n).exists()} == {n for n, gone in files.items() if not gone}
    assert not (tmp_path / "nvidia" / "cuda_runtime" / "include").exists()

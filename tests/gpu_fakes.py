"""A fake GPU for the one edge that cannot run here: a real ONNX Runtime CPU session that says it runs on CUDA.

`install()` replaces `onnxruntime.InferenceSession` so that a session asked for CUDA first becomes a
`FakeGpuSession` (everything else is the real class), and IO binding's "device" values live in host memory. Its runs are real; from the `fail_after`-th run on each
raises the error a CUDA session raises when the device fails. Used in-process, or in a child
`python -m edge_inference` through `child_command()` (the settings travel as environment variables as usual).
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import onnxruntime as ort

REAL_SESSION = ort.InferenceSession
CUDA_FAILURE = (
    "CUDA failure 700: an illegal memory access was encountered ; GPU=0 ; hostname=edge ; expr=cudaStreamSynchronize"
)


class FakeGpuSession:
    fail_after: ClassVar[int | None] = None  # successful runs before every run fails; None: never
    shapes: ClassVar[list[tuple[int, ...]]] = []  # batch input shapes run, across sessions (tests reset it)

    def __init__(
        self, path: str, sess_options: Any = None, providers: Any = None, provider_options: Any = None, **_: Any
    ) -> None:
        self._real = REAL_SESSION(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self.requested = list(zip(providers or [], provider_options or [], strict=False))
        self.runs = 0

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {name: {k: str(v) for k, v in opts.items()} for name, opts in self.requested}

    def disable_fallback(self) -> None:
        return None

    def run(self, output_names: Any, feed: dict[str, Any], run_options: Any = None) -> Any:
        self.runs += 1
        if self.fail_after is not None and self.runs > self.fail_after:
            raise RuntimeError(CUDA_FAILURE)
        FakeGpuSession.shapes.append(tuple(next(iter(feed.values())).shape))
        return self._real.run(output_names, feed, run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


REAL_ORTVALUE = ort.OrtValue.ortvalue_from_shape_and_type


def ortvalue_on_host(shape: Any, element_type: Any, device_type: str = "cpu", device_id: int = 0) -> Any:
    """IO binding's device input, kept in host memory: the fake GPU's "device" is the CPU."""
    return REAL_ORTVALUE(shape, element_type, "cpu", 0)


def session_factory(*args: Any, **kwargs: Any) -> Any:
    providers = kwargs.get("providers") or []
    if providers and providers[0] == "CUDAExecutionProvider":
        return FakeGpuSession(*args, **kwargs)
    return REAL_SESSION(*args, **kwargs)


def install(fail_after: int | None = None) -> None:
    FakeGpuSession.fail_after = fail_after
    FakeGpuSession.shapes = []
    ort.InferenceSession = session_factory  # type: ignore[misc]
    ort.OrtValue.ortvalue_from_shape_and_type = ortvalue_on_host  # type: ignore[method-assign]


def child_command(fail_after: int | None) -> list[str]:
    """`python -m edge_inference` with the fake GPU installed first (a real process: exit code, stdout)."""
    code = (
        "import sys; from tests import gpu_fakes; "
        f"gpu_fakes.install({fail_after!r}); "
        "from edge_inference.app import main; sys.exit(main())"
    )
    return [sys.executable, "-c", code]

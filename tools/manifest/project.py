"""What the manifest tool knows of this project: where things are, the module's contract, its image platforms.

The module's side of the contract (settings, twin properties, outputs, direct methods) is imported from the
code itself, so the templates and the validation rules can never drift from what the module reads and sends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
MODULE_DIR = ROOT / "modules" / "edge-inference"
MODULE_JSON = MODULE_DIR / "module.json"
SCHEMA_DIR = ROOT / "tools" / "schemas"
CONFIG_DIR = ROOT / "config"
ENV_FILE = ROOT / ".env"
ENV_EXAMPLE = ROOT / ".env.example"

MODULE_NAME = "edge-inference"
# Deployment targets: the template each is expanded from. `debug` is a docker target running the debug image.
TARGETS: dict[str, Path] = {
    "docker": ROOT / "deployment.template.json",
    "ase": ROOT / "deployment.ase.template.json",
    "debug": ROOT / "deployment.debug.template.json",
}
DOCKER_TARGETS = frozenset({"docker", "debug"})
DEFAULT_PLATFORM = "amd64.gpu"
DEBUG_PORT = 5678  # debugpy in the amd64.debug image (Dockerfile.amd64.debug)

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from edge_inference.iot.methods import METHODS  # noqa: E402
from edge_inference.ops.live_settings import TWIN_PROPERTIES  # noqa: E402
from edge_inference.ops.telemetry import OUTPUTS  # noqa: E402
from edge_inference.rollout.spec import MODEL_PROPERTIES  # noqa: E402
from edge_inference.settings import ENV_VARS  # noqa: E402

INPUTS: tuple[str, ...] = ("fileEvents",)  # Azure Stack Edge share file events
SETTING_NAMES = frozenset(v.name for v in ENV_VARS)
# every desired property the module takes: the live settings and the model rollout's `model` and `candidate`
WRITABLE_PROPERTIES: tuple[str, ...] = (*TWIN_PROPERTIES, *MODEL_PROPERTIES)
__all__ = ["ENV_VARS", "INPUTS", "METHODS", "OUTPUTS", "SETTING_NAMES", "TWIN_PROPERTIES", "WRITABLE_PROPERTIES"]


def module_spec() -> dict[str, Any]:
    """module.json's `image` object: repository, tag version and platforms."""
    spec: dict[str, Any] = json.loads(MODULE_JSON.read_text(encoding="utf-8"))["image"]
    return spec


def platforms() -> tuple[str, ...]:
    return tuple(module_spec()["tag"]["platforms"])


def image_platform(image: str) -> str | None:
    """The module.json platform an image tag ends with (`...:0.1.0-amd64.gpu` -> `amd64.gpu`), else None."""
    tag = image.rsplit("/", 1)[-1].rpartition(":")[2]
    matches = [p for p in platforms() if tag.endswith(f"-{p}")]
    return max(matches, key=len) if matches else None


def is_gpu_image(image: str) -> bool:
    """An image built for a GPU: its tag ends with a `.gpu` platform (only those carry the CUDA libraries)."""
    return image.rsplit(":", 1)[-1].endswith(".gpu")


def is_debug_image(image: str) -> bool:
    return image.rsplit(":", 1)[-1].endswith(".debug")

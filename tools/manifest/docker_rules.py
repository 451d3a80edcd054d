"""Rules of the Docker-based targets (`docker`, `debug`): IoT Edge on an Ubuntu host or VM.

The GPU is requested exactly when an image needs one: a GPU image without `HostConfig.DeviceRequests` starts
without CUDA (`docker/gpu-device-request`); one of this module's CPU images with it cannot start at all on a
host without the NVIDIA container toolkit (`docker/cpu-gpu-request`). Every port the module publishes names the
host address it is published on (`docker/host-ip`: without `HostIp` Docker publishes it on every address of the
host, and /predict, the live page and /metrics with it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tools.manifest.problem import AGENT, Problem
from tools.manifest.project import MODULE_NAME, image_platform, is_gpu_image

GPU_REQUEST = {"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}


def _requests_gpu(host: Mapping[str, Any]) -> bool:
    requests = host.get("DeviceRequests") or []
    return any(["gpu"] in (r.get("Capabilities") or []) for r in requests if isinstance(r, dict))


def docker_problems(modules: Mapping[str, Any], options: Mapping[str, dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    for name, module in modules.items():
        host = options.get(name, {}).get("HostConfig") or {}
        for spec, bindings in (host.get("PortBindings") or {}).items():
            for i, binding in enumerate(bindings or [{}]):
                if name == MODULE_NAME and not (binding or {}).get("HostIp"):
                    problems.append(
                        Problem(
                            "docker/host-ip",
                            f"{AGENT}.modules.{name}.settings.createOptions.HostConfig.PortBindings.{spec}[{i}]",
                            'name the host address it is published on: "HostIp": "${PUBLISH_HOST_IP}" (127.0.0.1 in'
                            " .env.example: this host only)",
                        )
                    )
        image = str((module.get("settings") or {}).get("image", ""))
        place = f"{AGENT}.modules.{name}.settings.createOptions.HostConfig.DeviceRequests"
        if is_gpu_image(image) and not _requests_gpu(host):
            problems.append(
                Problem(
                    "docker/gpu-device-request",
                    place,
                    f"a GPU image needs [{json.dumps(GPU_REQUEST)}], or deploy a CPU image",
                )
            )
        elif not is_gpu_image(image) and image_platform(image) and _requests_gpu(host):
            problems.append(
                Problem(
                    "docker/cpu-gpu-request",
                    place,
                    f"a CPU image ({image_platform(image)}) needs no GPU, and the request stops it from starting on a "
                    "host without the NVIDIA container toolkit: drop DeviceRequests (make config does), or deploy "
                    "the amd64.gpu image",
                )
            )
    return problems

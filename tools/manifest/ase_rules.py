"""Rules of the `ase` target: the Kubernetes-based IoT Edge built into Azure Stack Edge Pro GPU.

From Azure Stack Edge's documentation ("Run existing IoT Edge modules ... on Azure Stack Edge Pro GPU"): no
`Binds`, shares as `Mounts` of type `volume` named by share, `bind` mounts only of directories, the GPU as
`k8s-experimental` resources, Kubernetes-valid names, no `:` in env names, `no_proxy` with `localhost` behind a
proxy, ports 35000/35001 left to the IoT Edge proxy, one protocol per port, a `HostPort` on every published
port. The GPU is requested exactly when the module's image is a GPU image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tools.manifest.expand import GPU_RESOURCE
from tools.manifest.problem import AGENT, Problem
from tools.manifest.project import image_platform, is_gpu_image
from tools.manifest.rules import env_value, port_numbers

ASE_RESERVED_PORTS = frozenset({35000, 35001})  # IoT Edge proxy on Azure Stack Edge Kubernetes
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def ase_problems(
    system: Mapping[str, Any], modules: Mapping[str, Any], options: Mapping[str, dict[str, Any]]
) -> list[Problem]:
    problems: list[Problem] = []
    everything = [("systemModules", n, m) for n, m in system.items()] + [("modules", n, m) for n, m in modules.items()]
    for name in modules:
        if not K8S_NAME.match(name) or len(name) > 63:
            problems.append(
                Problem(
                    "ase/module-name",
                    f"{AGENT}.modules.{name}",
                    "module names become Kubernetes names: lowercase letters, digits and '-', at most 63, alphanumeric at both ends",
                )
            )
    for group, name, module in everything:
        env = module.get("env") or {}
        for key in env:
            if ":" in key:
                problems.append(
                    Problem(
                        "ase/env-name",
                        f"{AGENT}.{group}.{name}.env.{key}",
                        "Kubernetes takes no ':' in environment variable names; use '__'",
                    )
                )
        proxied = any(k.lower() in ("https_proxy", "http_proxy") and str(v.get("value", "")) for k, v in env.items())
        no_proxy = next((str(v.get("value", "")) for k, v in env.items() if k.lower() == "no_proxy"), "")
        if proxied and "localhost" not in no_proxy.split(","):
            problems.append(
                Problem(
                    "ase/no-proxy",
                    f"{AGENT}.{group}.{name}.env",
                    "a proxy is set, so no_proxy must include localhost (IoT Edge on Kubernetes talks to itself through it)",
                )
            )
    for group, name, module in everything:
        opts = options.get(name, {})
        host = opts.get("HostConfig") or {}
        place = f"{AGENT}.{group}.{name}.settings.createOptions"
        if "Binds" in host:
            problems.append(
                Problem(
                    "ase/no-binds",
                    f"{place}.HostConfig.Binds",
                    "Binds are not supported on Azure Stack Edge Kubernetes; use Mounts of type volume",
                )
            )
        if "DeviceRequests" in host:
            problems.append(
                Problem(
                    "ase/no-device-requests",
                    f"{place}.HostConfig.DeviceRequests",
                    'Kubernetes ignores DeviceRequests; request the GPU as k8s-experimental resources "nvidia.com/gpu"',
                )
            )
        for i, mount in enumerate(host.get("Mounts") or []):
            mplace = f"{place}.HostConfig.Mounts[{i}]"
            kind = (mount or {}).get("Type")
            source = str((mount or {}).get("Source", ""))
            if kind not in ("volume", "bind"):
                problems.append(
                    Problem("ase/mount-type", mplace, f"Type {kind!r}: use volume (a share) or bind (a host directory)")
                )
            elif kind == "volume" and (not source or "/" in source):
                problems.append(
                    Problem(
                        "ase/volume-source",
                        f"{mplace}.Source",
                        "a volume's Source is the share name on the device, not a path",
                    )
                )
            elif kind == "bind" and "." in source.rstrip("/").rsplit("/", 1)[-1]:
                problems.append(
                    Problem(
                        "ase/bind-directory",
                        f"{mplace}.Source",
                        "bind mounts work only for directories on Kubernetes, not files",
                    )
                )
        protocols: dict[str, set[str]] = {}
        for suffix, spec, host_port in port_numbers(host, opts):
            number, _, proto = spec.partition("/")
            protocols.setdefault(number, set()).add(proto or "tcp")
            for port in (number, host_port):
                if port.isdigit() and int(port) in ASE_RESERVED_PORTS:
                    problems.append(
                        Problem(
                            "ase/reserved-port",
                            f"{place}.{suffix}",
                            "ports 35000 and 35001 are used by the IoT Edge proxy on Azure Stack Edge",
                        )
                    )
            if suffix.startswith("HostConfig.PortBindings") and not host_port:
                problems.append(
                    Problem(
                        "ase/host-port",
                        f"{place}.{suffix}",
                        "give a HostPort: on Kubernetes only ports with a HostPort are reachable from outside the pod",
                    )
                )
        for number, protos in protocols.items():
            if {"tcp", "udp"} <= protos:
                problems.append(
                    Problem(
                        "ase/tcp-udp-same-port",
                        f"{place}.HostConfig.PortBindings",
                        f"port {number} is mapped for both TCP and UDP; Azure Stack Edge cannot map both in one request",
                    )
                )
        for setting in ("HTTP_PORT", "METRICS_PORT"):
            value = env_value(module, setting, "")
            if value.isdigit() and int(value) in ASE_RESERVED_PORTS:
                problems.append(
                    Problem(
                        "ase/reserved-port",
                        f"{AGENT}.{group}.{name}.env.{setting}",
                        "35000 and 35001 are the IoT Edge proxy's",
                    )
                )
    for name, module in modules.items():
        k8s = options.get(name, {}).get("k8s-experimental") or {}
        place = f"{AGENT}.modules.{name}.settings.createOptions.k8s-experimental"
        limits = (k8s.get("resources") or {}).get("limits") or {}
        requests = (k8s.get("resources") or {}).get("requests") or {}
        image = str((module.get("settings") or {}).get("image", ""))
        wants_gpu = bool(str(limits.get(GPU_RESOURCE, "0")).strip("0"))
        if is_gpu_image(image) and not wants_gpu:
            problems.append(
                Problem(
                    "ase/gpu-resource",
                    f"{place}.resources.limits",
                    f'a GPU image must request "{GPU_RESOURCE}" in limits (1), or deploy a CPU image',
                )
            )
        elif not is_gpu_image(image) and image_platform(image) and (wants_gpu or GPU_RESOURCE in requests):
            problems.append(
                Problem(
                    "ase/cpu-gpu-resource",
                    f"{place}.resources",
                    f'a CPU image ({image_platform(image)}) cannot use a GPU: drop "{GPU_RESOURCE}" from limits and '
                    "requests (make config does) so the pod is not held for a GPU, or deploy the amd64.gpu image",
                )
            )
        if not limits.get("cpu") or not limits.get("memory"):
            problems.append(
                Problem(
                    "ase/resource-limits",
                    f"{place}.resources.limits",
                    "set cpu and memory limits (the device is shared)",
                )
            )
        if (k8s.get("strategy") or {}).get("type") != "Recreate":
            problems.append(
                Problem(
                    "ase/strategy-recreate",
                    f"{place}.strategy",
                    'use {"type": "Recreate"}: a rolling update cannot move a GPU or a persistent volume to the new pod',
                )
            )
    return problems

"""`config`: expand a deployment template with `.env` values into a manifest IoT Edge accepts as it is.

Placeholders are `${NAME}`, taken from `.env` (falling back to `.env.example`). `${MODULES.edge-inference}` is
the module image `<repository>:<version>-<platform>` from module.json (`${MODULES.edge-inference.<platform>}`
names one platform). An `env` entry whose value expands to "" is left out (the module's default applies);
anywhere else an empty or unknown placeholder is an error, so nothing half-expanded is ever written.

The GPU is requested only for a GPU image: the templates carry the request (`HostConfig.DeviceRequests` on
Docker, `nvidia.com/gpu` in `k8s-experimental` resources on Kubernetes) for the default `amd64.gpu` image, and
`config` removes it when the module's image is a CPU one (`amd64`, `amd64.debug`, `arm64v8`), so that a CPU
deployment starts on a host without the NVIDIA container toolkit. For a GPU image `REQUIRE_GPU` is `true` unless
.env sets it (GPU_IMAGE_DEFAULTS): a container given no GPU then exits with the reason instead of serving from
the CPU.

createOptions objects are serialised and split into `createOptions`, `createOptions01`, ... chunks of 512
characters the way the IoT Edge tools do (a twin string value is at most 512 bytes, at most 8 chunks).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tools.manifest.problem import AGENT, ManifestError, Problem
from tools.manifest.project import DEFAULT_PLATFORM, MODULE_NAME, TARGETS, is_gpu_image, module_spec

CHUNK_SIZE = 512  # the IoT Edge tools' limit for one twin string value
MAX_CHUNKS = 8  # createOptions + createOptions01..07: 4 KB in all
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
GPU_RESOURCE = "nvidia.com/gpu"


def module_image(values: Mapping[str, str], platform: str) -> str:
    """`<repository>:<version>-<platform>` from module.json; IMAGE_VERSION in .env overrides the version."""
    spec = module_spec()
    names = spec["tag"]["platforms"]
    if platform not in names:
        raise ManifestError(
            [
                Problem(
                    "config/platform",
                    "module.json.image.tag.platforms",
                    f"no platform {platform!r}; have {', '.join(names)}",
                )
            ]
        )
    repository = _expand_text(spec["repository"], values, "module.json.image.repository", [])
    version = values.get("IMAGE_VERSION") or spec["tag"]["version"]
    return f"{repository}:{version}-{platform}"


def _expand_text(text: str, values: Mapping[str, str], place: str, problems: list[Problem]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            problems.append(
                Problem("template/unexpanded", place, f"placeholder ${{{name}}} has no value in .env or .env.example")
            )
            return match.group(0)
        return values[name]

    return PLACEHOLDER.sub(replace, text)


def expand(node: Any, values: Mapping[str, str], place: str, problems: list[Problem], *, in_env: bool = False) -> Any:
    """A copy of `node` with every `${NAME}` replaced, in keys and strings; problems are appended."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, child in node.items():
            new_key = _expand_text(key, values, f"{place}.{key}", problems)
            child_place = f"{place}.{new_key}"
            if in_env and isinstance(child, dict) and isinstance(child.get("value"), str):
                value = _expand_text(child["value"], values, child_place, problems)
                if value != "":  # empty: leave the variable out, the module's default applies
                    out[new_key] = {**child, "value": value}
                continue
            out[new_key] = expand(child, values, child_place, problems, in_env=(key == "env"))
        return out
    if isinstance(node, list):
        return [expand(item, values, f"{place}[{i}]", problems) for i, item in enumerate(node)]
    if isinstance(node, str):
        expanded = _expand_text(node, values, place, problems)
        if expanded == "" and PLACEHOLDER.search(node):
            names = ", ".join(PLACEHOLDER.findall(node))
            problems.append(Problem("template/empty-value", place, f"{names} is empty in .env; it is needed here"))
        return expanded
    return node


def split_create_options(settings: dict[str, Any], place: str) -> dict[str, Any]:
    """Serialise an object createOptions and split it into 512-character chunks (createOptions, 01, ...)."""
    options = settings.get("createOptions")
    if not isinstance(options, dict):
        return settings
    text = json.dumps(options, separators=(",", ":"))
    chunks = [text[i : i + CHUNK_SIZE] for i in range(0, len(text), CHUNK_SIZE)] or ["{}"]
    if len(chunks) > MAX_CHUNKS:
        limit = f"IoT Edge takes at most {CHUNK_SIZE * MAX_CHUNKS} ({MAX_CHUNKS} chunks of {CHUNK_SIZE})"
        raise ManifestError(
            [Problem("createoptions/size", f"{place}.createOptions", f"{len(text)} characters; {limit}")]
        )
    out = {k: v for k, v in settings.items() if k != "createOptions"}
    for i, chunk in enumerate(chunks):
        out["createOptions" if i == 0 else f"createOptions{i:02d}"] = chunk
    return out


def drop_gpu_request(options: dict[str, Any]) -> bool:
    """Remove the GPU request from one module's createOptions object; True when there was one."""
    dropped = False
    host = options.get("HostConfig")
    if isinstance(host, dict) and "DeviceRequests" in host:
        del host["DeviceRequests"]
        dropped = True
    resources = (options.get("k8s-experimental") or {}).get("resources") or {}
    for kind in ("limits", "requests"):
        amounts = resources.get(kind)
        if isinstance(amounts, dict) and GPU_RESOURCE in amounts:
            del amounts[GPU_RESOURCE]
            dropped = True
            if not amounts:
                del resources[kind]
    return dropped


# A GPU image must not serve from the CPU without anyone noticing (a pod whose GPU request was ignored, a driver
# missing): for a GPU image `config` sets these module settings unless .env gives them a value.
GPU_IMAGE_DEFAULTS = {"REQUIRE_GPU": "true"}


def gpu_defaults(values: Mapping[str, str]) -> dict[str, str]:
    """The GPU image's defaults for the settings that .env leaves empty."""
    return {k: v for k, v in GPU_IMAGE_DEFAULTS.items() if not values.get(k)}


def build_manifest(target: str, values: Mapping[str, str], platform: str = DEFAULT_PLATFORM) -> dict[str, Any]:
    """The expanded, serialised manifest of one target; raises ManifestError listing every problem."""
    template = json.loads(TARGETS[target].read_text(encoding="utf-8"))
    images = {f"MODULES.{MODULE_NAME}": module_image(values, platform)}
    for name in module_spec()["tag"]["platforms"]:
        images[f"MODULES.{MODULE_NAME}.{name}"] = module_image(values, name)
    problems: list[Problem] = []
    if is_gpu_image(images[f"MODULES.{MODULE_NAME}"]):
        values = {**values, **gpu_defaults(values)}
    manifest = expand(template, {**values, **images}, "", problems)
    if problems:
        raise ManifestError([Problem(p.rule, p.place.lstrip("."), p.message) for p in problems])
    manifest.pop("$schema-template", None)  # a template-only key (iotedgedev drops it too)
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    ours = desired.get("modules", {}).get(MODULE_NAME)
    settings = ours.get("settings", {}) if isinstance(ours, dict) else {}
    if isinstance(settings.get("createOptions"), dict) and not is_gpu_image(str(settings.get("image", ""))):
        drop_gpu_request(settings["createOptions"])
    for group in ("systemModules", "modules"):
        for name, module in desired.get(group, {}).items():
            if isinstance(module.get("settings"), dict):
                module["settings"] = split_create_options(module["settings"], f"{AGENT}.{group}.{name}.settings")
    return manifest  # type: ignore[no-any-return]


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Written atomically, readable by the owner only (it holds the registry password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)

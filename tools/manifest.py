"""Deployment manifests: expand the templates into config/ (`config`), check them (`validate`), and keep
`.env.example` in step with the module's settings (`env-example`).

    python tools/manifest.py config [--platform amd64.gpu] [--env .env] [--out config]
    python tools/manifest.py validate [config/deployment.docker.json ...]
    python tools/manifest.py env-example [--check]

`config` expands `deployment.template.json` (target `docker`) and `deployment.ase.template.json` (target
`ase`) into `config/deployment.<target>.json`. Placeholders are `${NAME}`, taken from `.env`; a name missing
there falls back to `.env.example` with a warning. `${MODULES.edge-inference}` is the module image
`<repository>:<version>-<platform>` from module.json (`${MODULES.edge-inference.<platform>}` names one).
An `env` entry whose value expands to "" is left out (the module's default applies); anywhere else an empty
or unknown placeholder is an error, so nothing half-expanded is ever written. createOptions objects are
serialised and split into `createOptions`, `createOptions01`, ... chunks of 512 characters the way the IoT
Edge tools do (a twin string value is at most 512 bytes, at most 8 chunks).

`validate` checks each manifest against the SchemaStore deployment schemas vendored in tools/schemas/ and
against the rules of its target; every problem is printed as `<rule>: <JSON place>: <what and why>` and
the exit status is 1 if there is any. The registry password is written into config/ (git-ignored, mode
0600) and never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "modules" / "edge-inference"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MODULE_NAME = "edge-inference"
TARGETS: dict[str, Path] = {
    "docker": ROOT / "deployment.template.json",
    "ase": ROOT / "deployment.ase.template.json",
}
DEFAULT_PLATFORM = "amd64.gpu"
ENV_FILE = ROOT / ".env"
ENV_EXAMPLE = ROOT / ".env.example"
CONFIG_DIR = ROOT / "config"

CHUNK_SIZE = 512  # the IoT Edge tools' limit for one twin string value
MAX_CHUNKS = 8  # createOptions + createOptions01..07: 4 KB in all
SECRET_NAMES = frozenset({"CONTAINER_REGISTRY_PASSWORD"})
# Variables for the runtime itself (proxy), allowed beside the module's own settings.
PROXY_ENV = frozenset({"https_proxy", "http_proxy", "no_proxy", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"})
ASE_RESERVED_PORTS = frozenset({35000, 35001})  # IoT Edge proxy on Azure Stack Edge Kubernetes
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
AGENT = "modulesContent.$edgeAgent.properties.desired"
HUB = "modulesContent.$edgeHub.properties.desired"

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from edge_inference.live_settings import TWIN_PROPERTIES  # noqa: E402
from edge_inference.settings import ENV_VARS  # noqa: E402

try:  # the outputs the code sends; one place names them
    from edge_inference.telemetry import OUTPUTS as _CODE_OUTPUTS

    OUTPUTS: tuple[str, ...] = tuple(_CODE_OUTPUTS)
except ImportError:  # pragma: no cover - only while the telemetry module is being written
    OUTPUTS = ("detections", "alerts")
INPUTS: tuple[str, ...] = ("fileEvents",)  # Azure Stack Edge share file events
SETTING_NAMES = frozenset(v.name for v in ENV_VARS)


class ManifestError(Exception):
    """`config` could not produce a manifest; `problems` says why, one line each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Problem:
    """One broken rule: its id (`ase/no-binds`), the JSON place, and what to do."""

    rule: str
    place: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.place}: {self.message}"


# --------------------------------------------------------------------------------------------- .env files


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments and blank lines skipped; one pair of surrounding quotes removed."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_values(env_path: Path = ENV_FILE, example_path: Path = ENV_EXAMPLE) -> tuple[dict[str, str], list[str]]:
    """The .env values over the .env.example ones; also the names that came from the example."""
    example = read_env_file(example_path) if example_path.exists() else {}
    actual = read_env_file(env_path) if env_path.exists() else {}
    fallbacks = sorted(k for k in example if k not in actual)
    return {**example, **actual}, fallbacks


# --------------------------------------------------------------------------------------------- config


def module_image(values: Mapping[str, str], platform: str, module_json: Path | None = None) -> str:
    """`<repository>:<version>-<platform>` from module.json; IMAGE_VERSION in .env overrides the version."""
    spec = json.loads((module_json or MODULE_DIR / "module.json").read_text(encoding="utf-8"))["image"]
    platforms = spec["tag"]["platforms"]
    if platform not in platforms:
        raise ManifestError(
            [
                Problem(
                    "config/platform",
                    "module.json.image.tag.platforms",
                    f"no platform {platform!r}; have {', '.join(platforms)}",
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
        raise ManifestError(
            [
                Problem(
                    "createoptions/size",
                    f"{place}.createOptions",
                    f"{len(text)} characters; IoT Edge takes at most {CHUNK_SIZE * MAX_CHUNKS} ({MAX_CHUNKS} chunks of {CHUNK_SIZE})",
                )
            ]
        )
    out = {k: v for k, v in settings.items() if k != "createOptions"}
    for i, chunk in enumerate(chunks):
        out["createOptions" if i == 0 else f"createOptions{i:02d}"] = chunk
    return out


def build_manifest(target: str, values: Mapping[str, str], platform: str = DEFAULT_PLATFORM) -> dict[str, Any]:
    """The expanded, serialised manifest of one target; raises ManifestError listing every problem."""
    template = json.loads(TARGETS[target].read_text(encoding="utf-8"))
    images = {f"MODULES.{MODULE_NAME}": module_image(values, platform)}
    module_spec = json.loads((MODULE_DIR / "module.json").read_text(encoding="utf-8"))
    for name in module_spec["image"]["tag"]["platforms"]:
        images[f"MODULES.{MODULE_NAME}.{name}"] = module_image(values, name)
    problems: list[Problem] = []
    values = {**values, **platform_defaults(platform, values)} if is_gpu_platform(platform) else values
    manifest = expand(template, {**values, **images}, "", problems)
    if problems:
        raise ManifestError([Problem(p.rule, p.place.lstrip("."), p.message) for p in problems])
    manifest.pop("$schema-template", None)  # a template-only key (iotedgedev drops it too)
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    for group in ("systemModules", "modules"):
        for name, module in desired.get(group, {}).items():
            if isinstance(module.get("settings"), dict):
                module["settings"] = split_create_options(module["settings"], f"{AGENT}.{group}.{name}.settings")
    return manifest  # type: ignore[no-any-return]


# A GPU image must not serve from the CPU without anyone noticing (a pod whose GPU request was ignored): on a
# GPU platform the deployment sets these unless .env gives a value.
GPU_PLATFORM_DEFAULTS = {"REQUIRE_GPU": "true"}


def is_gpu_platform(platform_or_image: str) -> bool:
    return platform_or_image.endswith(".gpu")


def platform_defaults(platform: str, values: Mapping[str, str]) -> dict[str, str]:
    """The GPU platform's defaults for the settings that .env leaves empty."""
    return {k: v for k, v in GPU_PLATFORM_DEFAULTS.items() if not values.get(k)}


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Written atomically, readable by the owner only (it holds the registry password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- validate


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _json_place(prefix: str, path: Iterator[Any] | Any) -> str:
    parts = [prefix] if prefix else []
    for item in path:
        if isinstance(item, int) and parts:
            parts[-1] = f"{parts[-1]}[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts) or "(document)"


def schema_problems(manifest: Any) -> list[Problem]:
    """The manifest against the 2.0 deployment schema, and $edgeAgent / $edgeHub against their 1.1 schemas."""
    from jsonschema import Draft4Validator

    problems: list[Problem] = []
    whole = Draft4Validator(_schema("azure-iot-edge-deployment-2.0.json"))
    for error in sorted(whole.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
        problems.append(Problem("schema/deployment-2.0", _json_place("", error.absolute_path), error.message))
    content = manifest.get("modulesContent", {}) if isinstance(manifest, dict) else {}
    for key, schema_file, rule in (
        ("$edgeAgent", "azure-iot-edgeagent-deployment-1.1.json", "schema/edgeagent-1.1"),
        ("$edgeHub", "azure-iot-edgehub-deployment-1.1.json", "schema/edgehub-1.1"),
    ):
        if key not in content:
            continue
        validator = Draft4Validator(_schema(schema_file))
        for error in sorted(validator.iter_errors({key: content[key]}), key=lambda e: list(e.absolute_path)):
            problems.append(Problem(rule, _json_place("modulesContent", error.absolute_path), error.message))
    return problems


def _strings(node: Any, place: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, child in node.items():
            yield f"{place}.{key}", str(key)
            yield from _strings(child, f"{place}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _strings(child, f"{place}[{i}]")
    elif isinstance(node, str):
        yield place, node


def create_options(settings: Mapping[str, Any], place: str, problems: list[Problem]) -> dict[str, Any]:
    """The createOptions of one module, joined from its chunks; size, split and JSON problems appended."""
    chunks = {k: v for k, v in settings.items() if re.fullmatch(r"(createOptions|createoptions)[0-9]*", k)}
    if not chunks:
        return {}
    if any(not isinstance(v, str) for v in chunks.values()):
        problems.append(
            Problem(
                "createoptions/json", f"{place}.createOptions", "must be a JSON string (run tools/manifest.py config)"
            )
        )
        return {}
    expected = ["createOptions"] + [f"createOptions{i:02d}" for i in range(1, len(chunks))]
    if sorted(chunks) != sorted(expected):
        problems.append(
            Problem(
                "createoptions/split",
                f"{place}.createOptions",
                f"chunks must be named {', '.join(expected)} in order; found {', '.join(sorted(chunks))}",
            )
        )
        return {}
    if len(chunks) > MAX_CHUNKS:
        problems.append(
            Problem("createoptions/size", f"{place}.createOptions", f"{len(chunks)} chunks; at most {MAX_CHUNKS}")
        )
    for name in expected:
        if len(chunks[name]) > CHUNK_SIZE:
            problems.append(
                Problem(
                    "createoptions/size",
                    f"{place}.{name}",
                    f"{len(chunks[name])} characters; split createOptions into {CHUNK_SIZE}-character chunks (createOptions01..)",
                )
            )
    try:
        parsed = json.loads("".join(chunks[name] for name in expected))
    except json.JSONDecodeError as e:
        problems.append(Problem("createoptions/json", f"{place}.createOptions", f"not valid JSON: {e}"))
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _port_numbers(host_config: Mapping[str, Any], options: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(place suffix, container port spec, host port or '') for every port named in createOptions."""
    for spec in options.get("ExposedPorts") or {}:
        yield f"ExposedPorts.{spec}", spec, ""
    for spec, bindings in (host_config.get("PortBindings") or {}).items():
        for i, binding in enumerate(bindings or [{}]):
            yield f"HostConfig.PortBindings.{spec}[{i}]", spec, str((binding or {}).get("HostPort", ""))


def validate_manifest(manifest: Any, target: str) -> list[Problem]:
    """Every problem of one manifest: schemas, placeholders, createOptions, routes, module contract, target rules."""
    problems = schema_problems(manifest)
    for place, text in _strings(manifest, "") if isinstance(manifest, dict) else ():
        for name in PLACEHOLDER.findall(text):
            problems.append(
                Problem("template/unexpanded", place.lstrip("."), f"placeholder ${{{name}}} left unexpanded")
            )
    content = manifest.get("modulesContent", {}) if isinstance(manifest, dict) else {}
    desired = content.get("$edgeAgent", {}).get("properties.desired", {})
    modules: dict[str, Any] = desired.get("modules", {}) or {}
    system: dict[str, Any] = desired.get("systemModules", {}) or {}
    options: dict[str, dict[str, Any]] = {}
    for group, members in (("systemModules", system), ("modules", modules)):
        for name, module in members.items():
            place = f"{AGENT}.{group}.{name}.settings"
            options[name] = create_options(module.get("settings", {}) or {}, place, problems)
    problems += _module_problems(content, modules, options)
    problems += _route_problems(content, modules)
    if target == "docker":
        problems += _docker_problems(modules, options)
    elif target == "ase":
        problems += _ase_problems(system, modules, options)
    else:
        problems.append(Problem("config/target", "(document)", f"unknown target {target!r}; use docker or ase"))
    return problems


def _env_value(module: Mapping[str, Any], name: str, default: str) -> str:
    entry = (module.get("env") or {}).get(name)
    return str(entry.get("value")) if isinstance(entry, dict) and entry.get("value") not in (None, "") else default


def _module_problems(
    content: Mapping[str, Any], modules: Mapping[str, Any], options: Mapping[str, Any]
) -> list[Problem]:
    problems: list[Problem] = []
    place = f"{AGENT}.modules.{MODULE_NAME}"
    module = modules.get(MODULE_NAME)
    if not isinstance(module, dict):
        return [Problem("module/missing", f"{AGENT}.modules", f"the module {MODULE_NAME} is not deployed")]
    for name in module.get("env") or {}:
        if name not in SETTING_NAMES and name not in PROXY_ENV:
            problems.append(
                Problem(
                    "module/env-unknown",
                    f"{place}.env.{name}",
                    "the module reads no such variable (see settings.ENV_VARS)",
                )
            )
    twin = (content.get(MODULE_NAME) or {}).get("properties.desired") or {}
    for key in twin:
        if key not in TWIN_PROPERTIES:
            problems.append(
                Problem(
                    "module/twin-unknown",
                    f"modulesContent.{MODULE_NAME}.properties.desired.{key}",
                    f"the module has no twin property {key!r}; it has {', '.join(TWIN_PROPERTIES)}",
                )
            )
    opts = options.get(MODULE_NAME, {})
    host = opts.get("HostConfig") or {}
    bound = {spec for _, spec, _ in _port_numbers(host, opts)}
    for setting, default in (("HTTP_PORT", "5000"), ("METRICS_PORT", "9600")):
        port = _env_value(module, setting, default)
        if port != "0" and f"{port}/tcp" not in bound:
            problems.append(
                Problem(
                    "module/port-unbound",
                    f"{place}.settings.createOptions.HostConfig.PortBindings",
                    f"{setting} is {port} but {port}/tcp is not published",
                )
            )
    input_dir = _env_value(module, "INPUT_DIR", "/app/input")
    read_only = _input_mount_read_only(host, input_dir)
    if read_only is False:
        problems.append(
            Problem(
                "module/input-read-only",
                f"{place}.settings.createOptions.HostConfig",
                f"the input share ({input_dir}) must be mounted read-only",
            )
        )
    if read_only and _env_value(module, "INPUT_DISPOSITION", "archive") != "keep":
        problems.append(
            Problem(
                "module/input-disposition",
                f"{place}.env.INPUT_DISPOSITION",
                "the input share is read-only, so INPUT_DISPOSITION must be keep (archive and delete write to it)",
            )
        )
    return problems


def _input_mount_read_only(host: Mapping[str, Any], input_dir: str) -> bool | None:
    """True/False for the mount at `input_dir`, None when nothing is mounted there."""
    for bind in host.get("Binds") or []:
        parts = str(bind).split(":")
        if len(parts) >= 2 and parts[1] == input_dir:
            return len(parts) > 2 and "ro" in parts[2].split(",")
    for mount in host.get("Mounts") or []:
        if isinstance(mount, dict) and mount.get("Target") == input_dir:
            return mount.get("ReadOnly") in (True, "true", "True")
    return None


_ROUTE_FROM = re.compile(r"FROM\s+(\S+)", re.IGNORECASE)
_ROUTE_OUTPUT = re.compile(r"^/messages/modules/([^/]+)/outputs/([^/\s]+)$")
_ROUTE_INTO = re.compile(r'BrokeredEndpoint\(\s*"/?modules/([^/]+)/inputs/([^"]+)"\s*\)', re.IGNORECASE)


def _route_problems(content: Mapping[str, Any], modules: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    routes = (content.get("$edgeHub") or {}).get("properties.desired", {}).get("routes") or {}
    routed: set[str] = set()
    for name, route in routes.items():
        text = route.get("route", "") if isinstance(route, dict) else str(route)
        place = f"{HUB}.routes.{name}"
        source = _ROUTE_FROM.search(text)
        if source:
            path = source.group(1)
            if path in ("/*", "/messages/*", f"/messages/modules/{MODULE_NAME}/*") and " WHERE " not in text.upper():
                routed.update(OUTPUTS)
            match = _ROUTE_OUTPUT.match(path)
            if match:
                module, output = match.groups()
                if module not in modules:
                    problems.append(Problem("routes/unknown-module", place, f"no module {module!r} is deployed"))
                elif module == MODULE_NAME:
                    if output == "*":
                        routed.update(OUTPUTS)
                    elif output not in OUTPUTS:
                        problems.append(
                            Problem(
                                "routes/unknown-output",
                                place,
                                f"{MODULE_NAME} sends no output {output!r}; its outputs are {', '.join(OUTPUTS)}",
                            )
                        )
                    else:
                        routed.add(output)
        for module, input_name in _ROUTE_INTO.findall(text):
            if module not in modules:
                problems.append(Problem("routes/unknown-module", place, f"no module {module!r} is deployed"))
            elif module == MODULE_NAME and input_name not in INPUTS:
                problems.append(
                    Problem(
                        "routes/unknown-input",
                        place,
                        f"{MODULE_NAME} reads no input {input_name!r}; its inputs are {', '.join(INPUTS)}",
                    )
                )
    for output in OUTPUTS:
        if MODULE_NAME in modules and output not in routed:
            problems.append(
                Problem(
                    "routes/unrouted-output", f"{HUB}.routes", f"the output {output!r} of {MODULE_NAME} is not routed"
                )
            )
    return problems


def _is_gpu_image(module: Mapping[str, Any]) -> bool:
    return is_gpu_platform(str((module.get("settings") or {}).get("image", "")))


def _docker_problems(modules: Mapping[str, Any], options: Mapping[str, dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    for name, module in modules.items():
        host = options.get(name, {}).get("HostConfig") or {}
        if _is_gpu_image(module):
            requests = host.get("DeviceRequests") or []
            if not any(["gpu"] in (r.get("Capabilities") or []) for r in requests if isinstance(r, dict)):
                problems.append(
                    Problem(
                        "docker/gpu-device-request",
                        f"{AGENT}.modules.{name}.settings.createOptions.HostConfig.DeviceRequests",
                        'a GPU image needs [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]',
                    )
                )
    return problems


def _ase_problems(
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
        for suffix, spec, host_port in _port_numbers(host, opts):
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
            value = _env_value(module, setting, "")
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
        if _is_gpu_image(module) and not str(limits.get("nvidia.com/gpu", "0")).strip("0"):
            problems.append(
                Problem(
                    "ase/gpu-resource",
                    f"{place}.resources.limits",
                    'a GPU image must request "nvidia.com/gpu" in limits',
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


# --------------------------------------------------------------------------------------------- .env.example

ENV_EXAMPLE_HEAD = """\
# edge-inference deployment settings. Copy to .env (git-ignored) and fill in; `make config` expands the
# deployment templates from .env, falling back to these values with a warning. Secrets go in .env only.
# This file is generated: `python tools/manifest.py env-example` rewrites it from settings.ENV_VARS.

# --- container registry (registryCredentials in the manifest; the password never leaves .env and config/)
CONTAINER_REGISTRY_SERVER=myregistry.azurecr.io
CONTAINER_REGISTRY_USERNAME=myregistry
CONTAINER_REGISTRY_PASSWORD=replace-with-the-registry-password

# --- image: <server>/edge-inference:<version>-<platform>; empty IMAGE_VERSION = module.json's version
IMAGE_VERSION=
# amd64.gpu (CUDA), amd64 (CPU), amd64.debug (CPU + debugpy on 5678), arm64v8 (CPU)
IMAGE_PLATFORM=amd64.gpu

# --- target docker (deployment.template.json): host folders, or SMB/NFS mounts on the host
# input share, mounted read-only at /app/input (hence INPUT_DISPOSITION=keep below)
INPUT_SHARE_PATH=/srv/edge-inference/input
# output share, mounted at /app/output (results/, annotated/, failed/)
OUTPUT_SHARE_PATH=/srv/edge-inference/output
# module state at /app/state: a Docker named volume (or a host folder writable by uid 1000)
STATE_VOLUME=edge-inference-state

# --- target ase (deployment.ase.template.json): Azure Stack Edge share names, used as Mount Sources
ASE_INPUT_SHARE=input
ASE_OUTPUT_SHARE=output
# a local (Edge local) share for the ledger, outbox and TensorRT engine cache
ASE_STATE_SHARE=edgestate
# the IoT Edge runtime tag of the device's managed runtime (check the device; it lags the Docker one)
ASE_EDGE_RUNTIME_TAG=1.4
# Kubernetes limits of the module pod (the GPU limit is 1 in the template)
ASE_CPU_LIMIT=4
ASE_MEMORY_LIMIT=8Gi
# name of the Azure Stack Edge file trigger on the input share: its events carry topic=<trigger name>
FILE_EVENT_TRIGGER=inputtrigger

# --- proxy (edgeHub): empty = no proxy; UPSTREAM_PROTOCOL=AmqpWs unless the proxy passes AMQP
HTTPS_PROXY=
UPSTREAM_PROTOCOL=

# --- module settings (settings.ENV_VARS): empty = the module's default, shown in the comment
"""
# Deployment values that differ from the module's own default, and why.
ENV_EXAMPLE_OVERRIDES = {
    "INPUT_DISPOSITION": ("keep", "the templates mount the input share read-only"),
    "REQUIRE_GPU": ("", "empty: true for a GPU image platform (amd64.gpu), false for the CPU ones"),
}
_DESCRIPTIVE_DEFAULTS = {"bundled demo model", "hostname", ""}


def render_env_example() -> str:
    lines = [ENV_EXAMPLE_HEAD]
    for var in ENV_VARS:
        if var.name in ENV_EXAMPLE_OVERRIDES:
            value, why = ENV_EXAMPLE_OVERRIDES[var.name]
            lines.append(f"# {var.meaning} (module default: {var.default}; {why})\n{var.name}={value}\n")
        elif var.default in _DESCRIPTIVE_DEFAULTS:
            shown = var.default or "none"
            lines.append(f"# {var.meaning} (default: {shown})\n{var.name}=\n")
        else:
            lines.append(f"# {var.meaning}\n{var.name}={var.default}\n")
    return "".join(lines)


# --------------------------------------------------------------------------------------------- command line


def _target_of(path: Path) -> str:
    match = re.fullmatch(r"deployment\.(.+)\.json", path.name)
    return match.group(1) if match else "docker"


def cmd_config(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    values, fallbacks = load_values(Path(args.env), ENV_EXAMPLE)
    if not Path(args.env).exists():
        out(f"warning: {args.env} not found: every value comes from .env.example (copy it to .env and fill it in)")
    elif fallbacks:
        out(f"warning: not in {args.env}, taken from .env.example: {', '.join(fallbacks)}")
    platform = args.platform or values.get("IMAGE_PLATFORM") or DEFAULT_PLATFORM
    failed = False
    for target in args.targets:
        try:
            manifest = build_manifest(target, values, platform)
        except ManifestError as e:
            failed = True
            for problem in e.problems:
                out(f"{TARGETS[target].name}: {problem}")
            continue
        path = Path(args.out) / f"deployment.{target}.json"
        write_manifest(manifest, path)
        out(f"wrote {path} (image platform {platform})")
    return 1 if failed else 0


def cmd_validate(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    paths = [Path(p) for p in args.files] or sorted(CONFIG_DIR.glob("deployment.*.json"))
    if not paths:
        out("validate: no manifests in config/; run `make config` first")
        return 1
    failed = False
    for path in paths:
        target = _target_of(path)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            out(f"{path}: manifest/json: (document): {e}")
            failed = True
            continue
        problems = validate_manifest(manifest, target)
        for problem in problems:
            out(f"{path.name}: {problem}")
        failed |= bool(problems)
        out(f"{path.name}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'ok'} (target {target})")
    return 1 if failed else 0


def cmd_env_example(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    text = render_env_example()
    if args.check:
        current = ENV_EXAMPLE.read_text(encoding="utf-8") if ENV_EXAMPLE.exists() else ""
        if current != text:
            out(".env.example is out of date: run `python tools/manifest.py env-example`")
            return 1
        return 0
    ENV_EXAMPLE.write_text(text, encoding="utf-8")
    out(f"wrote {ENV_EXAMPLE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="manifest.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="expand the templates into config/deployment.<target>.json")
    config.add_argument(
        "--platform", help=f"image platform from module.json (default IMAGE_PLATFORM or {DEFAULT_PLATFORM})"
    )
    config.add_argument("--env", default=str(ENV_FILE), help="the .env file (default: .env at the repository root)")
    config.add_argument("--out", default=str(CONFIG_DIR), help="output folder (default: config/)")
    config.add_argument("--target", dest="targets", action="append", choices=sorted(TARGETS), help="only this target")
    validate = sub.add_parser("validate", help="check manifests against the schemas and the target rules")
    validate.add_argument("files", nargs="*", help="manifests (default: config/deployment.*.json)")
    example = sub.add_parser("env-example", help="rewrite .env.example from settings.ENV_VARS")
    example.add_argument("--check", action="store_true", help="only check that it is up to date")
    args = parser.parse_args(argv)
    if args.command == "config":
        args.targets = args.targets or sorted(TARGETS)
        return cmd_config(args)
    if args.command == "validate":
        return cmd_validate(args)
    return cmd_env_example(args)


if __name__ == "__main__":
    sys.exit(main())

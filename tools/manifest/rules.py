"""Rules every target shares: createOptions well formed, the module deployed as the code expects, routes.

Each rule yields `Problem`s named `<area>/<rule>` (`module/port-unbound`); `validate.py` runs them with the
schema, runtime and per-target rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from tools.manifest.expand import CHUNK_SIZE, MAX_CHUNKS
from tools.manifest.problem import AGENT, HUB, Problem
from tools.manifest.project import (
    DEBUG_PORT,
    INPUTS,
    MODULE_NAME,
    OUTPUTS,
    SETTING_NAMES,
    WRITABLE_PROPERTIES,
    is_debug_image,
)

# Variables for the runtime itself (proxy), allowed beside the module's own settings.
PROXY_ENV = frozenset({"https_proxy", "http_proxy", "no_proxy", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"})


def strings(node: Any, place: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, child in node.items():
            yield f"{place}.{key}", str(key)
            yield from strings(child, f"{place}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from strings(child, f"{place}[{i}]")
    elif isinstance(node, str):
        yield place, node


def create_options(settings: Mapping[str, Any], place: str, problems: list[Problem]) -> dict[str, Any]:
    """The createOptions of one module, joined from its chunks; size, split and JSON problems appended."""
    chunks = {k: v for k, v in settings.items() if re.fullmatch(r"(createOptions|createoptions)[0-9]*", k)}
    if not chunks:
        return {}
    if any(not isinstance(v, str) for v in chunks.values()):
        problems.append(
            Problem("createoptions/json", f"{place}.createOptions", "must be a JSON string (run make config)")
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


def port_numbers(host_config: Mapping[str, Any], options: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(place suffix, container port spec, host port or '') for every port named in createOptions."""
    for spec in options.get("ExposedPorts") or {}:
        yield f"ExposedPorts.{spec}", spec, ""
    for spec, bindings in (host_config.get("PortBindings") or {}).items():
        for i, binding in enumerate(bindings or [{}]):
            yield f"HostConfig.PortBindings.{spec}[{i}]", spec, str((binding or {}).get("HostPort", ""))


def env_value(module: Mapping[str, Any], name: str, default: str) -> str:
    entry = (module.get("env") or {}).get(name)
    return str(entry.get("value")) if isinstance(entry, dict) and entry.get("value") not in (None, "") else default


def module_problems(
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
        if key not in WRITABLE_PROPERTIES:
            problems.append(
                Problem(
                    "module/twin-unknown",
                    f"modulesContent.{MODULE_NAME}.properties.desired.{key}",
                    f"the module has no twin property {key!r}; it has {', '.join(WRITABLE_PROPERTIES)}",
                )
            )
    opts = options.get(MODULE_NAME, {})
    host = opts.get("HostConfig") or {}
    bound = {spec for _, spec, _ in port_numbers(host, opts)}
    for setting, default in (("HTTP_PORT", "5000"), ("METRICS_PORT", "9600")):
        port = env_value(module, setting, default)
        if port != "0" and f"{port}/tcp" not in bound:
            problems.append(
                Problem(
                    "module/port-unbound",
                    f"{place}.settings.createOptions.HostConfig.PortBindings",
                    f"{setting} is {port} but {port}/tcp is not published",
                )
            )
    image = str((module.get("settings") or {}).get("image", ""))
    debug_spec = f"{DEBUG_PORT}/tcp"
    published = {spec for suffix, spec, host_port in port_numbers(host, opts) if host_port}
    if is_debug_image(image) and debug_spec not in published:
        problems.append(
            Problem(
                "module/debug-port",
                f"{place}.settings.createOptions.HostConfig.PortBindings",
                f"the debug image waits for a debugger on {DEBUG_PORT}: publish it "
                f'("ExposedPorts": {{"{debug_spec}": {{}}}}, "PortBindings": {{"{debug_spec}": [{{"HostPort": '
                f'"{DEBUG_PORT}"}}]}}), as deployment.debug.template.json does',
            )
        )
    input_dir = env_value(module, "INPUT_DIR", "/app/input")
    read_only = _input_mount_read_only(host, input_dir)
    if read_only is False:
        problems.append(
            Problem(
                "module/input-read-only",
                f"{place}.settings.createOptions.HostConfig",
                f"the input share ({input_dir}) must be mounted read-only",
            )
        )
    if read_only and env_value(module, "INPUT_DISPOSITION", "archive") != "keep":
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


def route_problems(content: Mapping[str, Any], modules: Mapping[str, Any]) -> list[Problem]:
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

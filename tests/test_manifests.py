"""Deployment manifests, module images and their contract with the code.

Given the templates, .env.example and module.json, `python -m tools.manifest config` and `validate` pass for
every target (docker, debug, ase) and image platform (GPU or CPU); a manifest broken against any one rule is refused with a message naming the rule and the JSON
place; the templates name exactly the env vars, twin properties, outputs and inputs the code uses; the
Dockerfiles are well formed (structure, hadolint) and the requirements they install resolve.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_inference.ops.live_settings import TWIN_PROPERTIES, TwinSettings
from edge_inference.settings import ENV_VARS
from tools import manifest as mf

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "modules" / "edge-inference"
DOCKERFILES = sorted(MODULE_DIR.glob("Dockerfile.*"))
MODULE = "edge-inference"
AGENT = "modulesContent.$edgeAgent.properties.desired"
MOD = f"{AGENT}.modules.{MODULE}"
HUB = "modulesContent.$edgeHub.properties.desired"

try:  # the outputs the code sends, where the code names them
    from edge_inference.ops.telemetry import OUTPUTS as CODE_OUTPUTS
except ImportError:  # pragma: no cover
    CODE_OUTPUTS = ("detections", "alerts")
CODE_INPUTS = ("fileEvents",)


@pytest.fixture(scope="module")
def values() -> dict[str, str]:
    return mf.read_env_file(mf.ENV_EXAMPLE)


# Manifests under test: each target with the default GPU image, and the CPU variants ("<target>-cpu").
BUILDS = {"docker": "amd64.gpu", "ase": "amd64.gpu", "debug": "amd64.gpu", "docker-cpu": "amd64", "ase-cpu": "amd64"}
TODAY = dt.date(2026, 12, 1)


@pytest.fixture(scope="module")
def built(values: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {name: mf.build_manifest(name.split("-")[0], values, platform) for name, platform in BUILDS.items()}


def _template(target: str) -> dict[str, Any]:
    return json.loads(mf.TARGETS[target].read_text(encoding="utf-8"))  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------ config + validate


@pytest.mark.timeout(60)
def test_config_then_validate_pass_for_both_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = tmp_path / ".env"
    env.write_text("CONTAINER_REGISTRY_PASSWORD=s3cret-Value-42\n", encoding="utf-8")

    assert mf.main(["config", "--env", str(env), "--out", str(tmp_path / "config")]) == 0
    files = sorted((tmp_path / "config").glob("deployment.*.json"))
    assert [f.name for f in files] == ["deployment.ase.json", "deployment.debug.json", "deployment.docker.json"]
    assert mf.main(["validate", *map(str, files)]) == 0

    out = capsys.readouterr().out
    assert "s3cret-Value-42" not in out  # the password is written, never printed
    assert "taken from .env.example" in out  # the fallback is announced
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        creds = json.loads(f.read_text())[mf.AGENT.split(".")[0]]["$edgeAgent"]["properties.desired"]["runtime"]
        assert creds["settings"]["registryCredentials"]["registry"]["password"] == "s3cret-Value-42"


def test_manifest_image_and_gpu_per_target(built: dict[str, dict[str, Any]]) -> None:
    gpu_request = [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]
    for name, manifest in built.items():
        module = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]
        platform = "amd64.debug" if name == "debug" else BUILDS[name]
        assert module["settings"]["image"] == f"myregistry.azurecr.io/edge-inference:0.1.0-{platform}"
        options = _options(manifest)
        gpu = platform.endswith(".gpu")
        if name.startswith(("docker", "debug")):
            assert options["HostConfig"].get("DeviceRequests") == (gpu_request if gpu else None), name
            assert "/app/input:ro" in options["HostConfig"]["Binds"][0]
        else:
            resources = options["k8s-experimental"]["resources"]
            assert resources["limits"].get("nvidia.com/gpu") == (1 if gpu else None), name
            assert resources.get("requests", {}).get("nvidia.com/gpu") == (1 if gpu else None), name
            assert resources["limits"]["cpu"] == "4" and resources["limits"]["memory"] == "8Gi"
            assert options["k8s-experimental"]["strategy"] == {"type": "Recreate"}
        system = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["systemModules"]
        assert system["edgeAgent"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.6"
        assert system["edgeHub"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-hub:1.6"
        routes = manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
        assert routes["alertsToUpstream"]["priority"] == 0
        assert routes["alertsToUpstream"]["timeToLiveSecs"] > routes["detectionsToUpstream"]["timeToLiveSecs"]
        assert mf.validate_manifest(manifest, name.split("-")[0], TODAY) == [], name


def test_debug_manifest_publishes_the_debugger_port(built: dict[str, dict[str, Any]]) -> None:
    options = _options(built["debug"])
    assert options["ExposedPorts"]["5678/tcp"] == {}
    assert options["HostConfig"]["PortBindings"]["5678/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "5678"}]


def test_published_ports_are_on_loopback_unless_the_env_says_otherwise(built: dict[str, dict[str, Any]]) -> None:
    """The REST API, the live page and the metrics are published on 127.0.0.1 by .env.example's PUBLISH_HOST_IP."""
    for name in ("docker", "debug"):
        bindings = _options(built[name])["HostConfig"]["PortBindings"]
        assert {b["HostIp"] for spec in bindings for b in bindings[spec]} == {"127.0.0.1"}, name
        assert {"5000/tcp", "9600/tcp"} <= set(bindings)


def test_platform_override_and_empty_env_values_are_left_out(values: dict[str, str]) -> None:
    manifest = mf.build_manifest("docker", values, platform="arm64v8")
    module = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]
    assert module["settings"]["image"].endswith(":0.1.0-arm64v8")
    assert "MODEL_PATH" not in module["env"]  # empty in .env.example: the module's default applies
    assert module["env"]["CONFIDENCE_THRESHOLD"] == {"value": "0.5"}


def test_config_fails_on_a_placeholder_left_unexpanded(values: dict[str, str]) -> None:
    missing = {k: v for k, v in values.items() if k != "ASE_INPUT_SHARE"}
    with pytest.raises(mf.ManifestError) as caught:
        mf.build_manifest("ase", missing)
    assert str(caught.value).startswith("template/unexpanded: ")
    assert "${ASE_INPUT_SHARE}" in str(caught.value)
    assert "HostConfig.Mounts[0].Source" in str(caught.value)


def test_config_fails_on_an_empty_value_outside_env(values: dict[str, str]) -> None:
    with pytest.raises(mf.ManifestError, match=r"template/empty-value: .*registryCredentials\.registry\.address"):
        mf.build_manifest("docker", {**values, "CONTAINER_REGISTRY_SERVER": ""})


def test_config_command_exits_non_zero_and_names_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("CONTAINER_REGISTRY_SERVER=\nCONTAINER_REGISTRY_PASSWORD=hunter2-secret\n", encoding="utf-8")
    assert mf.main(["config", "--env", str(env), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "template/empty-value" in out
    assert "hunter2-secret" not in out


def test_long_create_options_are_split_and_too_long_ones_refused() -> None:
    settings = {"image": "x", "createOptions": {"Env": ["A=" + "x" * 1200]}}
    split = mf.split_create_options(settings, "p")
    assert sorted(k for k in split if k.startswith("createOptions")) == [
        "createOptions",
        "createOptions01",
        "createOptions02",
    ]
    assert all(len(split[k]) <= 512 for k in split if k.startswith("createOptions"))
    problems: list[mf.Problem] = []
    assert mf.create_options(split, "p", problems) == settings["createOptions"]
    assert problems == []
    with pytest.raises(mf.ManifestError, match=r"createoptions/size: p\.createOptions: "):
        mf.split_create_options({"image": "x", "createOptions": {"Env": ["A=" + "x" * 5000]}}, "p")


# ------------------------------------------------------------------------------------------ one broken rule each


def _options(manifest: dict[str, Any], module: str = MODULE) -> dict[str, Any]:
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    group = "modules" if module in desired["modules"] else "systemModules"
    settings = desired[group][module]["settings"]
    problems: list[mf.Problem] = []
    return mf.create_options(settings, "", problems)


def _edit_options(manifest: dict[str, Any], change: Callable[[dict[str, Any]], None], module: str = MODULE) -> None:
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    group = "modules" if module in desired["modules"] else "systemModules"
    settings = desired[group][module]["settings"]
    options = _options(manifest, module)
    change(options)
    base = {k: v for k, v in settings.items() if not k.lower().startswith("createoptions")}
    desired[group][module]["settings"] = mf.split_create_options({**base, "createOptions": options}, "")


def _module(m: dict[str, Any]) -> dict[str, Any]:
    return m["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]  # type: ignore[no-any-return]


def _routes(m: dict[str, Any]) -> dict[str, Any]:
    return m["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]  # type: ignore[no-any-return]


def _hub_env(m: dict[str, Any]) -> dict[str, Any]:
    return m["modulesContent"]["$edgeAgent"]["properties.desired"]["systemModules"]["edgeHub"]["env"]  # type: ignore[no-any-return]


def _unsplit(m: dict[str, Any]) -> None:
    settings = _module(m)["settings"]
    text = "".join(settings.pop(k) for k in sorted(k for k in list(settings) if k.startswith("createOptions")))
    settings["createOptions"] = text + " " * 600


def _bad_split(m: dict[str, Any]) -> None:
    _module(m)["settings"]["createOptions05"] = "{}"


def _extra_module(name: str) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        m["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][name] = {
            "type": "docker",
            "status": "running",
            "restartPolicy": "always",
            "settings": {"image": "example/other:1.0"},
        }

    return change


def _set_env(name: str, value: str) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        _module(m)["env"][name] = {"value": value}

    return change


def _options_change(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda m: _edit_options(m, change)


def _add_binds(o: dict[str, Any]) -> None:
    o["HostConfig"]["Binds"] = ["/data/input:/app/input:ro"]


def _add_device_requests(o: dict[str, Any]) -> None:
    o["HostConfig"]["DeviceRequests"] = [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]


def _mount(index: int, **changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda o: o["HostConfig"]["Mounts"][index].update(changes)


def _add_port(spec: str, host_port: str | None) -> Callable[[dict[str, Any]], None]:
    binding = [{"HostPort": host_port}] if host_port is not None else [{}]
    return lambda o: o["HostConfig"]["PortBindings"].update({spec: binding})


def _drop_k8s(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def change(o: dict[str, Any]) -> None:
        node = o["k8s-experimental"]
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


def _proxy_without_no_proxy(m: dict[str, Any]) -> None:
    env = _hub_env(m)
    env["https_proxy"] = {"value": "http://proxy.example:3128"}
    env.pop("no_proxy", None)


def _drop_route(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: _routes(m).pop(name)


def _add_route(route: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: _routes(m).update({"extra": route})


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _remove_module(m: dict[str, Any]) -> None:
    del m["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]


def _drop_mount_read_only(o: dict[str, Any]) -> None:
    if "Binds" in o["HostConfig"]:
        o["HostConfig"]["Binds"][0] = o["HostConfig"]["Binds"][0].removesuffix(":ro")
    else:
        o["HostConfig"]["Mounts"][0]["ReadOnly"] = False


def _tcp_udp(m: dict[str, Any]) -> None:
    _edit_options(
        m,
        lambda o: o["HostConfig"]["PortBindings"].update(
            {"7000/tcp": [{"HostPort": "7000"}], "7000/udp": [{"HostPort": "7000"}]}
        ),
    )


# the TCP+UDP case needs both protocols on one port


# (targets, rule, change, place the message must name)
COMMON_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "schema/deployment-2.0",
        _set(("modulesContent", "$edgeAgent", "properties.desired", "modules", MODULE, "restartPolicy"), "sometimes"),
        f"{MOD}.restartPolicy",
    ),
    (
        "schema/edgeagent-1.1",
        _set(("modulesContent", "$edgeAgent", "properties.desired", "schemaVersion"), "1.0"),
        f"{AGENT}.schemaVersion",
    ),
    (
        "schema/edgehub-1.1",
        _set(("modulesContent", "$edgeHub", "properties.desired", "schemaVersion"), "1.0"),
        f"{HUB}.schemaVersion",
    ),
    ("template/unexpanded", _set_env("LOG_LEVEL", "${LOG_LEVEL}"), f"{MOD}.env.LOG_LEVEL.value"),
    ("createoptions/size", _unsplit, f"{MOD}.settings.createOptions"),
    ("createoptions/split", _bad_split, f"{MOD}.settings.createOptions"),
    (
        "createoptions/json",
        _set(
            ("modulesContent", "$edgeAgent", "properties.desired", "modules", MODULE, "settings", "createOptions01"),
            "}{",
        ),
        f"{MOD}.settings.createOptions",
    ),
    ("module/missing", _remove_module, f"{AGENT}.modules"),
    ("module/env-unknown", _set_env("CONFIDENCE", "0.7"), f"{MOD}.env.CONFIDENCE"),
    (
        "module/twin-unknown",
        _set(("modulesContent", MODULE, "properties.desired", "threshold"), 0.7),
        f"modulesContent.{MODULE}.properties.desired.threshold",
    ),
    ("module/port-unbound", _set_env("HTTP_PORT", "5001"), f"{MOD}.settings.createOptions.HostConfig.PortBindings"),
    ("module/input-read-only", _options_change(_drop_mount_read_only), f"{MOD}.settings.createOptions.HostConfig"),
    ("module/input-disposition", _set_env("INPUT_DISPOSITION", "archive"), f"{MOD}.env.INPUT_DISPOSITION"),
    (
        "routes/unknown-output",
        _add_route("FROM /messages/modules/edge-inference/outputs/results INTO $upstream"),
        f"{HUB}.routes.extra",
    ),
    (
        "routes/unknown-input",
        _add_route("FROM /* WHERE topic = 't' INTO BrokeredEndpoint(\"/modules/edge-inference/inputs/input1\")"),
        f"{HUB}.routes.extra",
    ),
    (
        "routes/unknown-module",
        _add_route("FROM /messages/modules/camera/outputs/* INTO $upstream"),
        f"{HUB}.routes.extra",
    ),
    ("routes/unrouted-output", _drop_route("alertsToUpstream"), f"{HUB}.routes"),
]
DOCKER_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "docker/host-ip",
        _options_change(lambda o: o["HostConfig"]["PortBindings"]["5000/tcp"][0].pop("HostIp")),
        f"{MOD}.settings.createOptions.HostConfig.PortBindings.5000/tcp[0]",
    ),
    (
        "docker/gpu-device-request",
        _options_change(lambda o: o["HostConfig"].pop("DeviceRequests")),
        f"{MOD}.settings.createOptions.HostConfig.DeviceRequests",
    ),
]
ASE_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("ase/no-binds", _options_change(_add_binds), f"{MOD}.settings.createOptions.HostConfig.Binds"),
    (
        "ase/no-device-requests",
        _options_change(_add_device_requests),
        f"{MOD}.settings.createOptions.HostConfig.DeviceRequests",
    ),
    ("ase/mount-type", _options_change(_mount(1, Type="tmpfs")), f"{MOD}.settings.createOptions.HostConfig.Mounts[1]"),
    (
        "ase/volume-source",
        _options_change(_mount(1, Source="/home/hcsshares/output")),
        f"{MOD}.settings.createOptions.HostConfig.Mounts[1].Source",
    ),
    (
        "ase/bind-directory",
        _options_change(_mount(2, Type="bind", Source="/var/lib/edge/labels.txt")),
        f"{MOD}.settings.createOptions.HostConfig.Mounts[2].Source",
    ),
    ("ase/module-name", _extra_module("Camera_Feed"), f"{AGENT}.modules.Camera_Feed"),
    (
        "ase/env-name",
        lambda m: _hub_env(m).update({"Logging:LogLevel": {"value": "debug"}}),
        f"{AGENT}.systemModules.edgeHub.env.Logging:LogLevel",
    ),
    ("ase/no-proxy", _proxy_without_no_proxy, f"{AGENT}.systemModules.edgeHub.env"),
    (
        "ase/reserved-port",
        _options_change(_add_port("35000/tcp", "35000")),
        f"{MOD}.settings.createOptions.HostConfig.PortBindings.35000/tcp[0]",
    ),
    (
        "ase/tcp-udp-same-port",
        _tcp_udp,
        f"{MOD}.settings.createOptions.HostConfig.PortBindings",
    ),
    (
        "ase/host-port",
        _options_change(_add_port("7001/tcp", None)),
        f"{MOD}.settings.createOptions.HostConfig.PortBindings.7001/tcp[0]",
    ),
    (
        "ase/gpu-resource",
        _options_change(_drop_k8s(("resources", "limits", "nvidia.com/gpu"))),
        f"{MOD}.settings.createOptions.k8s-experimental.resources.limits",
    ),
    (
        "ase/resource-limits",
        _options_change(_drop_k8s(("resources", "limits", "memory"))),
        f"{MOD}.settings.createOptions.k8s-experimental.resources.limits",
    ),
    (
        "ase/strategy-recreate",
        _options_change(_drop_k8s(("strategy",))),
        f"{MOD}.settings.createOptions.k8s-experimental.strategy",
    ),
]


def _runtime(agent: str, hub: str | None = None) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        system = m["modulesContent"]["$edgeAgent"]["properties.desired"]["systemModules"]
        system["edgeAgent"]["settings"]["image"] = f"mcr.microsoft.com/azureiotedge-agent:{agent}"
        system["edgeHub"]["settings"]["image"] = f"mcr.microsoft.com/azureiotedge-hub:{hub or agent}"

    return change


def _add_gpu_resource(o: dict[str, Any]) -> None:
    o["k8s-experimental"]["resources"]["limits"]["nvidia.com/gpu"] = 1


def _drop_debug_port(o: dict[str, Any]) -> None:
    del o["ExposedPorts"]["5678/tcp"]
    del o["HostConfig"]["PortBindings"]["5678/tcp"]


AGENT_IMAGE = f"{AGENT}.systemModules.edgeAgent.settings.image"
# (manifest of BUILDS, rule, change, place): the rules about images, GPU and runtime, where they apply
IMAGE_CASES: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    (
        "docker-cpu",
        "docker/cpu-gpu-request",
        _options_change(_add_device_requests),
        f"{MOD}.settings.createOptions.HostConfig.DeviceRequests",
    ),
    (
        "debug",
        "docker/cpu-gpu-request",
        _options_change(_add_device_requests),
        f"{MOD}.settings.createOptions.HostConfig.DeviceRequests",
    ),
    (
        "ase-cpu",
        "ase/cpu-gpu-resource",
        _options_change(_add_gpu_resource),
        f"{MOD}.settings.createOptions.k8s-experimental.resources",
    ),
    (
        "debug",
        "module/debug-port",
        _options_change(_drop_debug_port),
        f"{MOD}.settings.createOptions.HostConfig.PortBindings",
    ),
    (
        "debug",
        "docker/host-ip",
        _options_change(lambda o: o["HostConfig"]["PortBindings"]["5678/tcp"][0].pop("HostIp")),
        f"{MOD}.settings.createOptions.HostConfig.PortBindings.5678/tcp[0]",
    ),
    ("docker", "runtime/end-of-support", _runtime("1.5"), AGENT_IMAGE),
    ("ase", "runtime/end-of-support", _runtime("1.1"), AGENT_IMAGE),
    ("debug", "runtime/end-of-support", _runtime("1.4.38"), AGENT_IMAGE),
    ("docker", "runtime/unknown-version", _runtime("latest"), AGENT_IMAGE),
    ("docker", "runtime/unknown-version", _runtime("0.9"), AGENT_IMAGE),
    ("docker", "runtime/mismatch", _runtime("1.6", "1.5"), f"{AGENT}.systemModules"),
]
CASES = (
    [("docker", *c) for c in COMMON_CASES + DOCKER_CASES]
    + [("ase", *c) for c in COMMON_CASES + ASE_CASES]
    + [("debug", *c) for c in COMMON_CASES]
    + IMAGE_CASES
)


@pytest.mark.parametrize(("name", "rule", "change", "place"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_manifest_breaking_one_rule_is_refused_naming_rule_and_place(
    built: dict[str, dict[str, Any]], name: str, rule: str, change: Callable[[dict[str, Any]], None], place: str
) -> None:
    target = name.split("-")[0]
    assert mf.validate_manifest(built[name], target, TODAY) == []  # given a valid manifest
    broken = copy.deepcopy(built[name])
    change(broken)  # when one rule is broken
    messages = [str(p) for p in mf.validate_manifest(broken, target, TODAY)]
    assert any(m.startswith(f"{rule}: {place}: ") for m in messages), messages  # then that rule names that place


def test_every_rule_has_a_broken_case_for_every_target_it_applies_to() -> None:
    package = Path(mf.__file__).parent
    source = "\n".join(f.read_text(encoding="utf-8") for f in sorted(package.glob("*.py")))
    rules = set(re.findall(r'Problem\(\s*"([a-z0-9-]+/[a-z0-9-]+)"', source))
    rules -= {"config/platform", "config/target", "template/empty-value"}  # config-time, tested above
    covered = {rule for _, rule, _, _ in CASES} | {"createoptions/size"}
    assert len(rules) > 30
    assert rules <= covered, sorted(rules - covered)


def test_validate_command_prints_rule_and_place_and_exits_non_zero(
    built: dict[str, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = copy.deepcopy(built["ase"])
    _edit_options(broken, _add_binds)
    path = tmp_path / "deployment.ase.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    assert mf.main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        "ase/no-binds: modulesContent.$edgeAgent.properties.desired.modules.edge-inference.settings.createOptions."
        "HostConfig.Binds: Binds are not supported on Azure Stack Edge Kubernetes; use Mounts of type volume"
    ) in out


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("docker-cpu", _options_change(_add_device_requests), "docker/cpu-gpu-request: "),
        ("docker", _options_change(lambda o: o["HostConfig"].pop("DeviceRequests")), "docker/gpu-device-request: "),
        ("ase", _options_change(_drop_k8s(("resources", "limits", "nvidia.com/gpu"))), "ase/gpu-resource: "),
        ("docker", _runtime("1.5"), "runtime/end-of-support: "),
        ("debug", _options_change(_drop_debug_port), "module/debug-port: "),
    ],
    ids=[
        "gpu-request-on-cpu-image",
        "no-gpu-request-on-gpu-image",
        "no-gpu-resource-on-ase",
        "eol-runtime",
        "debug-port",
    ],
)
def test_validate_names_the_rule_and_the_fix(
    built: dict[str, dict[str, Any]],
    name: str,
    change: Callable[[dict[str, Any]], None],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = copy.deepcopy(built[name])
    change(broken)
    path = tmp_path / f"deployment.{name.split('-')[0]}.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    assert mf.main(["validate", str(path)]) == 1
    line = next(ln for ln in capsys.readouterr().out.splitlines() if expected in ln)
    fixes = (
        "drop DeviceRequests",
        "needs [{",
        'request "nvidia.com/gpu"',
        "EDGE_RUNTIME_TAG=1.6",
        '"HostPort": "5678"',
    )
    assert any(fix in line for fix in fixes), line


def test_runtime_support_ends_on_its_date_and_a_newer_release_only_warns(built: dict[str, dict[str, Any]]) -> None:
    manifest = copy.deepcopy(built["docker"])
    _runtime("1.5")(manifest)
    assert mf.validate_manifest(manifest, "docker", dt.date(2026, 11, 10)) == []  # the last supported day
    agent, hub = mf.validate_manifest(manifest, "docker", dt.date(2026, 11, 11))
    assert (agent.rule, hub.rule) == ("runtime/end-of-support", "runtime/end-of-support")
    assert hub.place.endswith("edgeHub.settings.image")
    problem = agent
    assert "IoT Edge 1.5 LTS reached its end of support on 2026-11-10" in problem.message
    assert "IoT Edge 1.6 (supported to 2028-11-14)" in problem.message
    _runtime("1.7")(manifest)
    found = mf.check_manifest(manifest, "docker", TODAY)
    runtime_warnings = [w for w in found.warnings if w.rule.startswith("runtime/")]
    assert found.problems == [] and [w.rule for w in runtime_warnings] == ["runtime/unknown-version"] * 2
    assert "newer than the support table" in runtime_warnings[0].message


def test_validate_strict_fails_on_the_untouched_env_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given `cp .env.example .env` and nothing else, `make config validate` passes with warnings, registry and
    # password first, and `validate --strict` (make deploy-check) fails on them.
    env = tmp_path / ".env"
    shutil.copy(mf.ENV_EXAMPLE, env)
    assert mf.main(["config", "--env", str(env), "--out", str(tmp_path / "config")]) == 0
    assert "warning: still the .env.example placeholder: CONTAINER_REGISTRY_SERVER" in capsys.readouterr().out
    files = [str(f) for f in sorted((tmp_path / "config").glob("*.json"))]
    assert mf.main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert "ok, 3 warning(s)" in out
    assert mf.main(["validate", "--strict", *files]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("deployment.docker.json")]
    assert [ln.split(": ")[2] for ln in lines[:3]] == [
        "placeholder/registry-server",
        "placeholder/registry-password",
        "placeholder/registry-username",
    ]
    assert "set CONTAINER_REGISTRY_PASSWORD in .env" in lines[1] and "replace-with" not in lines[1]
    assert lines[-1] == "deployment.docker.json: FAILED, 3 problem(s) (target docker)"


def test_a_filled_in_env_passes_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "CONTAINER_REGISTRY_SERVER=contoso.azurecr.io\nCONTAINER_REGISTRY_USERNAME=contoso\n"
        "CONTAINER_REGISTRY_PASSWORD='pa$$word # not a comment'  # the real one lives in a vault\n",
        encoding="utf-8",
    )
    assert mf.main(["config", "--env", str(env), "--out", str(tmp_path / "config")]) == 0
    files = [str(f) for f in sorted((tmp_path / "config").glob("*.json"))]
    assert mf.main(["validate", "--strict", *files]) == 0
    out = capsys.readouterr().out
    assert "pa$$word" not in out and "warning" not in out.split("wrote", 1)[1]
    manifest = json.loads((tmp_path / "config" / "deployment.docker.json").read_text())
    registry = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]
    assert registry["registryCredentials"]["registry"]["password"] == "pa$$word # not a comment"


def test_env_files_are_read_by_python_dotenv(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# comment\nA=v  # a note\nexport B=\"quoted # kept\"\nC='${A}'\nD=\nE\n  F = spaced  \n", encoding="utf-8"
    )
    assert mf.read_env_file(env) == {"A": "v", "B": "quoted # kept", "C": "${A}", "D": "", "F": "spaced"}


def test_config_writes_a_cpu_deployment_without_any_gpu_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A CPU-only deployment for a plain Ubuntu IoT Edge host: no DeviceRequests, no nvidia.com/gpu.
    out_dir = tmp_path / "config"
    assert mf.main(["config", "--platform", "amd64", "--env", str(mf.ENV_EXAMPLE), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "deployment.docker.json (image edge-inference:0.1.0-amd64: CPU image, no GPU requested)" in out
    for path in out_dir.glob("*.json"):
        text = path.read_text()
        assert "DeviceRequests" not in text and "nvidia.com/gpu" not in text, path.name
    assert mf.main(["validate", *map(str, sorted(out_dir.glob("*.json")))]) == 0


# ------------------------------------------------------------------------------------------ contract with the code


def _template_module(target: str) -> dict[str, Any]:
    return _template(target)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]  # type: ignore[no-any-return]


@pytest.mark.parametrize("target", sorted(mf.TARGETS))
def test_templates_name_exactly_what_the_code_reads_and_sends(target: str) -> None:
    template = _template(target)
    # env vars: exactly settings.ENV_VARS, each from its .env placeholder
    env = _template_module(target)["env"]
    assert list(env) == [v.name for v in ENV_VARS]
    assert all(env[v.name] == {"value": f"${{{v.name}}}"} for v in ENV_VARS)
    # twin: exactly TWIN_PROPERTIES, with the code's defaults
    desired = template["modulesContent"][MODULE]["properties.desired"]
    assert set(desired) == set(TWIN_PROPERTIES)
    assert desired == TwinSettings().as_twin()
    # outputs and inputs named by the routes
    routes = [
        r["route"] if isinstance(r, dict) else r
        for r in template["modulesContent"]["$edgeHub"]["properties.desired"]["routes"].values()
    ]
    outputs = {m for r in routes for m in re.findall(rf"/messages/modules/{MODULE}/outputs/(\w+)", r)}
    inputs = {m for r in routes for m in re.findall(rf"/modules/{MODULE}/inputs/(\w+)", r)}
    assert outputs == set(CODE_OUTPUTS)
    assert inputs == set(CODE_INPUTS)
    assert set(mf.OUTPUTS) == set(CODE_OUTPUTS) and set(mf.INPUTS) == set(CODE_INPUTS)


def test_env_example_is_generated_from_env_vars_and_up_to_date() -> None:
    text = mf.ENV_EXAMPLE.read_text(encoding="utf-8")
    assert text == mf.render_env_example(), "run: python -m tools.manifest env-example"
    names = set(mf.read_env_file(mf.ENV_EXAMPLE))
    assert {v.name for v in ENV_VARS} <= names
    used = {
        n for t in mf.TARGETS.values() for n in mf.PLACEHOLDER.findall(t.read_text()) if not n.startswith("MODULES.")
    }
    assert used <= names, sorted(used - names)


# ------------------------------------------------------------------------------------------ images


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_module_json_platforms_have_their_dockerfiles() -> None:
    spec = json.loads((MODULE_DIR / "module.json").read_text())["image"]
    assert spec["repository"] == "${CONTAINER_REGISTRY_SERVER}/edge-inference"
    platforms = spec["tag"]["platforms"]
    assert set(platforms) == {"amd64", "amd64.gpu", "amd64.debug", "arm64v8"}
    assert sorted(MODULE_DIR / p for p in platforms.values()) == DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[d.name for d in DOCKERFILES])
def test_dockerfile_structure(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    kinds = [k for k, _ in steps]
    base = next(a for k, a in steps if k == "FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base  # pinned tag
    user = [a for k, a in steps if k == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0"), user  # non-root
    entry = next(a for k, a in steps if k == "ENTRYPOINT")
    assert json.loads(entry)[:1] == ["python"], entry  # exec form
    health = next(a for k, a in steps if k == "HEALTHCHECK")
    assert "/health" in health and "CMD [" in health
    assert any(k == "ENV" and "PYTHONUNBUFFERED=1" in a for k, a in steps)
    copies = [a for k, a in steps if k == "COPY"]
    req = next(i for i, a in enumerate(copies) if "requirements" in a)
    code = next(i for i, a in enumerate(copies) if "edge_inference/" in a)
    model = next(i for i, a in enumerate(copies) if a.startswith("models/"))
    assert req < model < code == len(copies) - 1  # requirements first, code last
    assert kinds.index("USER") > kinds.index("RUN")  # installs run as root, the module does not
    # (the optional TensorRT layer is pinned by version only: its wheels are on NVIDIA's index, tests/test_gpu_image.py)
    installs = [a for k, a in steps if k == "RUN" and "pip install" in a and "requirements-trt.txt" not in a]
    assert installs and all("--require-hashes" in a and ".lock" in a for a in installs), installs
    if dockerfile.name.endswith(".gpu"):
        assert "requirements-gpu.lock" in copies[req]
        assert "preload_dlls" in dockerfile.read_text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[d.name for d in DOCKERFILES])
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install -r requirements-dev.txt)")
    done = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(30)
def test_docker_sh_says_so_and_exits_1_without_an_engine() -> None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0:
        pytest.skip("a Docker engine answers here")
    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "docker.sh"), "build"], capture_output=True, text=True, timeout=25
    )
    assert done.returncode == 1
    assert "docker" in done.stderr.lower() and ("engine" in done.stderr or "not installed" in done.stderr)


# Per Dockerfile: (uv's --python-platform, the locks it installs, the ONNX Runtime package it must get).
RESOLVE = {
    "Dockerfile.amd64": ("x86_64-manylinux_2_28", ["requirements.lock"], "onnxruntime-gpu"),
    "Dockerfile.amd64.gpu": (
        "x86_64-manylinux_2_28",
        ["requirements-gpu.lock", "requirements.lock"],
        "onnxruntime-gpu",
    ),
    "Dockerfile.amd64.debug": (
        "x86_64-manylinux_2_28",
        ["requirements.lock", "requirements-debug.lock"],
        "onnxruntime-gpu",
    ),
    "Dockerfile.arm64v8": ("aarch64-manylinux_2_28", ["requirements.lock"], "onnxruntime"),
}
LOCKS = {
    MODULE_DIR / "requirements.lock": MODULE_DIR / "requirements.txt",
    MODULE_DIR / "requirements-gpu.lock": MODULE_DIR / "requirements-gpu.txt",
    MODULE_DIR / "requirements-debug.lock": MODULE_DIR / "requirements-debug.txt",
    ROOT / "requirements-dev.lock": ROOT / "requirements-dev.txt",
}


def _pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (markers and hashes aside), names normalised."""
    text = path.read_text(encoding="utf-8")
    return {
        re.sub(r"[-_.]+", "-", m[1]).lower(): m[2]
        for m in re.finditer(r"^([A-Za-z0-9][\w.-]*)==([^\s;\\]+)", text, re.M)
    }


def test_every_requirements_file_a_dockerfile_installs_is_checked() -> None:
    for dockerfile in DOCKERFILES:
        copied = " ".join(a for k, a in _instructions(dockerfile) if k == "COPY")
        assert set(re.findall(r"(requirements[\w.-]*\.lock)", copied)) == set(RESOLVE[dockerfile.name][1])
        # locks only; but the optional TensorRT layer, whose wheels are on NVIDIA's index (tests/test_gpu_image.py)
        assert set(re.findall(r"requirements[\w.-]*\.txt", copied)) <= {"requirements-trt.txt"}, dockerfile.name


def test_locks_are_complete_hashed_and_agree_with_the_pins() -> None:
    # Every line of a lock pins one version with at least one sha256; every direct pin is locked at its version;
    # the dev lock carries the runtime packages at the runtime lock's versions.
    for lock, source in LOCKS.items():
        text = lock.read_text(encoding="utf-8")
        assert text.startswith("# This file was autogenerated by uv via the following command:\n#    make lock\n")
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2].strip())
        assert entries and all(re.search(r"==\S+.*--hash=sha256:[0-9a-f]{64}", e, re.S) for e in entries), lock.name
        locked = _pins(lock)
        direct = _pins(source)
        assert all(locked.get(name) == version for name, version in direct.items()), (lock.name, direct, locked)
    runtime, dev = _pins(MODULE_DIR / "requirements.lock"), _pins(ROOT / "requirements-dev.lock")
    assert {k: dev.get(k) for k in runtime} == runtime
    assert "pip" not in dev  # the venv's own pip serves pip-audit; the lock never up- or downgrades it


def test_onnx_runtime_is_chosen_by_platform_marker() -> None:
    # GPU build (it carries the CPU provider too) on Linux x86-64; the CPU build on macOS and Linux arm64.
    text = (MODULE_DIR / "requirements.lock").read_text(encoding="utf-8")
    assert "onnxruntime-gpu==1.26.0 ; platform_machine == 'x86_64' and sys_platform == 'linux'" in text
    assert "onnxruntime==1.26.0 ; platform_machine != 'x86_64' or sys_platform != 'linux'" in text


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("dockerfile", sorted(RESOLVE), ids=sorted(RESOLVE))
def test_dockerfile_locks_resolve_for_its_platform(dockerfile: str, tmp_path: Path) -> None:
    """uv installs each image's locks for its platform (a dry run: wheels exist, hashes and markers fit)."""
    platform, locks, onnxruntime = RESOLVE[dockerfile]
    uv = Path(sys.executable).parent / "uv"
    args = [a for lock in locks for a in ("-r", str(MODULE_DIR / lock))]
    command = [str(uv), "pip", "install", "--dry-run", "--require-hashes", "--python-platform", platform]
    done = subprocess.run(
        [*command, "--python-version", "3.11", "--target", str(tmp_path / "target"), *args],
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    would = dict(re.findall(r"^ \+ ([\w.-]+)==(\S+)$", done.stderr, re.M))
    assert would.get(onnxruntime) == "1.26.0", done.stderr[-3000:]
    assert ("onnxruntime-gpu" in would) == (onnxruntime == "onnxruntime-gpu")
    if dockerfile.endswith(".gpu"):
        assert would["nvidia-cudnn-cu12"].startswith("9.")
        assert all(would[p].startswith("12.") for p in ("nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12"))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_dev_lock_installs_in_a_clean_venv(tmp_path: Path) -> None:
    """`make install`'s step for real: a new venv, pip --require-hashes on requirements-dev.lock, then the
    packages import and the module's settings load."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--require-hashes"]
    done = subprocess.run(
        [*pip, "-r", str(ROOT / "requirements-dev.lock")],
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    check = "import onnxruntime, cv2, azure.iot.device, dotenv, pytest; import edge_inference.settings as s; s.read_settings({})"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(MODULE_DIR)}
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "-c", check], capture_output=True, text=True, timeout=120, env=env
    )
    assert ran.returncode == 0, ran.stderr[-2000:]

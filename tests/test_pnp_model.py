"""The IoT Plug and Play model (DTDL v2) against the code: writable properties, telemetry, commands, model ID.

Given modules/edge-inference/pnp/dtmi/edgeinference/edgeinference-1.json, its writable properties are exactly the
twin properties the module validates (the model rollout's `model` and `candidate` included), its commands exactly
the direct methods it serves, every top-level field of every message the code builds (per frame, alert, health
alarm, summary, a candidate's evaluation) is a declared telemetry whose schema the real value fits, the reported
`runtime` of a real ONNX Runtime session fits its schema, and the module announces the interface's id (the live
check against the SDK is in test_iot_e2e; the rollout's acknowledgements are checked in test_rollout_e2e).
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from edge_inference.entities import (
    Classification,
    ClassScore,
    Detection,
    FrameResult,
    Mask,
    ModelInfo,
    RotatedBox,
)
from edge_inference.iot.client import PNP_MODEL_ID
from edge_inference.iot.methods import METHODS
from edge_inference.iot.twin import validate_desired
from edge_inference.ops.alarms import ActiveAlarm, build_health_message
from edge_inference.ops.live_settings import TWIN_PROPERTIES, TwinSettings
from edge_inference.ops.telemetry import SummaryWindow, build_alert_message, build_detection_message
from edge_inference.rollout.spec import MODEL_PROPERTIES
from tests.dtdl import MAX_DEPTH, MODEL_FILE, conformance, contents, depth, interface

pytestmark = pytest.mark.timeout(60)

DTMI = re.compile(
    r"^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]*$"
)
# Top-level body fields the interface cannot declare (one schema per name in DTDL), by message type: a result's
# `model` object shares its name with the writable property `model` (the model rollout), which wins.
NOT_DECLARED = {
    "summary": {"detections", "model"},
    "health": {"details"},
    "detection": {"model"},
    "alert": {"model"},
    "cut": {"model"},
}


def _task_results() -> list[FrameResult]:
    """A result of each other task: segment (a mask), pose (keypoints), obb (a rotated box), classify."""
    mask = Mask((((1.0, 2.0), (30.0, 2.0), (30.0, 40.0)),), 580)
    pose = ((10.0, 12.5, 0.9), (11.0, 14.0, 0.2))
    dets = (
        Detection("scratch", 0, 0.9, (1.0, 2.0, 30.5, 40.0), mask=mask),
        Detection("person", 0, 0.8, (1.0, 2.0, 30.5, 40.0), keypoints=pose),
        Detection("part", 1, 0.7, (1.0, 2.0, 30.5, 40.0), obb=RotatedBox(15.0, 20.0, 20.0, 10.0, 0.5)),
    )
    results = [replace(_result(), detections=(d,)) for d in dets]
    top = ClassScore("ng", 1, 0.97)
    classified = Classification(top, (top, ClassScore("ok", 0, 0.03)))
    return [*results, replace(_result(), detections=(), classification=classified)]


def _result(*, error: dict[str, str] | None = None, n: int = 2) -> FrameResult:
    detections = tuple(Detection("scratch", 0, 0.9 - i / 10, (1.0, 2.0, 30.5, 40.0)) for i in range(n))
    return FrameResult(
        "line1/cam2/0001.jpg",
        "f1",
        1920,
        1080,
        "ab" * 32,
        ModelInfo("demo", "1.0.0", "CPUExecutionProvider", "cd" * 32),
        0.5,
        0.45,
        detections if error is None else (),
        {"decode": 3.1, "total": 9.9},
        "2026-11-30T10:00:00.123Z",
        error,
    )


def _evaluation() -> dict[str, Any]:
    """A real candidate evaluation: the demo model judged against itself on one frame."""
    from edge_inference.entities import Letterbox
    from edge_inference.ops.live_settings import LiveSettings, TwinSettings
    from edge_inference.rollout.shadow import CandidateShadow, ShadowFrame, ShadowInbox
    from edge_inference.settings import read_settings
    from edge_inference.vision.model import OnnxModel
    from tests.rollout_support import ListSink

    settings = read_settings({"EXECUTION_PROVIDERS": "cpu"})
    model = OnnxModel(settings)
    sink = ListSink()
    inbox = ShadowInbox()
    shadow = CandidateShadow(settings, inbox, lambda: True, sink, LiveSettings(TwinSettings()))
    with shadow:
        shadow.begin(model, model.describe(), model, 1.0, None)
        tensor = np.full((1, 3, *model.input_hw), 0.5, np.float32)
        box = Letterbox(1.0, 0.0, 0.0, model.input_hw[1], model.input_hw[0])
        inbox.offer(ShadowFrame("ff" * 16, tensor, box, None, (), 3.0, TwinSettings()))
        deadline = time.monotonic() + 10
        while (shadow.stats() or {}).get("framesCompared", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        shadow.end("a test")
    assert sink.sent and sink.sent[-1].output == "modelEvaluation"
    return sink.sent[-1].body


def _messages() -> dict[str, list[dict[str, Any]]]:
    alarm = ActiveAlarm("outputShareLow", "free 10 MB", "critical", {"freeMb": 10}, "2026-11-30T10:00:00.000Z")
    window = SummaryWindow(start=1796032800.0, seconds=60.0)
    window.add(_result())
    window.add(_result(error={"code": "corrupt_image", "message": "cannot decode"}))
    return {
        "detection": [
            build_detection_message(_result()).body,
            build_detection_message(_result(error={"code": "empty_file", "message": "0 bytes"})).body,
            *(build_detection_message(r).body for r in _task_results()),
        ],
        "alert": [build_alert_message(_result(), ["scratch"]).body],
        "cut": [build_detection_message(_result(n=5000)).body],  # over 256 KB: cut, with truncated: true
        "health": [
            build_health_message(alarm, True, "2026-11-30T10:00:01.000Z").body,
            build_health_message(alarm, False, "2026-11-30T10:05:00.000Z").body,
        ],
        "summary": [window.message().body],
        "evaluation": [_evaluation()],
    }


def test_the_interface_is_dtdl_v2_with_the_id_the_module_announces() -> None:
    doc = interface()
    assert doc["@context"] == "dtmi:dtdl:context;2" and doc["@type"] == "Interface"
    assert DTMI.match(doc["@id"]) and doc["@id"] == PNP_MODEL_ID
    # the model repository layout (dtmi/<segments>/<last>-<version>.json), so IoT Explorer can load the folder
    path, version = doc["@id"].removeprefix("dtmi:").lower().split(";")
    assert MODEL_FILE.as_posix().endswith(
        f"pnp/dtmi/{'/'.join(path.split(':')[:-1])}/{path.split(':')[-1]}-{version}.json"
    )
    names = [c["name"] for c in doc["contents"]]
    assert len(names) == len(set(names))
    deepest = {c["name"]: depth(c["schema"]) for c in doc["contents"] if "schema" in c}
    assert max(deepest.values()) <= MAX_DEPTH, deepest


def test_writable_properties_are_the_twin_properties_and_fit_their_schemas() -> None:
    writable = contents("Property", writable=True)
    assert set(writable) == set(TWIN_PROPERTIES) | set(MODEL_PROPERTIES)
    changed, _acks = validate_desired(
        {"classes": ["scratch"], "telemetry": {"mode": "summary", "summaryIntervalSeconds": 30}, "$version": 2},
        TwinSettings(),
    )
    for twin in (TwinSettings().as_twin(), changed.as_twin()):
        for name, value in twin.items():
            assert conformance(value, writable[name]["schema"], name) == []


def test_commands_are_the_direct_methods() -> None:
    commands = contents("Command")
    assert set(commands) == set(METHODS)
    assert [f["name"] for f in commands["reprocess"]["request"]["schema"]["fields"]] == ["path"]


def test_every_field_of_every_message_is_declared_telemetry_that_fits() -> None:
    telemetry = contents("Telemetry")
    used: set[str] = set()
    for kind, bodies in _messages().items():
        for body in bodies:
            for key, value in body.items():
                if key in NOT_DECLARED.get(kind, set()):
                    continue
                assert key in telemetry, f"{kind} message field {key!r} is not in the DTDL interface"
                assert conformance(value, telemetry[key]["schema"], f"{kind}.{key}") == []
                used.add(key)
    assert set(telemetry) == used  # nothing declared that the module never sends


def test_runtime_of_a_real_session_fits_the_read_only_property(tmp_path: Any) -> None:
    import importlib.metadata as md

    from edge_inference.control.commands import runtime_report
    from edge_inference.settings import read_settings
    from edge_inference.vision.model import OnnxModel

    model = OnnxModel(read_settings({"EXECUTION_PROVIDERS": "cpu", "STATE_DIR": str(tmp_path)}))
    rollout = {"state": "fetching", "since": "2026-11-30T10:00:00.000Z", "bytes": 10, "totalBytes": 20}
    runtime = runtime_report(model, {**rollout, "target": {"name": "d", "version": "7", "sha256": "ab" * 32}})
    assert runtime["packages"]["numpy"] == md.version("numpy")
    properties = contents("Property", writable=False)
    assert set(properties) == {"runtime", "stats"}
    assert conformance(runtime, properties["runtime"]["schema"], "runtime") == []

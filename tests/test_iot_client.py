"""IoTEdgeClient through the real azure-iot-device SDK and a real mosquitto broker (tools/edgehub_rig).

Only ModuleControl is faked. Each test gets its own rig on a loopback address from 127.0.0.5..9 (the rig's
own tests take the low ones), a temp STATE_DIR, and a client with a 5 s IoT timeout.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_inference.iot.client import IoTEdgeClient
from edge_inference.iot.outbox import open_outbox
from edge_inference.ops.alarms import OUTBOX_OVERFLOW, AlarmRegistry
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.telemetry import OutgoingMessage, build_detection_message
from edge_inference.settings import EDGEHUB_VARIABLES, IOTEDGE_VARIABLES, Settings
from tests.iot_fakes import FakeControl, ListSink, make_result

HOSTS = ("127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9")
EDGE_VARS = IOTEDGE_VARIABLES + EDGEHUB_VARIABLES


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(0.05)


class Module:
    """What a test needs around one IoTEdgeClient: its outbox (built first, as app.py does) and alarm registry."""

    def __init__(
        self,
        state_dir: Path,
        timeout: float = 5.0,
        client_factory: Callable[[], Any] | None = None,
        outbox_max_messages: int = 1000,
    ) -> None:
        self.settings = Settings(
            state_dir=state_dir, iot_timeout_seconds=timeout, outbox_max_messages=outbox_max_messages
        )
        self.live = LiveSettings(TwinSettings.from_boot(self.settings))
        self.control = FakeControl()
        self.metrics = MetricsRegistry()
        self.outbox = open_outbox(self.settings, self.metrics)
        self.alerts = ListSink()
        self.alarms = AlarmRegistry(self.alerts, self.metrics)
        self.client = IoTEdgeClient(
            self.settings,
            self.live,
            self.control,
            self.metrics,
            self.outbox,
            self.alarms,
            runtime_info=lambda: {"provider": "CPUExecutionProvider", "model": {"name": "demo-defects"}},
            stats=lambda: {"frames": 0},
            **({"client_factory": client_factory} if client_factory else {}),
        )
        self.stopped = False

    def stop(self, timeout: float = 5.0) -> None:
        if not self.stopped:
            self.stopped = True
            self.client.stop(timeout)
            self.outbox.close()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from tools.edgehub_rig import EdgeHubRig, pick_loopback_host

    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    with EdgeHubRig(tmp_path / "rig", host=pick_loopback_host(HOSTS)) as r:
        for name in EDGE_VARS:
            monkeypatch.delenv(name, raising=False)
        for name, value in r.env().items():
            monkeypatch.setenv(name, value)
        yield r


@pytest.fixture
def make_module(tmp_path: Path) -> Iterator[Callable[[], Module]]:
    modules: list[Module] = []

    def make() -> Module:
        module = Module(tmp_path / "state")
        modules.append(module)
        return module

    yield make
    for module in modules:
        module.stop()
    leaked = [t.name for t in threading.enumerate() if t.name == "iot-edge-client" and t.is_alive()]
    assert not leaked, f"owner threads left running: {leaked}"


def message(i: int) -> OutgoingMessage:
    return build_detection_message(make_result(f"{i:032x}", [("scratch", 0.9), ("dent", 0.6)]))


@pytest.mark.timeout(60)
def test_twin_desired_applied_before_start_returns(
    rig: Any, make_module: Callable[[], Module], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # given desired properties set in the hub before the module starts
    version = rig.set_desired({"confidenceThreshold": 0.7, "telemetry": {"mode": "summary"}, "colour": "red"})
    module = make_module()
    # when it starts
    assert module.client.connect(20) is True
    # then only host/device/module are logged, never the key or a SAS token
    assert "device=edge-device module=edge-inference" in caplog.text
    assert rig.module_key not in caplog.text and "SharedAccessSignature" not in caplog.text
    # then the twin is in force when start returns, and acknowledged in Plug and Play form
    assert module.live.current().confidence_threshold == 0.7
    assert module.live.current().telemetry.mode == "summary"
    reported = rig.wait_reported(lambda r: "runtime" in r and "confidenceThreshold" in r, timeout=10)
    assert reported["confidenceThreshold"] == {"value": 0.7, "ac": 200, "av": version, "ad": "applied"}
    assert reported["telemetry"]["ac"] == 200
    assert reported["colour"]["ac"] == 400
    assert reported["iouThreshold"] == {"value": 0.45, "ac": 203, "av": version, "ad": "boot value"}
    assert reported["runtime"] == {"provider": "CPUExecutionProvider", "model": {"name": "demo-defects"}}


@pytest.mark.timeout(60)
def test_full_twin_with_a_value_no_number_can_hold_still_syncs_and_sends(
    rig: Any, make_module: Callable[[], Module]
) -> None:
    # given a twin whose confidenceThreshold is 10**400 (float() raised OverflowError: every sync failed, and
    # no telemetry was sent until someone fixed the twin) beside a good iouThreshold
    version = rig.set_desired({"confidenceThreshold": 10**400, "iouThreshold": 0.3})
    module = make_module()
    # when the module starts
    assert module.client.connect(20) is True
    # then the good value is in force, the bad one is acknowledged 400 with the reason
    assert module.live.current().iou_threshold == 0.3
    assert module.live.current().confidence_threshold == 0.5
    reported = rig.wait_reported(lambda r: "confidenceThreshold" in r and "iouThreshold" in r, timeout=10)
    assert reported["confidenceThreshold"]["ac"] == 400 and reported["confidenceThreshold"]["av"] == version
    assert "expected a number" in reported["confidenceThreshold"]["ad"]
    assert reported["iouThreshold"]["ac"] == 200
    # and telemetry flows
    module.client.sink.publish(message(1))
    assert len(rig.wait_messages(1, output="detections", timeout=15)) == 1


@pytest.mark.timeout(90)
def test_patch_applied_live_and_invalid_values_refused(rig: Any, make_module: Callable[[], Module]) -> None:
    module = make_module()
    assert module.client.connect(20)
    # when the operator sets confidenceThreshold 0.8
    version = rig.set_desired({"confidenceThreshold": 0.8})
    # then it is applied live and acknowledged with the desired version
    rig.wait_reported(lambda r: r["confidenceThreshold"]["av"] == version, timeout=10)
    assert rig.reported["confidenceThreshold"] == {"value": 0.8, "ac": 200, "av": version, "ad": "applied"}
    assert module.live.current().confidence_threshold == 0.8
    for bad in (1.7, "high", None):
        # when an invalid value is set
        version = rig.set_desired({"confidenceThreshold": bad})
        # then it is refused with 400 and 0.8 stays in force
        ack = rig.wait_reported(lambda r, v=version: r["confidenceThreshold"]["av"] == v, timeout=10)[
            "confidenceThreshold"
        ]
        assert ack["ac"] == 400 and ack["value"] == 0.8 and "refused" in ack["ad"], ack
        assert module.live.current().confidence_threshold == 0.8
    assert module.metrics.twin_updates.labels(result="rejected")._value.get() >= 3


@pytest.mark.timeout(90)
def test_direct_methods_good_and_bad_payloads(rig: Any, make_module: Callable[[], Module]) -> None:
    module = make_module()
    assert module.client.connect(20)
    assert rig.invoke_method("getStatus", None) == (
        200,
        {"paused": False, "frames": 3, "provider": "CPUExecutionProvider"},
    )
    assert rig.invoke_method("pause", {}) == (200, {"paused": True})
    assert rig.invoke_method("resume", {}) == (200, {"paused": False})
    assert rig.invoke_method("reprocess", {"path": "line1/*.jpg"}) == (200, {"queued": 2})
    status, body = rig.invoke_method("reprocess", {"path": "../x.jpg"})
    assert status == 400 and "'..'" in body["error"]
    status, body = rig.invoke_method("reprocess", "line1/*.jpg")
    assert status == 400 and "JSON object" in body["error"]
    module.control.reprocess_count = 0
    assert rig.invoke_method("reprocess", {"path": "none.jpg"})[0] == 404
    assert rig.invoke_method("selfTest", None) == (200, {"passed": True, "detections": 1})
    module.control.self_test_result = {"passed": False}
    assert rig.invoke_method("selfTest", None) == (500, {"passed": False})
    status, body = rig.invoke_method("reboot", {})
    assert status == 404 and "reboot" in body["error"]
    module.control.fail_with = RuntimeError("model gone")
    status, body = rig.invoke_method("getStatus", {})
    assert status == 500 and "model gone" in body["error"]


@pytest.mark.timeout(60)
def test_file_event_input_enqueues_the_relative_path_once(rig: Any, make_module: Callable[[], Module]) -> None:
    module = make_module()
    assert module.client.connect(20)
    rig.send_input(
        "fileEvents",
        [
            {"ChangeType": "Created", "ShareRelativeFilePath": "\\line1\\cam2\\0001.jpg", "ShareName": "input"},
            {"ChangeType": "Created", "ShareRelativeFilePath": "\\..\\escape.jpg", "ShareName": "input"},
        ],
    )
    assert module.control.enqueued.wait(10)
    time.sleep(0.5)  # nothing else arrives
    assert module.control.calls_named("enqueue_path") == [("line1/cam2/0001.jpg", "fileEvent")]


@pytest.mark.timeout(60)
def test_outbox_messages_arrive_on_detections_in_form(rig: Any, make_module: Callable[[], Module]) -> None:
    module = make_module()
    assert module.client.connect(20)
    sent = [message(i) for i in range(3)]
    for m in sent:
        module.client.sink.publish(m)
    got = rig.wait_messages(3, output="detections", timeout=15)
    assert [g.message_id for g in got] == [m.message_id for m in sent]
    for g, m in zip(got, sent, strict=True):
        assert g.content_type == "application/json"
        assert g.content_encoding == "utf-8"
        assert g.properties == m.properties
        assert g.json() == m.body
    wait_for(lambda: module.client.outbox.depth() == 0, 5, "outbox empty")
    assert module.metrics.messages_sent.labels(output="detections")._value.get() == 3


@pytest.mark.timeout(120)
def test_an_outbox_over_its_bound_raises_outbox_overflow_until_it_drains(rig: Any, tmp_path: Path) -> None:
    # given a client whose outbox holds 4 messages, and edgeHub gone
    module = Module(tmp_path / "state", outbox_max_messages=4)
    try:
        assert module.client.connect(20)
        rig.stop_broker()
        # when 6 messages are published, the oldest are dropped at the bound: the alarm is raised
        for i in range(6):
            module.client.sink.publish(message(i))
        wait_for(lambda: OUTBOX_OVERFLOW in module.alarms.active(), 10, "outboxOverflow raised")
        assert module.alarms.active()[OUTBOX_OVERFLOW]["details"]["reason"] == "count"
        assert module.client.outbox.dropped()["count"] == 2
        # then, once edgeHub is back and the outbox drains below half its bound, it is cleared
        rig.start_broker()
        wait_for(lambda: module.client.outbox.depth() == 0, 60, "outbox drained")
        wait_for(lambda: OUTBOX_OVERFLOW not in module.alarms.active(), 10, "outboxOverflow cleared")
        assert [m.properties["active"] for m in module.alerts.messages] == ["true", "false"]
    finally:
        module.stop()


@pytest.mark.timeout(120)
def test_broker_outage_loses_nothing(rig: Any, make_module: Callable[[], Module]) -> None:
    module = make_module()
    assert module.client.connect(20)
    module.client.sink.publish(message(0))
    rig.wait_messages(1, output="detections", timeout=15)
    # given edgeHub goes away for ~20 s while frames keep being processed
    rig.stop_broker()
    ids = {message(0).message_id}
    for i in range(1, 21):
        m = message(i)
        module.client.sink.publish(m)
        ids.add(m.message_id)
        time.sleep(1.0)
    assert module.client.outbox.depth() > 0
    # when it comes back
    rig.start_broker()
    # then every message id arrives (resends are possible, losses are not)
    rig.wait_messages(1, timeout=60, predicate=lambda _m: ids <= {x.message_id for x in rig.messages("detections")})
    wait_for(lambda: module.client.outbox.depth() == 0, 20, "outbox empty")


@pytest.mark.timeout(120)
def test_restart_delivers_what_the_previous_process_left(rig: Any, make_module: Callable[[], Module]) -> None:
    # given a client stopped while edgeHub is away, with messages in its outbox
    first = make_module()
    assert first.client.connect(20)
    rig.stop_broker()
    sent = [message(i) for i in range(5)]
    for m in sent:
        first.client.sink.publish(m)
    first.stop(3)
    assert first.client.outbox.depth() == 5
    # and desired properties changed while it was down (set with the broker back but no module connected)
    rig.start_broker()
    version = rig.set_desired({"maxDetections": 50})
    rig.stop_broker()
    # when a new client on the same STATE_DIR starts while edgeHub is still away
    second = make_module()
    started = time.monotonic()
    assert second.client.connect(3) is False
    assert time.monotonic() - started < 10
    assert second.live.current().max_detections == 300  # boot value in force
    # and edgeHub comes back
    rig.start_broker()
    # then the twin is applied in the background and the previous outbox is delivered, in order
    wait_for(lambda: second.live.current().max_detections == 50, 40, "twin applied after reconnect")
    rig.wait_reported(lambda r: r["maxDetections"]["av"] == version, timeout=20)
    got = rig.wait_messages(5, output="detections", timeout=30)
    assert [g.message_id for g in got][:5] == [m.message_id for m in sent]
    wait_for(lambda: second.client.outbox.depth() == 0, 20, "outbox empty")


@pytest.mark.timeout(60)
def test_production_path_with_the_iotedge_variables(
    rig: Any, make_module: Callable[[], Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the seven IOTEDGE_* variables (workload API signs the SAS token) instead of a connection string
    for name in EDGE_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in rig.workload_env().items():
        monkeypatch.setenv(name, value)
    version = rig.set_desired({"iouThreshold": 0.3})
    module = make_module()
    # when it starts, then the twin is applied and telemetry flows
    assert module.client.connect(20) is True
    assert module.live.current().iou_threshold == 0.3
    rig.wait_reported(lambda r: r["iouThreshold"]["av"] == version, timeout=10)
    module.client.sink.publish(message(1))
    assert rig.wait_messages(1, output="detections", timeout=15)[0].message_id == message(1).message_id


class HangingSdk:
    """An SDK client whose connect never returns (edgeHub accepting TCP but never answering)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.shut_down = False

    def connect(self) -> None:
        self.release.wait(60)

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.mark.timeout(30)
def test_a_hanging_sdk_call_is_cut_at_the_iot_timeout(tmp_path: Path) -> None:
    # given an SDK whose connect hangs, and a 0.5 s IoT timeout
    sdk = HangingSdk()
    module = Module(tmp_path / "state", timeout=0.5, client_factory=lambda: sdk)
    try:
        # when the client starts, then start returns after its timeout with the boot values in force
        started = time.monotonic()
        assert module.client.connect(1.5) is False
        assert time.monotonic() - started < 3
        assert module.live.current() == TwinSettings.from_boot(module.settings)
        module.client.sink.publish(message(1))  # the pipeline never waits on edgeHub
        assert module.client.outbox.depth() == 1
        # and stop returns promptly, keeping the message for the next start
        started = time.monotonic()
        module.stop(2)
        assert time.monotonic() - started < 4
        assert sdk.shut_down
    finally:
        sdk.release.set()
    reopened = Module(tmp_path / "state", client_factory=lambda: sdk)
    assert reopened.client.outbox.depth() == 1
    reopened.outbox.close()

"""The edgeHub rig against the real azure-iot-device SDK: MQTT over TLS to a real mosquitto, hub emulator behind it."""

from __future__ import annotations

import json
import queue
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.iot.device import IoTHubModuleClient, Message, MethodRequest, MethodResponse

from edge_inference.settings import EDGEHUB_VARIABLES, IOTEDGE_VARIABLES
from tools.edgehub_rig import BrokerError, CapturedMessage, EdgeHubRig

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed (make apt-deps)")

EDGE_VARIABLES = EDGEHUB_VARIABLES + IOTEDGE_VARIABLES
RETRY_SECONDS = 1  # the SDK's connection_retry_interval (default 10 s) for the outage test


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[EdgeHubRig]:
    with EdgeHubRig.on_free_loopback(tmp_path / "rig") as r:
        yield r


def _client(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **kwargs: Any) -> IoTHubModuleClient:
    for name in EDGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return IoTHubModuleClient.create_from_edge_environment(**kwargs)


@pytest.fixture
def module_client(rig: EdgeHubRig, monkeypatch: pytest.MonkeyPatch) -> Iterator[IoTHubModuleClient]:
    client = _client(monkeypatch, rig.env(), connection_retry_interval=RETRY_SECONDS)
    try:
        yield client
    finally:
        client.shutdown()


@pytest.mark.timeout(30)
def test_twin_get_reported_and_desired_patch(rig: EdgeHubRig, module_client: IoTHubModuleClient) -> None:
    # given desired properties set before the module connects
    rig.set_desired({"confidenceThreshold": 0.6, "telemetry": {"mode": "perFrame"}})
    patches: queue.Queue[dict[str, Any]] = queue.Queue()
    module_client.on_twin_desired_properties_patch_received = patches.put
    module_client.connect()

    # when the module reads its twin, then it sees the rig's desired document
    twin = module_client.get_twin()
    assert twin["desired"] == rig.desired
    assert twin["desired"]["confidenceThreshold"] == 0.6

    # when it reports, then the rig merges the patch and bumps the version
    before = rig.reported["$version"]
    module_client.patch_twin_reported_properties({"confidenceThreshold": {"value": 0.6, "ac": 200, "av": 2}})
    reported = rig.wait_reported(lambda r: r["confidenceThreshold"]["ac"] == 200, timeout=5)
    assert reported["$version"] == before + 1
    module_client.patch_twin_reported_properties({"runtime": {"provider": "CPUExecutionProvider"}})
    reported = rig.wait_reported(lambda r: "runtime" in r, timeout=5)
    assert reported["confidenceThreshold"]["value"] == 0.6  # merged, not replaced

    # when the operator patches desired, then the module's handler gets the patch with its $version (the SDK's
    # ensure_desired_properties may first hand it the whole desired document as an artificial patch)
    version = rig.set_desired({"confidenceThreshold": 0.7})
    patch = patches.get(timeout=10)
    if patch != {"confidenceThreshold": 0.7, "$version": version}:
        assert patch == twin["desired"]
        patch = patches.get(timeout=10)
    assert patch == {"confidenceThreshold": 0.7, "$version": version}
    assert rig.desired["telemetry"] == {"mode": "perFrame"}

    # and the broker saw the SDK's username for this module
    (connection,) = rig.connections()
    assert connection.client_id == "edge-device/edge-inference"
    assert connection.username is not None
    assert connection.username.startswith(f"{rig.iothub_hostname}/edge-device/edge-inference/?api-version=")


@pytest.mark.timeout(15)
def test_wait_reported_times_out_with_last_document(rig: EdgeHubRig) -> None:
    with pytest.raises(TimeoutError, match=r"\$version"):
        rig.wait_reported(lambda r: r["never"] is True, timeout=0.3)


@pytest.mark.timeout(30)
def test_direct_method_roundtrip(rig: EdgeHubRig, module_client: IoTHubModuleClient) -> None:
    requests: list[MethodRequest] = []

    def on_method(request: MethodRequest) -> None:
        requests.append(request)
        status, payload = (
            (200, {"state": "running", "echo": request.payload}) if request.name == "getStatus" else (404, "no")
        )
        module_client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))

    module_client.on_method_request_received = on_method
    module_client.connect()

    status, payload = rig.invoke_method("getStatus", {"verbose": True})
    assert (status, payload) == (200, {"state": "running", "echo": {"verbose": True}})
    assert rig.invoke_method("explode", None) == (404, "no")
    assert [r.name for r in requests] == ["getStatus", "explode"]


@pytest.mark.timeout(30)
def test_output_messages_are_captured_decoded(rig: EdgeHubRig, module_client: IoTHubModuleClient) -> None:
    module_client.connect()
    message = Message(
        '{"count": 1, "labels": ["scratch"]}',
        message_id="frame-0001-r1",
        content_encoding="utf-8",
        content_type="application/json",
    )
    message.custom_properties.update({"messageType": "detection", "labels": "scratch, dent/2", "detectionCount": "1"})
    module_client.send_message_to_output(message, "detections")
    module_client.send_message_to_output(Message("alarm"), "alerts")

    (got,) = rig.wait_messages(1, output="detections", timeout=10)
    assert got.output == "detections"
    assert got.message_id == "frame-0001-r1"
    assert (got.content_type, got.content_encoding) == ("application/json", "utf-8")
    assert got.properties == {"messageType": "detection", "labels": "scratch, dent/2", "detectionCount": "1"}
    assert got.json() == {"count": 1, "labels": ["scratch"]}
    rig.wait_messages(1, output="alerts", predicate=lambda m: m.body == b"alarm")
    assert [m.output for m in rig.messages()] == ["detections", "alerts"]
    rig.clear_messages()
    assert rig.messages() == []


@pytest.mark.timeout(30)
def test_input_message_reaches_the_module(rig: EdgeHubRig, module_client: IoTHubModuleClient) -> None:
    received: queue.Queue[Message] = queue.Queue()
    module_client.on_message_received = received.put
    module_client.connect()
    events = [{"ChangeType": "Created", "ShareRelativeFilePath": "\\line1\\0001.jpg", "ShareName": "input"}]

    rig.send_input("fileEvents", events, {"source": "ase share"})

    got = received.get(timeout=10)
    assert got.input_name == "fileEvents"
    assert got.content_type == "application/json"
    assert got.custom_properties == {"source": "ase share"}
    assert (
        got.data
        == b'[{"ChangeType": "Created", "ShareRelativeFilePath": "\\\\line1\\\\0001.jpg", "ShareName": "input"}]'
    )


@pytest.mark.timeout(30)
def test_production_path_through_the_workload_socket(rig: EdgeHubRig, monkeypatch: pytest.MonkeyPatch) -> None:
    # given the IOTEDGE_* variables of a real IoT Edge module
    env = rig.workload_env()
    assert set(env) == {
        "IOTEDGE_WORKLOADURI",
        "IOTEDGE_DEVICEID",
        "IOTEDGE_MODULEID",
        "IOTEDGE_MODULEGENERATIONID",
        "IOTEDGE_IOTHUBHOSTNAME",
        "IOTEDGE_GATEWAYHOSTNAME",
        "IOTEDGE_APIVERSION",
    }
    assert env["IOTEDGE_WORKLOADURI"].startswith("unix:///")
    # when the module client is created from them and connects
    client = _client(monkeypatch, env)
    try:
        client.connect()
        client.patch_twin_reported_properties({"hello": "edge"})
        rig.wait_reported(lambda r: r.get("hello") == "edge", timeout=10)
    finally:
        client.shutdown()
    # then it fetched the trust bundle and signed its SAS token through the socket with the module key
    requests = rig.workload_requests()
    assert requests[0].path == "/trust-bundle" and requests[0].status == 200
    signs = [r for r in requests if r.method == "POST"]
    assert signs and all(r.status == 200 for r in signs)
    assert signs[0].module_id == "edge-inference" and signs[0].generation_id == env["IOTEDGE_MODULEGENERATIONID"]
    assert signs[0].key_id == "primary" and signs[0].algo == "HMACSHA256"
    assert signs[0].data is not None and signs[0].data.startswith(
        f"{rig.iothub_hostname}%2Fdevices%2Fedge-device%2Fmodules%2Fedge-inference\n"
    )


@pytest.mark.timeout(60)
def test_broker_restart_keeps_the_session(rig: EdgeHubRig, module_client: IoTHubModuleClient) -> None:
    received: queue.Queue[Message] = queue.Queue()
    module_client.on_message_received = received.put
    module_client.connect()
    rig.send_input("fileEvents", ["before"])
    assert received.get(timeout=10).data == b'["before"]'

    # when the broker goes away and comes back (sessions persisted)
    rig.stop_broker()
    assert rig.connected_clients() == 0
    time.sleep(0.5)
    restarted = time.monotonic()
    rig.start_broker()
    # then a message to the module's input is delivered without the module resubscribing
    rig.send_input("fileEvents", ["after"])
    assert received.get(timeout=30).data == b'["after"]'
    # and the module's output reaches the hub again
    module_client.send_message_to_output(Message("back"), "detections")
    rig.wait_messages(1, output="detections", timeout=30)
    assert time.monotonic() - restarted < 30
    assert rig.connected_clients() == 1


@pytest.mark.timeout(60)
def test_two_rigs_at_once_are_independent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # normally 127.0.0.2 and 127.0.0.3; the next free ones when another test run holds those
    with EdgeHubRig.on_free_loopback(tmp_path / "a", device_id="dev-a") as a:
        with EdgeHubRig.on_free_loopback(tmp_path / "b", device_id="dev-b") as b:
            assert a.host != b.host
            # a third broker on a taken address fails with a clear error, and leaves nothing running
            with pytest.raises(BrokerError, match="already in use"), EdgeHubRig(tmp_path / "c", host=a.host):
                pass
            clients = [_client(monkeypatch, a.env()), None]
            clients[1] = _client(monkeypatch, b.env())
            try:
                for client, name in zip(clients, "ab", strict=True):
                    assert client is not None
                    client.connect()
                    client.send_message_to_output(Message(name), "detections")
                assert [m.body for m in a.wait_messages(1)] == [b"a"]
                assert [m.body for m in b.wait_messages(1)] == [b"b"]
                a.set_desired({"only": "a"})
                assert clients[1] is not None and "only" not in clients[1].get_twin()["desired"]
            finally:
                for client in clients:
                    if client is not None:
                        client.shutdown()
            broker_b = b.broker
        assert broker_b is not None and not broker_b.running
    time.sleep(0.1)
    assert len(a.messages()) == 1 and len(b.messages()) == 1


@pytest.mark.timeout(10)
def test_simulate_summarizes_result_bodies() -> None:
    from tools.simulate import summarize_body

    def message(body: bytes) -> CapturedMessage:
        return CapturedMessage("detections", body, {}, None, "application/json", "utf-8", "t")

    result = {
        "frame": {"path": "line1/0001.jpg"},
        "count": 1,
        "thresholds": {"confidence": 0.7},
        "detections": [{"label": "scratch", "confidence": 0.934}],
    }
    assert summarize_body(message(json.dumps(result).encode())) == (
        "frame=line1/0001.jpg count=1 detections=[scratch:0.93] confidence>=0.7"
    )
    assert summarize_body(message(b"x" * 300), limit=5) == "xxxxx..."

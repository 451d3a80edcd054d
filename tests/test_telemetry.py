"""Telemetry: message form, size limit, perFrame/summary/off modes, alerts, the local sink (health alarms:
tests/test_alarms.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from azure.iot.device import Message

from edge_inference.entities import Classification, ClassScore, Detection, FrameResult, Mask
from edge_inference.ops.live_settings import LiveSettings, TelemetrySettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.publisher import LocalTelemetrySink, TelemetryPublisher
from edge_inference.ops.telemetry import (
    IOT_HUB_MESSAGE_LIMIT,
    OUTPUTS,
    OutgoingMessage,
    SummaryWindow,
    alert_labels,
    build_detection_message,
    encode_body,
    message_size,
)
from tests.iot_fakes import ListSink, make_result


class FakeWall:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def publisher(
    telemetry: TelemetrySettings | None = None, alert_classes: tuple[str, ...] = ()
) -> tuple[TelemetryPublisher, ListSink, LiveSettings, FakeWall]:
    live = LiveSettings(TwinSettings(telemetry=telemetry or TelemetrySettings(), alert_classes=alert_classes))
    sink = ListSink()
    wall = FakeWall()
    return TelemetryPublisher(sink, live, MetricsRegistry(), wall_clock=wall), sink, live, wall


def sdk_size(message: OutgoingMessage) -> int:
    """What the SDK measures before it refuses a message over 256 KB."""
    m = Message(
        encode_body(message.body),
        message_id=message.message_id,
        content_encoding="utf-8",
        content_type="application/json",
    )
    m.custom_properties = dict(message.properties)
    m.output_name = message.output
    return int(m.get_size())


@pytest.mark.timeout(10)
def test_outputs_are_the_three_routed_names() -> None:
    # the templates route each one (test_manifests checks the routes); modelEvaluation: the candidate's reports
    assert OUTPUTS == ("detections", "alerts", "modelEvaluation")


@pytest.mark.timeout(10)
def test_detection_message_body_is_the_result_schema_with_routing_properties() -> None:
    # given a frame with three detections
    result = make_result("a1" * 16, [("scratch", 0.93), ("dent", 0.61), ("scratch", 0.7)])
    # when it becomes a message
    message = build_detection_message(result)
    # then the body is the result schema, the id the frame id, and properties route without the body
    assert message.output == "detections"
    assert message.message_id == result.frame_id
    assert message.body == result.as_dict()
    assert message.properties == {
        "messageType": "detection",
        "detectionCount": "3",
        "hasDetections": "true",
        "maxConfidence": "0.93",
        "labels": "dent,scratch",
        "severity": "info",
    }
    assert all(isinstance(v, str) for v in message.properties.values())


@pytest.mark.timeout(10)
def test_empty_and_failed_frames() -> None:
    empty = build_detection_message(make_result())
    assert empty.properties["hasDetections"] == "false"
    assert empty.properties["detectionCount"] == "0"
    assert empty.properties["maxConfidence"] == "0"
    assert empty.properties["labels"] == ""
    failed = build_detection_message(make_result(error={"code": "corrupt_image", "message": "bad"}))
    assert failed.body["error"] == {"code": "corrupt_image", "message": "bad"}
    assert failed.properties["severity"] == "warning"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("label", ["scratch", "éé-缺陷-😀" * 10])
def test_long_detection_lists_are_cut_under_the_iot_hub_limit(label: str) -> None:
    # given a frame with far more detections than 256 KB can hold (ASCII and non-ASCII labels)
    result = make_result(detections=[(f"{label}{i % 50}", 0.99 - i * 1e-5) for i in range(6000)])
    # when it becomes a message
    message = build_detection_message(result)
    # then it fits both the wire measure and the SDK's own check, says it was cut, and keeps the real count
    assert message_size(message) <= IOT_HUB_MESSAGE_LIMIT
    assert sdk_size(message) <= IOT_HUB_MESSAGE_LIMIT
    assert len(encode_body(message.body)) + len(json.dumps(message.properties)) < IOT_HUB_MESSAGE_LIMIT
    assert message.body["truncated"] is True
    assert message.body["count"] == 6000
    assert message.properties["detectionCount"] == "6000"
    assert 0 < len(message.body["detections"]) < 6000
    assert message.body["detections"] == result.as_dict()["detections"][: len(message.body["detections"])]
    assert len(message.properties["labels"]) <= 1024


@pytest.mark.timeout(10)
def test_per_frame_mode_sends_every_frame_and_skips_empty_ones_when_asked() -> None:
    pub, sink, live, _ = publisher()
    pub.on_result(make_result("1" * 32))
    pub.on_result(make_result("2" * 32, [("dent", 0.8)]))
    assert [m.message_id for m in sink.messages] == ["1" * 32, "2" * 32]
    # when includeEmpty is switched off live
    live.update(telemetry=TelemetrySettings(include_empty=False))
    sink.messages.clear()
    pub.on_result(make_result("3" * 32))
    pub.on_result(make_result("4" * 32, [("dent", 0.8)]))
    pub.on_result(make_result("5" * 32, error={"code": "corrupt_image", "message": "x"}))
    # then the empty frame is skipped; a failed frame is still reported
    assert [m.message_id for m in sink.messages] == ["4" * 32, "5" * 32]


@pytest.mark.timeout(10)
def test_off_mode_sends_nothing_but_alerts_still_go_out() -> None:
    pub, sink, _, _ = publisher(TelemetrySettings(mode="off"), alert_classes=("crack",))
    pub.on_result(make_result("1" * 32, [("dent", 0.8)]))
    pub.on_result(make_result("2" * 32, [("dent", 0.8), ("crack", 0.66), ("crack", 0.9)]))
    assert len(sink.messages) == 1
    alert = sink.messages[0]
    assert alert.output == "alerts"
    assert alert.message_id == "2" * 32 + "-alert"
    assert alert.body["alert"] == {"classes": ["crack"]}
    assert alert.body["count"] == 3
    assert alert.properties["messageType"] == "alert"
    assert alert.properties["labels"] == "crack"
    assert alert.properties["detectionCount"] == "2"
    assert alert.properties["maxConfidence"] == "0.9"
    assert alert.properties["severity"] == "warning"


@pytest.mark.timeout(10)
def test_per_frame_with_alert_sends_both() -> None:
    pub, sink, _, _ = publisher(alert_classes=("crack",))
    pub.on_result(make_result("1" * 32, [("crack", 0.8)]))
    assert [(m.output, m.message_id) for m in sink.messages] == [
        ("detections", "1" * 32),
        ("alerts", "1" * 32 + "-alert"),
    ]


@pytest.mark.timeout(10)
def test_summary_mode_aggregates_per_wall_clock_interval() -> None:
    # given summary mode with a 60 s interval
    pub, sink, _, wall = publisher(TelemetrySettings(mode="summary", summary_interval_seconds=60))
    wall.now = 1_800_000_010.0  # 10 s into a window starting at a multiple of 60
    pub.on_result(make_result("1" * 32, [("dent", 0.5)], processed_at="2027-01-15T08:00:10.000Z"))
    pub.on_result(make_result("2" * 32, [("dent", 0.9), ("crack", 0.7)], processed_at="2027-01-15T08:00:11.000Z"))
    pub.on_result(
        make_result("3" * 32, error={"code": "corrupt_image", "message": "x"}, processed_at="2027-01-15T08:00:12.000Z")
    )
    pub.tick()
    assert sink.messages == []  # the interval is not over
    # when the interval ends
    wall.now = 1_800_000_061.0
    pub.tick()
    # then one summary with the aggregate and a deterministic id from the interval
    assert len(sink.messages) == 1
    summary = sink.messages[0]
    assert summary.output == "detections"
    assert summary.message_id == "summary-2027-01-15T08:00:00.000Z-60s"
    body = summary.body
    assert body["frames"] == 3 and body["failed"] == 1
    assert body["detections"] == {"crack": 1, "dent": 2}
    assert body["count"] == 3
    assert body["maxConfidence"] == 0.9
    assert body["firstProcessedAt"] == "2027-01-15T08:00:10.000Z"
    assert body["lastProcessedAt"] == "2027-01-15T08:00:12.000Z"
    assert body["summary"] == {
        "start": "2027-01-15T08:00:00.000Z",
        "end": "2027-01-15T08:01:00.000Z",
        "intervalSeconds": 60.0,
    }
    assert summary.properties["messageType"] == "summary"
    assert summary.properties["labels"] == "crack,dent"
    assert summary.properties["severity"] == "warning"
    pub.tick()
    assert len(sink.messages) == 1  # nothing pending, nothing sent


@pytest.mark.timeout(10)
def test_summary_flushed_on_close_and_on_mode_change() -> None:
    pub, sink, live, _ = publisher(TelemetrySettings(mode="summary", summary_interval_seconds=3600))
    pub.on_result(make_result("1" * 32, [("dent", 0.5)]))
    live.update(telemetry=TelemetrySettings(mode="perFrame"))
    pub.on_result(make_result("2" * 32))
    assert [m.properties["messageType"] for m in sink.messages] == ["summary", "detection"]
    live.update(telemetry=TelemetrySettings(mode="summary", summary_interval_seconds=3600))
    pub.on_result(make_result("3" * 32))
    pub.close()
    assert [m.properties["messageType"] for m in sink.messages] == ["summary", "detection", "summary"]
    assert sink.messages[-1].body["frames"] == 1


@pytest.mark.timeout(10)
def test_a_failing_sink_never_stops_the_pipeline() -> None:
    class Broken(ListSink):
        def publish(self, message: OutgoingMessage) -> None:
            raise OSError("disk full")

    live = LiveSettings(TwinSettings())
    pub = TelemetryPublisher(Broken(), live, MetricsRegistry())
    pub.on_result(make_result(detections=[("dent", 0.9)]))  # does not raise


@pytest.mark.timeout(10)
def test_local_sink_appends_json_lines_and_logs_them_only_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = LocalTelemetrySink(tmp_path)
    message = build_detection_message(make_result(detections=[("dent", 0.9)]))
    with caplog.at_level(logging.INFO, logger="edge_inference.ops.publisher"):
        sink.publish(message)
    with caplog.at_level(logging.DEBUG, logger="edge_inference.ops.publisher"):
        sink.publish(message)
    sink.close()
    lines = (tmp_path / "telemetry.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert capsys.readouterr().out == ""  # the console gets a readable line per frame instead (ops/console.py)
    assert [r.getMessage() for r in caplog.records] == [f"telemetry {lines[1]}"]
    record = json.loads(lines[0])
    assert record == {
        "output": "detections",
        "messageId": message.message_id,
        "properties": message.properties,
        "body": message.body,
    }
    with pytest.raises(RuntimeError):
        sink.publish(message)


def _segmented(n: int, points: int) -> FrameResult:
    """A segmentation result: n detections, each outlined by a polygon of `points` points."""
    circle = tuple((500.0 + 300 * np.cos(a), 500.0 + 300 * np.sin(a)) for a in np.linspace(0, 6.28, points))
    dets = tuple(
        Detection("defect", 0, 0.99 - i * 1e-4, (200.0, 200.0, 800.0, 800.0), mask=Mask((circle,), 282_000 + i))
        for i in range(n)
    )
    return replace(make_result(), detections=dets)


@pytest.mark.timeout(30)
def test_long_polygon_lists_are_cut_first_and_say_so() -> None:
    # given masks whose outlines alone are over 256 KB (40 detections x 1000 points)
    result = _segmented(40, 1000)
    message = build_detection_message(result)
    # then every detection stays, the outlines of the lowest-ranked ones are dropped (their area kept) and the
    # message and those masks say they were cut
    assert message_size(message) <= IOT_HUB_MESSAGE_LIMIT and sdk_size(message) <= IOT_HUB_MESSAGE_LIMIT
    body = message.body
    assert body["truncated"] is True and body["count"] == 40 and len(body["detections"]) == 40
    masks = [d["mask"] for d in body["detections"]]
    kept = [m for m in masks if m["polygons"]]
    assert 0 < len(kept) < 40 and masks[: len(kept)] == kept  # the best keep their outlines
    assert all(
        m == {"polygons": [], "areaPx": 282_000 + i, "truncated": True} for i, m in enumerate(masks) if i >= len(kept)
    )
    assert kept == [d["mask"] for d in result.as_dict()["detections"][: len(kept)]]
    # and a result whose outlines fit is sent whole, without `truncated`
    small = build_detection_message(_segmented(3, 50)).body
    assert "truncated" not in small and all(d["mask"]["polygons"] for d in small["detections"])


@pytest.mark.timeout(10)
def test_a_classification_routes_and_alerts_on_its_top_class_over_the_threshold() -> None:
    top = ClassScore("ng", 1, 0.93)
    classified = replace(make_result(), classification=Classification(top, (top, ClassScore("ok", 0, 0.07))))
    message = build_detection_message(classified)
    assert message.body["classification"]["label"] == "ng" and message.body["count"] == 0
    assert (message.properties["labels"], message.properties["maxConfidence"]) == ("ng", "0.93")
    assert (message.properties["detectionCount"], message.properties["hasDetections"]) == ("1", "true")
    assert alert_labels(classified, ["ng"]) == ["ng"]
    # under the threshold: reported, but nothing found - no labels, no alert
    unsure = replace(classified, confidence_threshold=0.95)
    props = build_detection_message(unsure).properties
    assert (props["labels"], props["detectionCount"], props["maxConfidence"]) == ("", "0", "0")
    assert alert_labels(unsure, ["ng"]) == []
    window = SummaryWindow(start=1_800_000_000.0, seconds=60.0)
    window.add(classified)
    window.add(unsure)
    assert window.message().body["detections"] == {"ng": 1}

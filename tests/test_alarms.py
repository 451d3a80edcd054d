"""The alarm registry: one message on `alerts` per raise and per clear, the gauge, listeners, known names only."""

from __future__ import annotations

from typing import Any

import pytest

from edge_inference.ops.alarms import ALARMS, GPU_LOST, OUTPUT_SHARE_LOW, AlarmRegistry
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.telemetry import OutgoingMessage
from tests.iot_fakes import ListSink

pytestmark = pytest.mark.timeout(10)


def registry() -> tuple[AlarmRegistry, ListSink, MetricsRegistry]:
    sink, metrics = ListSink(), MetricsRegistry()
    return AlarmRegistry(sink, metrics), sink, metrics


def gauge(metrics: MetricsRegistry, alarm: str) -> float | None:
    return metrics.registry.get_sample_value("edge_inference_alarm_active", {"alarm": alarm})


def test_health_alarm_sent_on_raise_and_clear_only() -> None:
    alarms, sink, metrics = registry()
    alarms.raise_alarm(OUTPUT_SHARE_LOW, {"freeMb": 120}, "120 MB free")
    alarms.raise_alarm(OUTPUT_SHARE_LOW, {"freeMb": 110}, "110 MB free")  # still active: no message
    assert len(sink.messages) == 1
    raised = sink.messages[0]
    assert raised.output == "alerts"
    assert raised.properties["messageType"] == "health"
    assert raised.properties["severity"] == "critical"
    assert raised.properties["alarm"] == "outputShareLow"
    assert raised.properties["active"] == "true"
    assert raised.body["alarm"] == "outputShareLow" and raised.body["active"] is True
    active = alarms.active()
    assert active["outputShareLow"]["details"] == {"freeMb": 110}
    assert active["outputShareLow"]["message"] == "110 MB free"
    assert gauge(metrics, OUTPUT_SHARE_LOW) == 1
    alarms.clear(OUTPUT_SHARE_LOW, message="space is back")
    alarms.clear(OUTPUT_SHARE_LOW, message="space is back")  # already clear: no message
    assert len(sink.messages) == 2
    cleared = sink.messages[1]
    assert cleared.properties["active"] == "false"
    assert cleared.properties["severity"] == "info"
    assert cleared.message_id != raised.message_id
    assert alarms.active() == {}
    assert gauge(metrics, OUTPUT_SHARE_LOW) == 0


def test_every_alarm_has_a_gauge_at_zero_from_the_start_and_its_own_severity() -> None:
    alarms, sink, metrics = registry()
    assert all(gauge(metrics, name) == 0 for name in ALARMS)
    alarms.raise_alarm(GPU_LOST, {"device": 0})
    assert sink.messages[0].properties["severity"] == "critical"
    assert sink.messages[0].body["message"] == "gpuLost raised"


def test_an_unknown_alarm_name_is_refused() -> None:
    alarms, sink, _ = registry()
    with pytest.raises(ValueError, match="unknown alarm 'diskLow'"):
        alarms.raise_alarm("diskLow")
    assert sink.messages == []


def test_listeners_hear_every_change_and_a_failing_one_stops_nothing() -> None:
    alarms, sink, _ = registry()
    heard: list[tuple[str, bool, dict[str, Any]]] = []

    def broken(alarm: str, active: bool, details: dict[str, Any]) -> None:
        raise RuntimeError("listener down")

    alarms.subscribe(broken)
    alarms.subscribe(lambda *change: heard.append(change))
    alarms.raise_alarm(GPU_LOST, {"device": 0})
    alarms.clear(GPU_LOST)
    assert heard == [(GPU_LOST, True, {"device": 0}), (GPU_LOST, False, {"device": 0})]
    assert len(sink.messages) == 2


def test_a_failing_sink_loses_the_message_but_keeps_the_alarm() -> None:
    class Broken(ListSink):
        def publish(self, message: OutgoingMessage) -> None:
            raise OSError("disk full")

    alarms = AlarmRegistry(Broken(), MetricsRegistry())
    alarms.raise_alarm(GPU_LOST, {"device": 0})  # does not raise
    assert set(alarms.active()) == {GPU_LOST}

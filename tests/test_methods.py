"""Direct methods: each method's good and bad payloads, unknown methods, failures inside the module."""

from __future__ import annotations

from typing import Any

import pytest

from edge_inference.iot.methods import MethodDispatcher
from tests.iot_fakes import FakeControl


def dispatcher() -> tuple[MethodDispatcher, FakeControl]:
    control = FakeControl()
    return MethodDispatcher(control), control


@pytest.mark.timeout(10)
@pytest.mark.parametrize("payload", [None, {}, "anything", 3])
def test_get_status_ignores_its_payload(payload: Any) -> None:
    methods, _ = dispatcher()
    assert methods.handle("getStatus", payload) == (
        200,
        {"paused": False, "frames": 3, "provider": "CPUExecutionProvider"},
    )


@pytest.mark.timeout(10)
def test_pause_and_resume_return_the_state() -> None:
    methods, control = dispatcher()
    assert methods.handle("pause", None) == (200, {"paused": True})
    assert control.paused
    assert methods.handle("resume", {}) == (200, {"paused": False})
    assert not control.paused


@pytest.mark.timeout(10)
def test_reprocess_queues_matches() -> None:
    methods, control = dispatcher()
    assert methods.handle("reprocess", {"path": "line1/*.jpg"}) == (200, {"queued": 2})
    assert control.calls_named("reprocess") == ["line1/*.jpg"]


@pytest.mark.timeout(10)
def test_reprocess_nothing_matches_is_404() -> None:
    methods, control = dispatcher()
    control.reprocess_count = 0
    status, body = methods.handle("reprocess", {"path": "none/*.png"})
    assert status == 404 and body["queued"] == 0


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "payload",
    [
        None,
        "line1/a.jpg",
        [],
        {},
        {"path": 3},
        {"path": ""},
        {"path": "../etc/passwd"},
        {"path": "/abs/a.jpg"},
        {"path": "a/../../b.jpg"},
        {"path": "C:\\x.jpg"},
        {"path": "a\0b"},
        {"path": "x" * 2000},
    ],
)
def test_reprocess_bad_payloads_are_400(payload: Any) -> None:
    methods, control = dispatcher()
    status, body = methods.handle("reprocess", payload)
    assert status == 400
    assert isinstance(body["error"], str) and body["error"]
    assert control.calls_named("reprocess") == []


@pytest.mark.timeout(10)
def test_reprocess_value_error_from_the_module_is_400() -> None:
    methods, control = dispatcher()
    control.fail_with = ValueError("escapes the share")
    assert methods.handle("reprocess", {"path": "a.jpg"}) == (400, {"error": "escapes the share"})


@pytest.mark.timeout(10)
def test_self_test_passed_and_failed() -> None:
    methods, control = dispatcher()
    assert methods.handle("selfTest", None) == (200, {"passed": True, "detections": 1})
    control.self_test_result = {"passed": False, "reason": "no detection"}
    assert methods.handle("selfTest", {}) == (500, {"passed": False, "reason": "no detection"})


@pytest.mark.timeout(10)
def test_unknown_method_is_404() -> None:
    methods, _ = dispatcher()
    status, body = methods.handle("reboot", {})
    assert status == 404 and "reboot" in body["error"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ["getStatus", "pause", "resume", "selfTest", "reprocess"])
def test_exception_in_the_module_is_500_never_raised(name: str) -> None:
    methods, control = dispatcher()
    control.fail_with = RuntimeError("boom")
    status, body = methods.handle(name, {"path": "a.jpg"})
    assert status == 500 and "boom" in body["error"]

"""The twin's `model` and `candidate` values, checked (rollout/spec.py): every bad value refused with its reason,
never an exception; URLs shown without their secrets; the twin's one validation path hands them on."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_inference.iot.twin import TwinState, validate_desired
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.rollout.spec import (
    BadSpec,
    ModelSpec,
    Rollback,
    Scrubber,
    SpecRules,
    digest,
    parse_request,
    redact_url,
)

pytestmark = pytest.mark.timeout(30)

RULES = SpecRules(allow_http=False, models_dir_set=True, max_bytes=10 * 1024 * 1024)
SHA = "AB" * 32
GOOD = {
    "name": "defects",
    "version": "7.0.1",
    "url": "https://acct.blob.core.windows.net/m/d7.onnx?sv=1&sig=S3CRET%2Bx",
    "sha256": SHA,
}


def test_a_good_model_and_a_candidate() -> None:
    spec = parse_request("model", {**GOOD, "labelsUrl": "https://h/l.txt", "sizeBytes": 1234.0}, RULES)
    assert isinstance(spec, ModelSpec) and spec.sha256 == SHA.lower() and spec.size_bytes == 1234
    assert spec.shown() == {
        "name": "defects",
        "version": "7.0.1",
        "sha256": SHA.lower(),
        "url": "https://acct.blob.core.windows.net/m/d7.onnx?<redacted>",
        "labelsUrl": "https://h/l.txt",
        "sizeBytes": 1234,
    }
    assert "S3CRET" not in repr(spec)
    candidate = parse_request("candidate", {**GOOD, "sampleRate": 0.25, "maxMinutes": 30}, RULES)
    assert isinstance(candidate, ModelSpec) and (candidate.sample_rate, candidate.max_minutes) == (0.25, 30.0)
    assert parse_request("candidate", GOOD, RULES).sample_rate == 0.1  # type: ignore[union-attr]
    path = parse_request("model", {**{k: v for k, v in GOOD.items() if k != "url"}, "path": "v7/d.onnx"}, RULES)
    assert isinstance(path, ModelSpec) and path.path == "v7/d.onnx"
    assert parse_request("model", {"rollback": True}, RULES) == Rollback()
    assert parse_request("model", None, RULES) is None


@pytest.mark.parametrize(
    ("kind", "change", "reason"),
    [
        ("model", {"sha256": None}, "'sha256' is required"),
        ("model", {"sha256": "xyz"}, "'sha256' is required"),
        ("model", {"name": ""}, "'name' must be a non-empty string"),
        ("model", {"version": 7}, "'version' must be a non-empty string"),
        ("model", {"url": "http://h/m.onnx"}, "only https"),
        ("model", {"url": "file:///etc/passwd"}, "https URL"),
        ("model", {"url": "https://"}, "no host"),
        ("model", {"url": "https://h:port/x"}, "not a URL"),
        ("model", {"path": "a.onnx"}, "exactly one of"),
        ("model", {"url": None}, "exactly one of"),
        ("model", {"sizeBytes": 11 * 1024 * 1024}, "over MODEL_MAX_MB"),
        ("model", {"sizeBytes": 1.5}, "whole number"),
        ("model", {"sizeBytes": True}, "'sizeBytes' must be a number"),
        ("model", {"labelsUrl": "ftp://h/l"}, "'labelsUrl' must be an https URL"),
        ("model", {"sampleRate": 0.5}, "unknown field 'sampleRate'"),
        ("model", {"weird": 1}, "unknown field 'weird'"),
        ("candidate", {"sampleRate": 1.5}, "'sampleRate' must be a number from 0 to 1"),
        ("candidate", {"maxMinutes": 0}, "'maxMinutes' must be a number"),
        ("candidate", {"rollback": True}, "unknown field 'rollback'"),
    ],
)
def test_bad_values_are_refused_with_their_reason(kind: str, change: dict[str, Any], reason: str) -> None:
    value = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(BadSpec, match=reason.replace("(", r"\(")):
        parse_request(kind, value, RULES)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"rollback": False}, "exactly"),
        ({"rollback": True, "name": "x"}, "exactly"),
        ("defects", "must be an object"),
        ([GOOD], "must be an object"),
    ],
)
def test_rollback_and_shapes(value: Any, reason: str) -> None:
    with pytest.raises(BadSpec, match=reason):
        parse_request("model", value, RULES)


def test_paths_must_stay_under_models_dir() -> None:
    base = {k: v for k, v in GOOD.items() if k != "url"}
    for bad in ("../x.onnx", "/etc/x.onnx", "a/../../x", "a//b", "a\0b"):
        with pytest.raises(BadSpec):
            parse_request("model", {**base, "path": bad}, RULES)
    with pytest.raises(BadSpec, match="needs MODELS_DIR"):
        parse_request("model", {**base, "path": "x.onnx"}, SpecRules())


def test_plain_http_only_with_model_allow_http() -> None:
    spec = parse_request("model", {**GOOD, "url": "http://lab/m.onnx"}, SpecRules(allow_http=True))
    assert isinstance(spec, ModelSpec) and spec.url == "http://lab/m.onnx"


def test_secrets_are_redacted_and_scrubbed() -> None:
    url = "https://user:pw@h.example:8443/m/d7.onnx?sv=2024&sig=Zm9vYmFy%2Fsecret#frag"
    assert redact_url(url) == "https://h.example:8443/m/d7.onnx?<redacted>"
    scrub = Scrubber([url])
    text = f"GET {url} failed; sig=Zm9vYmFy%2Fsecret; pw; user"
    cleaned = scrub(text)
    assert "Zm9vYmFy" not in cleaned and "pw" not in cleaned.replace("<redacted>", "")
    assert digest({"url": url}) != digest({"url": url + "x"}) and url not in digest({"url": url})


def test_the_twin_hands_model_values_to_the_rollout_and_never_counts_them_unknown() -> None:
    new, acks = validate_desired({"model": GOOD, "candidate": None, "confidenceThreshold": 0.7}, TwinSettings())
    assert new.confidence_threshold == 0.7 and set(acks) == {"confidenceThreshold"}
    state = TwinState(LiveSettings(TwinSettings()), MetricsRegistry())  # no rollout wired: refused, not lost
    state.apply({"model": GOOD, "$version": 3}, full=False)
    ack = state.take_reported()["model"]
    assert ack["ac"] == 400 and ack["av"] == 3 and "not available" in ack["ad"]


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=6),
        max_leaves=20,
    )
)
def test_any_json_is_refused_or_accepted_never_raises(value: Any) -> None:
    for kind in ("model", "candidate"):
        try:
            result = parse_request(kind, value, RULES)  # type: ignore[arg-type]
        except BadSpec as exc:
            assert str(exc)  # a reason to acknowledge with
        else:
            assert result is None or isinstance(result, ModelSpec | Rollback)

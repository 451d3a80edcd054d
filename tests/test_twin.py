"""Twin desired-property validation: whole-patch handling, Plug and Play acks, nothing invalid gets through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_inference.iot.twin import MAX_UNKNOWN_ACKS, validate_desired
from edge_inference.ops.live_settings import TWIN_PROPERTIES, TelemetrySettings, TwinSettings

CURRENT = TwinSettings(confidence_threshold=0.5, classes=("dent",))


@pytest.mark.timeout(10)
def test_valid_patch_applied_with_acks() -> None:
    new, acks = validate_desired(
        {
            "confidenceThreshold": 0.8,
            "iouThreshold": 0,
            "maxDetections": 100.0,
            "classes": ["scratch", "dent", "scratch"],
            "alertClasses": [],
            "saveAnnotated": True,
            "telemetry": {"mode": "summary"},
            "paused": False,
            "classThresholds": {"scratch": 0.35},
            "profiles": [],
            "review": {"classes": ["dent"], "confidenceBand": [0.3, 0.6], "sampleRate": 0.01, "crops": True},
            "$version": 7,
            "$metadata": {"$lastUpdated": "x"},
        },
        CURRENT,
    )
    assert new.confidence_threshold == 0.8
    assert new.iou_threshold == 0.0
    assert new.max_detections == 100 and isinstance(new.max_detections, int)
    assert new.classes == ("scratch", "dent")
    assert new.save_annotated is True
    assert new.telemetry == TelemetrySettings(mode="summary", summary_interval_seconds=60.0, include_empty=True)
    assert set(acks) == set(TWIN_PROPERTIES)
    assert acks["confidenceThreshold"] == {"value": 0.8, "ac": 200, "av": 7, "ad": "applied"}
    assert acks["telemetry"]["value"] == {"mode": "summary", "summaryIntervalSeconds": 60.0, "includeEmpty": True}
    assert new.review.classes == ("dent",) and new.review.band == (0.3, 0.6) and new.review.crops is True
    assert acks["review"]["value"] == {
        "classes": ["dent"],
        "confidenceBand": [0.3, 0.6],
        "sampleRate": 0.01,
        "maxPerHour": 500,
        "crops": True,
        "padding": 0.1,
    }


@pytest.mark.timeout(10)
@pytest.mark.parametrize("bad", [1.7, -0.1, "high", None, True, [0.5], {"v": 1}, float("nan"), float("inf")])
def test_invalid_confidence_refused_and_old_value_kept(bad: Any) -> None:
    new, acks = validate_desired({"confidenceThreshold": bad, "iouThreshold": 0.3, "$version": 4}, CURRENT)
    assert new.confidence_threshold == 0.5
    assert new.iou_threshold == 0.3  # the valid rest of the patch still applies
    ack = acks["confidenceThreshold"]
    assert ack["ac"] == 400 and ack["av"] == 4 and ack["value"] == 0.5
    assert "refused" in ack["ad"]
    assert acks["iouThreshold"]["ac"] == 200


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("maxDetections", 0),
        ("maxDetections", 1001),
        ("maxDetections", 2.5),
        ("maxDetections", "10"),
        ("maxDetections", False),
        ("classes", "dent"),
        ("classes", [""]),
        ("classes", ["  "]),
        ("classes", [1]),
        ("classes", ["x" * 129]),
        ("classes", ["c"] * 1001),
        ("alertClasses", [None]),
        ("saveAnnotated", "true"),
        ("saveAnnotated", 1),
        ("paused", None),
        ("telemetry", "perFrame"),
        ("telemetry", {"mode": "sometimes"}),
        ("telemetry", {"summaryIntervalSeconds": 0}),
        ("telemetry", {"summaryIntervalSeconds": 86401}),
        ("telemetry", {"includeEmpty": "no"}),
        ("telemetry", {"mode": "summary", "colour": "red"}),
        ("telemetry", None),
    ],
)
def test_each_invalid_value_is_refused(key: str, bad: Any) -> None:
    new, acks = validate_desired({key: bad, "$version": 2}, CURRENT)
    assert new == CURRENT
    assert acks[key]["ac"] == 400
    assert acks[key]["value"] == CURRENT.as_twin()[key]
    assert acks[key]["ad"]


@pytest.mark.timeout(10)
def test_telemetry_is_merged_with_the_current_values() -> None:
    current = TwinSettings(
        telemetry=TelemetrySettings(mode="summary", summary_interval_seconds=10, include_empty=False)
    )
    new, acks = validate_desired({"telemetry": {"summaryIntervalSeconds": 30}}, current)
    assert new.telemetry == TelemetrySettings(mode="summary", summary_interval_seconds=30, include_empty=False)
    assert acks["telemetry"]["ac"] == 200
    assert acks["telemetry"]["av"] is None  # no $version given


@pytest.mark.timeout(10)
def test_unknown_keys_acknowledged_400_without_blocking() -> None:
    new, acks = validate_desired({"colour": "red", "confidenceThreshold": 0.9, "$version": 3}, CURRENT)
    assert new.confidence_threshold == 0.9
    assert acks["colour"] == {"value": None, "ac": 400, "av": 3, "ad": "unknown property"}
    assert acks["confidenceThreshold"]["ac"] == 200


@pytest.mark.timeout(10)
def test_absent_properties_keep_their_values_and_get_no_ack() -> None:
    new, acks = validate_desired({"$version": 9}, CURRENT)
    assert new is CURRENT
    assert acks == {}


@pytest.mark.timeout(20)
def test_huge_document_handled() -> None:
    # given a 32 KB desired document: many unknown keys and a long class list
    doc: dict[str, Any] = {f"unknown{i}": "x" * 20 for i in range(600)}
    doc["classes"] = [f"class-{i:04d}" for i in range(1000)]
    doc["$version"] = 11
    assert len(json.dumps(doc)) > 32_000
    new, acks = validate_desired(doc, CURRENT)
    assert len(new.classes) == 1000
    assert sum(1 for a in acks.values() if a["ad"] == "unknown property") == MAX_UNKNOWN_ACKS
    assert len(json.dumps(acks)) < 40_000


@pytest.mark.timeout(10)
def test_not_an_object() -> None:
    assert validate_desired([1, 2], CURRENT) == (CURRENT, {})  # type: ignore[arg-type]


def _deep(depth: int) -> Any:
    value: Any = 0.5
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.timeout(10)
@pytest.mark.parametrize("key", ["confidenceThreshold", "iouThreshold", "maxDetections", "telemetry", "classes"])
@pytest.mark.parametrize(
    "bad",
    [10**400, -(10**400), 10**5000, float("nan"), _deep(5000), {"a": _deep(3000)}],
    ids=["1e400", "-1e400", "5000-digits", "nan", "deep-list", "deep-object"],
)
def test_values_no_number_can_hold_are_a_400_never_an_exception(key: str, bad: Any) -> None:
    # given a patch with a value that cannot be converted (today 10**400 raised OverflowError: no ack at all)
    value = {"summaryIntervalSeconds": bad} if key == "telemetry" else ([bad] if key == "classes" else bad)
    # when it is validated beside a good property
    new, acks = validate_desired({key: value, "paused": True, "$version": 5}, CURRENT)
    # then it is refused with a reason, the good one applies, and the acks are JSON-ready
    assert acks[key]["ac"] == 400 and acks[key]["ad"].startswith("refused: "), acks[key]
    assert len(acks[key]["ad"]) < 300
    assert new.paused is True and acks["paused"]["ac"] == 200
    assert getattr(new, TWIN_PROPERTIES[key]) == getattr(CURRENT, TWIN_PROPERTIES[key])
    json.dumps(acks)


huge_integers = st.integers(min_value=-(10**600), max_value=10**600)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | huge_integers | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
patches = st.dictionaries(
    st.sampled_from([*TWIN_PROPERTIES, "$version", "other", "$metadata"]) | st.text(max_size=8), json_values, max_size=8
)


def _valid(key: str, value: Any) -> bool:
    """Independent statement of the rules, for the property test."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if key in ("confidenceThreshold", "iouThreshold"):
        return number and 0 <= value <= 1
    if key == "maxDetections":
        return number and (isinstance(value, int) or float(value).is_integer()) and 1 <= value <= 1000
    if key in ("classes", "alertClasses"):
        return (
            isinstance(value, list)
            and len(value) <= 1000
            and all(isinstance(v, str) and v.strip() and len(v) <= 128 for v in value)
        )
    if key in ("saveAnnotated", "paused"):
        return isinstance(value, bool)
    if key == "classThresholds":
        return isinstance(value, dict) and all(
            k.strip() and len(k) <= 128 and _valid("confidenceThreshold", v) for k, v in value.items()
        )
    if key == "profiles":  # random JSON: only name + match profiles can be valid
        return (
            isinstance(value, list)
            and all(isinstance(p, dict) and set(p) == {"name", "match"} for p in value)
            and all(_valid_glob(p["match"]) and isinstance(p["name"], str) and p["name"].strip() for p in value)
            and len({p["name"] for p in value}) == len(value)
        )
    if key == "review":
        return _valid_review(value)
    if key == "telemetry":
        if not isinstance(value, dict):
            return False
        fields = {k: v for k, v in value.items() if not k.startswith("$")}
        if set(fields) - {"mode", "summaryIntervalSeconds", "includeEmpty"}:
            return False
        s = fields.get("summaryIntervalSeconds", 60)
        return (
            fields.get("mode", "perFrame") in ("perFrame", "summary", "off")
            and isinstance(fields.get("includeEmpty", True), bool)
            and isinstance(s, int | float)
            and not isinstance(s, bool)
            and 1 <= s <= 86400
        )
    return False


def _valid_glob(glob: Any) -> bool:
    if not isinstance(glob, str) or not glob.strip() or any(ord(c) < 32 for c in glob):
        return False
    parts = glob.replace("\\", "/").split("/")
    return (
        not glob.replace("\\", "/").startswith("/")
        and not (len(parts[0]) == 2 and parts[0][1] == ":")
        and all(p != ".." and ("**" not in p or p == "**") and p.count("[") == p.count("]") for p in parts)
    )


def _valid_review(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    fields = {k: v for k, v in value.items() if not k.startswith("$")}
    if set(fields) - {"classes", "confidenceBand", "sampleRate", "maxPerHour", "crops", "padding"}:
        return False

    def unit(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1

    band = fields.get("confidenceBand", [])
    per_hour = fields.get("maxPerHour", 500)
    return (
        _valid("classes", fields.get("classes", []))
        and (
            band in ([], None)
            or (isinstance(band, list) and len(band) == 2 and all(map(unit, band)) and band[0] <= band[1])
        )
        and unit(fields.get("sampleRate", 0))
        and unit(fields.get("padding", 0.1))
        and isinstance(fields.get("crops", False), bool)
        and not isinstance(per_hour, bool)
        and (isinstance(per_hour, int) or (isinstance(per_hour, float) and per_hour.is_integer()))
        and 0 <= per_hour <= 100_000
    )


def check_patch(patch: dict[str, Any]) -> None:
    new, acks = validate_desired(patch, CURRENT)
    json.dumps(acks)  # acks are always JSON-ready
    for key, field in TWIN_PROPERTIES.items():
        if key not in patch or not _valid(key, patch[key]):
            assert getattr(new, field) == getattr(CURRENT, field), key
        if key in patch:
            assert acks[key]["ac"] == (200 if _valid(key, patch[key]) else 400)
            assert acks[key]["value"] == new.as_twin()[key]


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None)
@given(patch=patches)
def test_random_json_never_raises_and_invalid_never_changes(patch: dict[str, Any]) -> None:
    check_patch(patch)

"""The values of the module twin's desired properties, checked: one function per kind of value, and `convert`
(the TwinSettings value of a desired property, or `Invalid` with the reason). iot/twin.py's one validation path
(`validate_desired`) calls it for every property; the rules are listed there. The camera profiles' rules
(iot/profile_rules.py: `profiles`, `classThresholds`, checked against the model in service) use the same
single-value checks (`number`, `integer`, `boolean`, `names`, `object_fields`). None of them raises anything but
`Invalid` on any JSON value (a number no float can hold, NaN, a huge integer, a wrong type)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from edge_inference.ops.live_settings import (
    ReviewSettings,
    TelemetryMode,
    TelemetrySettings,
    TwinSettings,
)

MAX_LIST_ITEMS = 1000
MAX_NAME_CHARS = 128
MAX_UNKNOWN_ACKS = 20
TELEMETRY_MODES = ("perFrame", "summary", "off")
_TELEMETRY_FIELDS = ("mode", "summaryIntervalSeconds", "includeEmpty")
_REVIEW_FIELDS = ("classes", "confidenceBand", "sampleRate", "maxPerHour", "crops", "padding")


class Invalid(Exception):
    """A desired value that is refused; the message becomes the ack's `ad`."""


def shown(value: Any) -> str:
    """A short text for a refused value; never raises (a 5,000-digit int cannot even be turned into text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        return repr(value)[:40]
    except Exception:  # RecursionError, ValueError: a value too deep or too big to show
        return f"a {type(value).__name__}"


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return shown(value)


def number(value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number from {lo:g} to {hi:g}, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer past float's range (10**400)
        number = math.inf
    if not math.isfinite(number) or not lo <= number <= hi:
        raise Invalid(f"expected a number from {lo:g} to {hi:g}, got {shown(value)}")
    return number


def integer(value: Any, lo: int, hi: int) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected an integer from {lo} to {hi}, got {describe(value)}")
    if not lo <= value <= hi:
        raise Invalid(f"expected an integer from {lo} to {hi}, got {shown(value)}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {describe(value)}")
    return value


def names(value: Any) -> tuple[str, ...]:
    """A list of class names: non-empty strings, duplicates removed, order kept."""
    if not isinstance(value, list):
        raise Invalid(f"expected a list of class names, got {describe(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise Invalid(f"expected at most {MAX_LIST_ITEMS} class names, got {len(value)}")
    kept: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise Invalid(f"class names must be non-empty strings, got {describe(item)}")
        if len(item) > MAX_NAME_CHARS:
            raise Invalid(f"class names must be at most {MAX_NAME_CHARS} characters")
        if item not in kept:
            kept.append(item)
    return tuple(kept)


def object_fields(value: Any, known: tuple[str, ...], prefix: str = "") -> dict[str, Any]:
    """The fields of a desired object (`$` keys dropped), every one among `known`; an unknown one is named in the
    refusal (with `prefix`: `unknown field telemetry.foo`). Top-level objects (`telemetry`, `review`) and the
    camera profiles' (a profile, its `roi`, its `tiling`) alike."""
    if not isinstance(value, dict):
        raise Invalid(f"expected an object {{{', '.join(known)}}}, got {describe(value)}")
    given = {k: v for k, v in value.items() if not str(k).startswith("$")}
    unknown = sorted(str(k) for k in given if k not in known)
    if unknown:
        raise Invalid(f"unknown field {prefix}{unknown[0][:64]}")
    return given


def _telemetry(value: Any, current: TelemetrySettings) -> TelemetrySettings:
    fields = object_fields(value, _TELEMETRY_FIELDS, "telemetry.")
    new = current
    if "mode" in fields:
        mode = fields["mode"]
        if mode not in TELEMETRY_MODES or not isinstance(mode, str):
            raise Invalid(f"telemetry.mode: expected one of {', '.join(TELEMETRY_MODES)}, got {describe(mode)}")
        new = replace(new, mode=cast(TelemetryMode, mode))
    if "summaryIntervalSeconds" in fields:
        try:
            seconds = number(fields["summaryIntervalSeconds"], 1, 86400)
        except Invalid as e:
            raise Invalid(f"telemetry.summaryIntervalSeconds: {e}") from None
        new = replace(new, summary_interval_seconds=seconds)
    if "includeEmpty" in fields:
        try:
            include = boolean(fields["includeEmpty"])
        except Invalid as e:
            raise Invalid(f"telemetry.includeEmpty: {e}") from None
        new = replace(new, include_empty=include)
    return new


def _band(value: Any) -> tuple[float, float] | None:
    if value is None or value == []:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(f"expected [low, high] or [], got {describe(value)}")
    low, high = number(value[0], 0.0, 1.0), number(value[1], 0.0, 1.0)
    if low > high:
        raise Invalid(f"the low end {low:g} is above the high end {high:g}")
    return low, high


def _review(value: Any, current: ReviewSettings) -> ReviewSettings:
    fields = object_fields(value, _REVIEW_FIELDS, "review.")
    rules: dict[str, tuple[str, Callable[[Any], Any]]] = {
        "classes": ("classes", names),
        "confidenceBand": ("band", _band),
        "sampleRate": ("sample_rate", lambda v: number(v, 0.0, 1.0)),
        "maxPerHour": ("max_per_hour", lambda v: integer(v, 0, 100_000)),
        "crops": ("crops", boolean),
        "padding": ("padding", lambda v: number(v, 0.0, 1.0)),
    }
    changes = {}
    for key, raw in fields.items():
        attribute, check = rules[key]
        try:
            changes[attribute] = check(raw)
        except Invalid as e:
            raise Invalid(f"review.{key}: {e}") from None
    return replace(current, **changes)


def convert(name: str, value: Any, current: TwinSettings) -> Any:
    """The TwinSettings field value for a desired property, or Invalid. `profiles` and `classThresholds` are
    not here: iot/twin.py hands them to iot/profile_rules.py with the model in service."""
    if name in ("confidenceThreshold", "iouThreshold"):
        return number(value, 0.0, 1.0)
    if name == "maxDetections":
        return integer(value, 1, 1000)
    if name in ("classes", "alertClasses"):
        return names(value)
    if name in ("saveAnnotated", "paused"):
        return boolean(value)
    if name == "telemetry":
        return _telemetry(value, current.telemetry)
    if name == "review":
        return _review(value, current.review)
    raise Invalid("unknown property")  # pragma: no cover - callers check TWIN_PROPERTIES first

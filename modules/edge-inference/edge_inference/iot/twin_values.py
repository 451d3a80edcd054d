"""The checks of single desired values of the module twin, shared by every property's rules (iot/twin.py) and the
camera profiles' (iot/profile_rules.py). Each returns the value in its settings form or raises `Invalid`, whose
message becomes the acknowledgement's `ad`; none raises anything else on any JSON value (a number no float can
hold, NaN, a huge integer, a wrong type).
"""

from __future__ import annotations

import math
from typing import Any

MAX_LIST_ITEMS = 1000
MAX_NAME_CHARS = 128


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


def object_fields(value: Any, known: tuple[str, ...], prefix: str = "") -> dict[str, Any]:
    """An object's fields (`$` keys ignored), every one among `known`; an unknown one is named in the refusal
    (with `prefix`: `unknown field telemetry.foo`)."""
    if not isinstance(value, dict):
        raise Invalid(f"expected an object {{{', '.join(known)}}}, got {describe(value)}")
    given = {k: v for k, v in value.items() if not str(k).startswith("$")}
    unknown = sorted(str(k) for k in given if k not in known)
    if unknown:
        raise Invalid(f"unknown field {prefix}{unknown[0][:64]}")
    return given


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
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise Invalid(f"class names must be non-empty strings, got {describe(item)}")
        if len(item) > MAX_NAME_CHARS:
            raise Invalid(f"class names must be at most {MAX_NAME_CHARS} characters")
        if item not in names:
            names.append(item)
    return tuple(names)

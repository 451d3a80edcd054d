"""Reading the settings table from the environment: the one place (with settings/edge.py) that reads it.

Every variable of the table (settings/table.py) is read once at start-up and validated by its type and range;
every bad one is reported at once, each in one sentence naming the variable, the value and what is allowed
(`SettingsError.problems`), and the module exits non-zero before touching the model or the shares. A variable
that is not ours but looks like one of ours (a misspelt `CONFIDENCE_TRESHOLD`) is named in a warning
(`unknown_variable_warnings`). `ENV_VARS` is the table as the docs show it.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from edge_inference.errors import SettingsError
from edge_inference.settings.edge import EDGEHUB_VARIABLES, IOTEDGE_VARIABLES
from edge_inference.settings.table import Settings
from edge_inference.settings.values import Spec

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SECRET_HINTS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "CONNECTIONSTRING", "SAS")


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable, as the docs show it: name, default (as text, "" = none), meaning."""

    name: str
    default: str
    meaning: str


def _rows() -> Iterator[tuple[str, str, Any, Spec]]:
    """(variable name, field name, type, spec) of every setting, in table order."""
    hints = typing.get_type_hints(Settings)
    for f in fields(Settings):
        yield f.name.upper(), f.name, hints[f.name], f.metadata["spec"]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def _documented_default(name: str, spec: Spec) -> str:
    if spec.shown is not None:
        return spec.shown
    f = Settings.__dataclass_fields__[name]
    return _shown(f.default)


ENV_VARS: tuple[EnvVar, ...] = tuple(
    EnvVar(var, _documented_default(name, spec), spec.meaning) for var, name, _, spec in _rows()
)
SETTING_NAMES = frozenset(v.name for v in ENV_VARS)


class _Reader:
    """Reads every variable of the table from `env`, collecting every problem before it gives up."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def _fail(self, name: str, value: str, allowed: str) -> SettingsError:
        shown = "<redacted>" if any(h in name.upper() for h in _SECRET_HINTS) else repr(value)
        return SettingsError(f"{name}={shown} is invalid: expected {allowed}")

    def read(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for var, name, kind, spec in _rows():
            text = self.env.get(var)
            if text is None or not text.strip():
                continue  # unset or blank: the default
            convert, allowed = _converter(kind, spec)
            try:
                values[name] = convert(text.strip())
            except (ValueError, TypeError):
                self.problems.append(str(self._fail(var, text.strip(), allowed)))
        return values


def _converter(kind: Any, spec: Spec) -> tuple[Callable[[str], Any], str]:
    """The conversion of one variable's text by its type and range, and what it accepts (for the error)."""
    if spec.parse is not None:
        return spec.parse, spec.allowed
    if kind is bool:
        return _boolean, "true or false"
    if kind in (int, float):
        integer = kind is int
        lo = -float("inf") if spec.lo is None else spec.lo
        hi = float("inf") if spec.hi is None else spec.hi

        def number(text: str) -> float | int:
            value: float | int = int(text) if integer else float(text)
            if value != value or not lo <= value <= hi:  # NaN or out of range
                raise ValueError(text)
            return value

        return number, f"{'an integer' if integer else 'a number'} from {lo:g} to {hi:g}"
    if typing.get_origin(kind) is Literal:
        choices = tuple(str(c) for c in typing.get_args(kind))

        def choice(text: str) -> str:
            if text.lower() not in choices:
                raise ValueError(text)
            return text.lower()

        return choice, "one of " + ", ".join(choices)
    if Path in (kind, *typing.get_args(kind)):
        return lambda text: Path(text).expanduser(), "a path"
    return str, spec.allowed or "a string"


def _boolean(text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(text)


def read_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every boot setting from `env` (default: the process environment); raises
    `SettingsError` naming every bad variable."""
    reader = _Reader(os.environ if env is None else env)
    values = reader.read()
    problems = reader.problems
    http_port, metrics_port = values.get("http_port", 5000), values.get("metrics_port", 9600)
    if http_port and http_port == metrics_port:
        problems.append(f"HTTP_PORT and METRICS_PORT are both {http_port}: they must differ")
    if ("http_tls_cert" in values) != ("http_tls_key" in values):
        problems.append("HTTP_TLS_CERT and HTTP_TLS_KEY go together: set both (HTTPS) or neither (plain HTTP)")
    for name in ("http_tls_cert", "http_tls_key"):
        if name in values and not values[name].is_file():
            problems.append(f"{name.upper()}={str(values[name])!r} is invalid: no such file")
    if problems:
        raise SettingsError(problems)
    return Settings(**values)


def unknown_variable_warnings(env: Mapping[str, str] | None = None) -> list[str]:
    """A sentence for each variable that is not a setting but looks like a misspelt one (or one in lower case)."""
    env = os.environ if env is None else env
    ours = sorted(SETTING_NAMES)
    warnings = []
    for name in env:
        if name in SETTING_NAMES or name in IOTEDGE_VARIABLES or name in EDGEHUB_VARIABLES:
            continue
        close = difflib.get_close_matches(name.upper(), ours, n=1, cutoff=0.8)
        if close:
            warnings.append(f"{name} is not a setting of this module and is ignored: did you mean {close[0]}?")
    return sorted(warnings)

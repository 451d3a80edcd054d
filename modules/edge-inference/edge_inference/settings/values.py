"""How a setting's text becomes its value, and how one row of the settings table (settings/table.py) is written:
the conversions of their own (providers, per-folder numbers, replica id, API keys, log level), `Spec` and
`setting(...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIN_API_KEY_LENGTH = 16

_PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def parse_providers(text: str) -> tuple[str, ...]:
    """`auto` or a comma list of provider aliases/names, in order, e.g. `cuda,cpu`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(text)
    if [i.lower() for i in items] == ["auto"]:
        return ("auto",)
    resolved: list[str] = []
    known = set(_PROVIDER_ALIASES.values())
    for item in items:
        name = _PROVIDER_ALIASES.get(item.lower(), item)
        if name not in known:
            raise ValueError(item)
        if name not in resolved:
            resolved.append(name)
    return tuple(resolved)


OUTPUT_FOLDERS = ("results", "annotated", "failed", "processed", "review", "telemetry")


@dataclass(frozen=True)
class PerFolder:
    """A limit for each output folder (OUTPUT_RETENTION_DAYS, OUTPUT_MAX_GB): one number for every folder, or
    `folder:number` pairs, `*` for the folders not named (`processed:7,annotated:7,*:90`); 0 is no limit."""

    default: float = 0.0
    folders: tuple[tuple[str, float], ...] = ()

    def of(self, folder: str) -> float:
        return dict(self.folders).get(folder, self.default)

    @property
    def active(self) -> bool:
        return any(self.of(folder) > 0 for folder in OUTPUT_FOLDERS)

    def __str__(self) -> str:
        if not self.folders:
            return f"{self.default:g}"
        pairs = [f"{name}:{value:g}" for name, value in self.folders]
        return ",".join([*pairs, f"*:{self.default:g}"] if self.default else pairs)


def _per_folder(hi: float) -> Callable[[str], PerFolder]:
    def parse(text: str) -> PerFolder:
        default, folders = 0.0, {}
        for item in (part.strip() for part in text.split(",")):
            name, colon, number = item.rpartition(":")
            value = float(number if colon else item)
            if value != value or not 0 <= value <= hi:
                raise ValueError(text)
            name = name.strip() if colon else "*"
            if name == "*":
                default = value
            elif name in OUTPUT_FOLDERS and name not in folders:
                folders[name] = value
            else:
                raise ValueError(text)
        return PerFolder(default, tuple(folders.items()))

    return parse


_FOLDER_PAIRS = f"folder:number pairs (folders {', '.join(OUTPUT_FOLDERS)}; * for the rest)"


def _replica_id(text: str) -> str:
    if not text or not all(c.isalnum() or c in "._-" for c in text) or text.startswith("."):
        raise ValueError(text)
    return text


def _api_key(text: str) -> str:
    """An API key: 16 or more printable ASCII characters, no spaces (it travels in a header and as a password)."""
    if len(text) < MIN_API_KEY_LENGTH or not all(33 <= ord(c) < 127 for c in text):
        raise ValueError("invalid key")  # never the key itself
    return text


def _log_level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(text)
    return text.upper()


@dataclass(frozen=True)
class Spec:
    """How one variable is read and documented (kept in its field's metadata)."""

    meaning: str
    shown: str | None = None  # the default as the docs show it, when not the value itself ("" = none)
    lo: float | None = None
    hi: float | None = None
    parse: Callable[[str], Any] | None = None  # a conversion of its own: raises ValueError on a bad value
    allowed: str = ""  # what `parse` accepts, for the error sentence


def setting(
    default: Any,
    meaning: str,
    *,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    parse: Callable[[str], Any] | None = None,
    allowed: str = "",
    secret: bool = False,
) -> Any:
    """One row of the settings table: a dataclass field carrying its `Spec` (a `secret` is left out of repr)."""
    spec = {"spec": Spec(meaning, shown, lo, hi, parse, allowed)}
    if factory is not None:
        return field(default_factory=factory, metadata=spec, repr=not secret)
    return field(default=default, metadata=spec, repr=not secret)

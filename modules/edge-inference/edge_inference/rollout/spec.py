"""What the twin's `model` and `candidate` desired properties may say, checked, and how a model is shown.

    {"name": "defects", "version": "7.0.1", "url": "https://.../d7.onnx?<SAS>", "sha256": "<64 hex>",
     "labelsUrl": "https://...", "sizeBytes": 12345678}          one of `url` or `path` (under MODELS_DIR)
    {"rollback": true}                                          `model` only: back to the model before
    candidate: the same as a model, plus `sampleRate` (0..1, default 0.1) and `maxMinutes` (1..10080)
    null                                                        `model`: nothing to do; `candidate`: none

`parse_request` turns a desired value into a `ModelSpec`, a `Rollback` or None, or raises `BadSpec` with one
sentence (the twin acknowledges it with `ac: 400`). It is pure: no file or network is touched here.

A URL's query (an Azure SAS token) and user info are secrets: `ModelSpec.shown()` and `redact_url` leave them
out, and `Scrubber` takes them out of any text (an error from a library may quote the URL it failed on). Nothing
that leaves the module (logs, reported properties, results, errors) is built from a spec without them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from edge_inference.share import share_fs

ModelKind = Literal["model", "candidate"]
MODEL_PROPERTIES: tuple[ModelKind, ...] = ("model", "candidate")
MAX_NAME_CHARS = 128
MAX_URL_CHARS = 8192
MAX_PATH_CHARS = 1024
DEFAULT_SAMPLE_RATE = 0.1
MAX_MINUTES = 7 * 24 * 60
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_FIELDS = {"name", "version", "url", "path", "sha256", "labelsUrl", "sizeBytes"}
_CANDIDATE_FIELDS = _FIELDS | {"sampleRate", "maxMinutes"}


class BadSpec(ValueError):
    """A desired `model`/`candidate` value that is refused; the message is the acknowledgement's reason."""


@dataclass(frozen=True)
class SpecRules:
    """What the boot settings allow: plain HTTP (MODEL_ALLOW_HTTP), `path` (MODELS_DIR set), the size cap."""

    allow_http: bool = False
    models_dir_set: bool = False
    max_bytes: int = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Rollback:
    """`{"rollback": true}`: return to the model before the active one."""


@dataclass(frozen=True)
class ModelSpec:
    """A model the twin asks for (or a candidate, with its sampling)."""

    name: str
    version: str
    sha256: str  # lower-case hex
    url: str | None = field(default=None, repr=False)  # may hold a SAS token: never shown as is
    path: str | None = None  # relative to MODELS_DIR
    labels_url: str | None = field(default=None, repr=False)
    size_bytes: int | None = None
    sample_rate: float = DEFAULT_SAMPLE_RATE  # candidate only
    max_minutes: float | None = None  # candidate only

    def shown(self) -> dict[str, Any]:
        """The spec as reported and logged: URLs without their query or user info."""
        body: dict[str, Any] = {"name": self.name, "version": self.version, "sha256": self.sha256}
        if self.url is not None:
            body["url"] = redact_url(self.url)
        if self.path is not None:
            body["path"] = self.path
        if self.labels_url is not None:
            body["labelsUrl"] = redact_url(self.labels_url)
        if self.size_bytes is not None:
            body["sizeBytes"] = self.size_bytes
        return body

    @property
    def title(self) -> str:
        return f"{self.name} {self.version}"

    def scrubber(self) -> Scrubber:
        return Scrubber(u for u in (self.url, self.labels_url) if u)


def redact_url(url: str) -> str:
    """`https://host/path?<redacted>`: no query (a SAS token), no user info, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        tail = "?<redacted>" if parts.query else ""
        return urlunsplit((parts.scheme, host, parts.path, "", "")) + tail
    except ValueError:
        return "<an unreadable URL>"


class Scrubber:
    """Takes the secret parts of some URLs (query, each query value, user info) out of a text."""

    def __init__(self, urls: Any) -> None:
        secrets: set[str] = set()
        for url in urls:
            try:
                parts = urlsplit(url)
                password = parts.password
            except ValueError:
                continue
            if parts.query:
                secrets.add(parts.query)
                for pair in parts.query.split("&"):  # each value as written and as decoded
                    raw = pair.partition("=")[2]
                    secrets.update(v for v in (raw, unquote_plus(raw)) if len(v) >= 4)
            if parts.username:
                secrets.add(parts.username)
            if password:
                secrets.add(password)
        self._secrets = sorted(secrets, key=len, reverse=True)  # the whole query before its parts

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


def digest(value: Any) -> str:
    """A fingerprint of a desired value (the same value again is not a new request); reveals nothing of it."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any, key: str, limit: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadSpec(f"'{key}' must be a non-empty string")
    if len(value) > limit or "\0" in value:
        raise BadSpec(f"'{key}' must be at most {limit} characters, without NUL")
    return value.strip()


def check_url(value: Any, key: str, rules: SpecRules) -> str:
    url = _text(value, key, MAX_URL_CHARS)
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise BadSpec(f"'{key}' is not a URL") from None
    if scheme == "http" and not rules.allow_http:
        raise BadSpec(f"'{key}' is plain http ({redact_url(url)}): only https is allowed (MODEL_ALLOW_HTTP=false)")
    if scheme not in ("https", "http"):
        raise BadSpec(f"'{key}' must be an https URL, got scheme {scheme or 'none'!r}")
    if not host:
        raise BadSpec(f"'{key}' has no host")
    return url


def check_path(value: Any) -> str:
    """A relative path under MODELS_DIR (no `..`, not absolute); symlinks are refused when it is opened."""
    rel = _text(value, "path", MAX_PATH_CHARS).replace("\\", "/").lstrip()
    try:
        share_fs.split(rel)
    except ValueError:
        raise BadSpec(f"'path' must be a relative path inside MODELS_DIR, got {rel[:80]!r}") from None
    return rel


def _number(value: Any, key: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadSpec(f"'{key}' must be a number from {lo:g} to {hi:g}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or not lo <= number <= hi:
        raise BadSpec(f"'{key}' must be a number from {lo:g} to {hi:g}")
    return number


def parse_request(kind: ModelKind, value: Any, rules: SpecRules) -> ModelSpec | Rollback | None:
    """The request a desired `model`/`candidate` value makes; BadSpec with the reason when it is refused."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadSpec(f"'{kind}' must be an object {{name, version, url | path, sha256}} or null")
    fields = {k: v for k, v in value.items() if not str(k).startswith("$")}
    if kind == "model" and "rollback" in fields:
        if fields != {"rollback": True}:
            raise BadSpec('a rollback is exactly {"rollback": true}')
        return Rollback()
    allowed = _CANDIDATE_FIELDS if kind == "candidate" else _FIELDS
    unknown = sorted(str(k)[:64] for k in fields if k not in allowed)
    if unknown:
        raise BadSpec(f"unknown field '{unknown[0]}'; fields: {', '.join(sorted(allowed))}")
    name = _text(fields.get("name"), "name")
    version = _text(fields.get("version"), "version")
    sha = fields.get("sha256")
    if not isinstance(sha, str) or not _SHA256.match(sha.strip()):
        raise BadSpec("'sha256' is required: the 64 hex digits of the model file's SHA-256")
    if ("url" in fields) == ("path" in fields):
        raise BadSpec("give exactly one of 'url' (https) or 'path' (under MODELS_DIR)")
    url = check_url(fields["url"], "url", rules) if "url" in fields else None
    path = None
    if "path" in fields:
        if not rules.models_dir_set:
            raise BadSpec("'path' needs MODELS_DIR (a models share mounted into the module); it is not set")
        path = check_path(fields["path"])
    labels = check_url(fields["labelsUrl"], "labelsUrl", rules) if "labelsUrl" in fields else None
    size = None
    if "sizeBytes" in fields:
        size = int(_number(fields["sizeBytes"], "sizeBytes", 1, 2**53))
        if size != fields["sizeBytes"]:
            raise BadSpec("'sizeBytes' must be a whole number of bytes")
        if size > rules.max_bytes:
            raise BadSpec(f"'sizeBytes' {size} is over MODEL_MAX_MB ({rules.max_bytes // 1048576} MB)")
    sample_rate, max_minutes = DEFAULT_SAMPLE_RATE, None
    if "sampleRate" in fields:
        sample_rate = _number(fields["sampleRate"], "sampleRate", 0.0, 1.0)
    if "maxMinutes" in fields:
        max_minutes = _number(fields["maxMinutes"], "maxMinutes", 1, MAX_MINUTES)
    return ModelSpec(name, version, sha.strip().lower(), url, path, labels, size, sample_rate, max_minutes)

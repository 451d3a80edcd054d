"""Logging set-up, in one place: one line per event to stdout, secrets redacted, control characters escaped.

Two line formats (`LOG_FORMAT`):

    iotedge  <6> 2026-11-30 10:00:00.123 +00:00 INFO edge_inference.app [MainThread] started
    text     2026-11-30 10:00:00,123 INFO edge_inference.app [MainThread] started

`iotedge` is the format IoT Edge's log tools read: the syslog severity in angle brackets first, then the UTC
time as `yyyy-MM-dd HH:mm:ss.fff zzz`, so `iotedge logs --since`, the GetModuleLogs / UploadModuleLogs direct
methods and the portal's troubleshooting page can filter this module by level. `text` is the local console
format. `auto` (the default) picks `iotedge` inside IoT Edge and `text` elsewhere.

Every line is one line whatever a message holds: C0 and C1 control characters (`\\r`, `\\n`, the ESC of ANSI
sequences, NUL, ...), DEL and the Unicode line and paragraph separators U+2028 / U+2029 are written as escapes
(`\\r`, `\\x1b`, `\\u2028`), so a file name or a twin value cannot forge a log line or repaint a terminal.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from typing import Literal

LogFormat = Literal["iotedge", "text"]

_SECRETS = [
    re.compile(r"(SharedAccessKey=)[^;\s\"']+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature\s+)[^\s\"']+", re.IGNORECASE),
    re.compile(r"(\bsig=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"(\"?password\"?\s*[:=]\s*\"?)[^\s\",}]+", re.IGNORECASE),
]

# Syslog severities (RFC 5424), as IoT Edge reads them: 7 debug, 6 informational, 4 warning, 3 error, 2 critical.
SYSLOG_SEVERITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_ESCAPES = {
    code: _NAMED_ESCAPES.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _CONTROLS
}


def redact(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(r"\1<redacted>", text)
    return text


def escape_controls(text: str) -> str:
    """`text` with every control and line-separator character written as an escape: one line, no terminal codes."""
    return text.translate(_ESCAPES)


def syslog_severity(levelno: int) -> int:
    """The syslog severity of a Python level; levels between the named ones take the next more severe one."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return SYSLOG_SEVERITY[level]
    return SYSLOG_SEVERITY[logging.DEBUG]


class RedactingFormatter(logging.Formatter):
    """The `text` format: the whole line (message, exception, stack) redacted and escaped into one line."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(redact(super().format(record)))


class IoTEdgeFormatter(RedactingFormatter):
    """The `iotedge` format: `<severity> yyyy-MM-dd HH:mm:ss.fff +00:00 LEVEL logger [thread] message`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d} +00:00"

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_severity(record.levelno)}> {super().format(record)}"


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "iotedge":
        return IoTEdgeFormatter()
    return RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")


def setup_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("azure.iot.device", "paho", "watchdog", "tornado", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # watchdog's inotify observer, watching a folder made under the share a moment ago, adds the same callback to
    # its watch twice and warns on stderr (a traceback-like pair of lines); the second add replaces the first with
    # itself, so nothing is lost: the warning only clutters the console
    warnings.filterwarnings("ignore", r"Callback with id .* already exists for watch", RuntimeWarning, "watchdog")


class WarnOnce:
    """A warning logged once per key (a file, a folder, the share), through the caller's logger. Bounded: a share
    of ever-new bad names cannot grow it forever. `again(key)` lets a key warn again (its condition ended)."""

    def __init__(self, logger: logging.Logger, limit: int = 10_000) -> None:
        self._log = logger
        self._limit = limit
        self._keys: set[str] = set()

    def __call__(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        if key in self._keys:
            return
        if len(self._keys) >= self._limit:
            self._keys.clear()
        self._keys.add(key)
        self._log.warning(msg, *args, exc_info=exc_info)

    def again(self, key: str) -> None:
        self._keys.discard(key)

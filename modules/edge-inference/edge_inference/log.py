"""Logging set-up, in one place: one line per event to stdout, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys

_SECRETS = [
    re.compile(r"(SharedAccessKey=)[^;\s\"']+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature\s+)[^\s\"']+", re.IGNORECASE),
    re.compile(r"(\bsig=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"(\"?password\"?\s*[:=]\s*\"?)[^\s\",}]+", re.IGNORECASE),
]


def redact(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(r"\1<redacted>", text)
    return text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record)).replace("\n", "\\n")


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("azure.iot.device", "paho", "watchdog", "waitress", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

"""Direct methods: `getStatus`, `pause`, `resume`, `reprocess`, `selfTest` (DESIGN.md "Direct methods"), and the
model rollout's `getModels`, `rollbackModel`, `promoteCandidate` (rollout/controller.py).

`MethodDispatcher.handle(name, payload)` returns `(status, JSON object)` and never raises: a bad payload is
400 with a sentence saying what was expected, an unknown method 404, a failure inside the module 500 with the
error message. Payloads for methods without arguments may be anything (the portal sends null or {}).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge_inference.control.protocols import ModuleControl

log = logging.getLogger(__name__)

METHODS = ("getStatus", "pause", "resume", "reprocess", "selfTest", "getModels", "rollbackModel", "promoteCandidate")
MAX_PATTERN_CHARS = 1024


def _error(message: str) -> dict[str, Any]:
    return {"error": message}


def check_relative_pattern(pattern: str) -> str | None:
    """Why `pattern` (a relative POSIX path or glob inside the input share) is unacceptable, or None."""
    if not pattern.strip():
        return "'path' is empty"
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"'path' is longer than {MAX_PATTERN_CHARS} characters"
    if "\0" in pattern:
        return "'path' contains a NUL character"
    text = pattern.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return "'path' must be relative to the input share"
    if any(part == ".." for part in text.split("/")):
        return "'path' must not contain '..'"
    return None


class MethodDispatcher:
    """Maps a direct method call onto the running module (`ModuleControl`)."""

    def __init__(self, control: ModuleControl) -> None:
        self.control = control
        self._handlers: dict[str, Callable[[Any], tuple[int, dict[str, Any]]]] = {
            "getStatus": self._get_status,
            "pause": self._pause,
            "resume": self._resume,
            "reprocess": self._reprocess,
            "selfTest": self._self_test,
            "getModels": lambda payload: (200, dict(self.control.models())),
            "rollbackModel": lambda payload: self.control.rollback_model(),
            "promoteCandidate": lambda payload: self.control.promote_candidate(),
        }

    def handle(self, name: str, payload: Any) -> tuple[int, dict[str, Any]]:
        handler = self._handlers.get(name)
        if handler is None:
            return 404, _error(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
        try:
            status, body = handler(payload)
        except Exception as e:
            log.exception("direct method %s failed", name)
            return 500, _error(f"{name} failed: {e}")
        log.info("direct method %s -> %d", name, status)
        return status, body

    def _get_status(self, payload: Any) -> tuple[int, dict[str, Any]]:
        return 200, dict(self.control.status())

    def _state(self, expected_paused: bool) -> dict[str, Any]:
        """`{"paused": ...}` as the module now reports it (its status may also say why it is paused)."""
        status = self.control.status()
        paused = status.get("paused", expected_paused) if isinstance(status, dict) else expected_paused
        return {"paused": bool(paused)}

    def _pause(self, payload: Any) -> tuple[int, dict[str, Any]]:
        self.control.pause()
        return 200, self._state(True)

    def _resume(self, payload: Any) -> tuple[int, dict[str, Any]]:
        self.control.resume()
        return 200, self._state(False)

    def _reprocess(self, payload: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(payload, dict):
            return 400, _error('reprocess expects a JSON object {"path": "<relative path or glob>"}')
        pattern = payload.get("path")
        if not isinstance(pattern, str):
            return 400, _error("reprocess expects 'path': a relative path or glob inside the input share (a string)")
        why = check_relative_pattern(pattern)
        if why is not None:
            return 400, _error(why)
        try:
            queued = self.control.reprocess(pattern)
        except ValueError as e:
            return 400, _error(str(e))
        if queued == 0:
            return 404, {"queued": 0, "error": f"no processed frame matches {pattern!r}"}
        return 200, {"queued": queued}

    def _self_test(self, payload: Any) -> tuple[int, dict[str, Any]]:
        result = dict(self.control.self_test())
        return (200 if result.get("passed") is True else 500), result

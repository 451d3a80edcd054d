"""Azure Stack Edge share file events (edgeHub input `fileEvents`) -> relative paths to enqueue.

The body is a JSON list of events, or a single event object:

    [{"ChangeType": "Created", "ShareRelativeFilePath": "\\\\line1\\\\cam2\\\\0001.jpg", "ShareName": "input"}]

`parse_file_events(body)` returns the relative POSIX paths (`line1/cam2/0001.jpg`) of the events worth
enqueuing; the IoT client hands each to `ModuleControl.enqueue_path(rel, "fileEvent")`, which de-duplicates
against the watcher. Decisions:
- change types taken: Created, Modified, Changed, Renamed (any case); Deleted and others are ignored;
- Windows separators become `/`; leading separators are dropped (the path is relative to the share root);
- names are NOT URL-decoded: `%` is a legal file-name character on SMB/NFS shares and ASE sends the path as
  the share shows it, so decoding would corrupt real names (a frame an event names wrongly is still found by
  the watcher's reconciliation sweep);
- refused with a logged reason: `..` components, absolute/UNC/drive-letter paths, NUL or control characters,
  empty or over-long paths, a component over NAME_MAX (255) bytes, non-image extensions; a refused event is
  skipped alone, the rest of the message is still taken;
- at most MAX_EVENTS events per message are looked at; duplicates within one message are returned once.
Never raises on any body.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from edge_inference.vision.decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

CHANGE_TYPES = frozenset({"created", "modified", "changed", "renamed"})
MAX_EVENTS = 10_000
MAX_PATH_CHARS = 4096
NAME_MAX = 255  # bytes in one path component (Linux file systems; cifs and nfs agree)
_DRIVE = re.compile(r"^[A-Za-z]:")


def relative_share_path(raw: str) -> tuple[str | None, str]:
    """(relative POSIX path, "") for an acceptable ShareRelativeFilePath, else (None, reason)."""
    if not raw or not raw.strip():
        return None, "empty path"
    if len(raw) > MAX_PATH_CHARS:
        return None, "path too long"
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        return None, "NUL or control character in path"
    if _DRIVE.match(raw):
        return None, "drive-letter path"
    text = raw.replace("\\", "/")
    if text.startswith("//"):
        return None, "UNC or absolute path"
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None, "'..' in path"
    if not parts:
        return None, "no file name"
    if any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX for p in parts):
        return None, f"a path component over {NAME_MAX} bytes"
    rel = "/".join(parts)
    suffix = ("." + parts[-1].rsplit(".", 1)[-1].lower()) if "." in parts[-1] else ""
    if suffix not in IMAGE_EXTENSIONS:
        return None, f"not an image extension ({suffix or 'none'})"
    return rel, ""


def parse_file_events(body: Any) -> list[str]:
    """The relative paths to enqueue from one `fileEvents` message body (bytes, text or parsed JSON)."""
    events: Any = body
    if isinstance(body, bytes | bytearray):
        try:
            events = json.loads(bytes(body).decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            log.warning("fileEvents: body is not JSON (%s); ignored", e)
            return []
    elif isinstance(body, str):
        try:
            events = json.loads(body)
        except json.JSONDecodeError as e:
            log.warning("fileEvents: body is not JSON (%s); ignored", e)
            return []
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):
        log.warning("fileEvents: expected a list of events, got %s; ignored", type(events).__name__)
        return []
    if len(events) > MAX_EVENTS:
        log.warning("fileEvents: %d events in one message, only the first %d taken", len(events), MAX_EVENTS)
    paths: list[str] = []
    for event in events[:MAX_EVENTS]:
        if not isinstance(event, dict):
            log.warning("fileEvents: event is not an object; skipped")
            continue
        change = event.get("ChangeType")
        if not isinstance(change, str) or change.lower() not in CHANGE_TYPES:
            log.debug("fileEvents: change type %r not taken", change)
            continue
        raw = event.get("ShareRelativeFilePath")
        if not isinstance(raw, str):
            log.warning("fileEvents: event without a ShareRelativeFilePath string; skipped")
            continue
        rel, why = relative_share_path(raw)
        if rel is None:
            level = logging.DEBUG if why.startswith("not an image") else logging.WARNING
            log.log(level, "fileEvents: %r refused: %s", raw[:200], why)
            continue
        if rel not in paths:
            paths.append(rel)
    return paths

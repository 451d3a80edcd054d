"""Live settings outside IoT Edge: a watched JSON file of twin desired properties (LOCAL_TWIN_PATH).

The file holds what the module twin's `desired` section would, e.g. `{"confidenceThreshold": 0.7,
"saveAnnotated": true}`, and goes through the very path of a twin patch (iot/twin.py `TwinState.apply`): each
property is validated, the valid ones apply to the next frame, an invalid one is refused with `ac: 400` while its
value in force stays. The acknowledgements, `runtime` and `stats` are written beside the file as
`<name>.reported.json` (twin.json -> twin.reported.json), atomically, in the form of IoT Hub's reported properties.

- The file is read at start, before the first frame (the properties it does not set are reported as boot values,
  `ac: 203`), then checked every CHECK_INTERVAL_SECONDS. A change is read once the file has looked the same for
  one more check (an editor half-way through a save is not read) and applied as a whole document, the way the
  IoT SDK hands over the whole desired document after a reconnect: a property taken out of the file keeps its
  value in force.
- Each reading is the next desired `$version` (1, 2, ...), which the acks carry as `av`; a `$version` written
  in the file is ignored.
- A file that is empty, not UTF-8, not JSON, not one JSON object or over MAX_BYTES is one WARNING line saying
  so, and the settings in force stay; a missing file is one INFO line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_inference.iot.profile_rules import ServedModel
from edge_inference.iot.twin import ModelRequests, ReportedProperties, TwinState
from edge_inference.ops.live_settings import LiveSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.share.results import write_atomic
from edge_inference.workers import PeriodicWorker, Supervisor

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 0.25
STATS_INTERVAL_SECONDS = 30.0
MAX_BYTES = 1024 * 1024
EXAMPLE = '{"confidenceThreshold": 0.7, "saveAnnotated": true}'

Signature = tuple[int, ...] | None  # (inode, size, mtime, ctime) of the file, (errno,) when stat fails, None: absent


def reported_path(path: Path) -> Path:
    """Where the acknowledgements go: `twin.json` -> `twin.reported.json` in the same folder."""
    stem = path.name[: -len(".json")] if path.name.lower().endswith(".json") else path.name
    return path.with_name(f"{stem}.reported.json")


class LocalTwinFile:
    """The twin of local mode: `start()` applies the file before the first frame and watches it on a worker
    (`local-twin`); `stop()` ends the watch. The reported document is kept here and rewritten whole."""

    def __init__(
        self,
        path: Path,
        live: LiveSettings,
        metrics: MetricsRegistry,
        runtime_info: Callable[[], dict[str, Any]],
        stats: Callable[[], dict[str, Any]],
        *,
        supervisor: Supervisor | None = None,
        interval: float = CHECK_INTERVAL_SECONDS,
        stats_interval: float = STATS_INTERVAL_SECONDS,
        reported: ReportedProperties | None = None,
        models: ModelRequests | None = None,
        served: Callable[[], ServedModel] | None = None,
    ) -> None:
        self.path = path
        self.reported_path = reported_path(path)
        # `model` and `candidate` go to the model rollout as from the module twin; it reports through `reported`;
        # `profiles` and `classThresholds` are checked against the model in service (`served`), as from the twin
        self.twin = TwinState(live, metrics, reported, models, served=served)
        self.runtime_info = runtime_info
        self.stats = stats
        self.stats_interval = stats_interval
        self.reported: dict[str, Any] = {}
        self.loads = 0  # readings applied: the desired $version of the last one
        self._seen: Signature = None  # what the last check saw
        self._read: Signature = None  # what was last read (applied or refused)
        self._unwritten = False
        self._next_stats = 0.0
        self._worker = PeriodicWorker("local-twin", interval, supervisor, tick=self.check, tolerant=True, daemon=True)

    # -- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Apply the file as it is now and write the reported document, then watch the file."""
        self._seen = self._read = self._signature()
        if self._seen is None:
            log.info(
                "local twin %s: no such file yet; write desired properties into it to change live settings"
                " (e.g. %s); acks in %s",
                self.path,
                EXAMPLE,
                self.reported_path.name,
            )
        if self._seen is None or not self._load(full=True):
            self.twin.apply({}, full=True)  # every property reported with its boot value
        else:
            log.info(
                "local twin %s applied; edit it to change live settings, acks in %s", self.path, self.reported_path
            )
        self.twin.report_runtime_once(self.runtime_info)
        self._next_stats = time.monotonic() + self.stats_interval
        self._write_reported()
        self._worker.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._worker.stop(timeout)

    # -- the watch ------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """One look at the file: read a change once it has held still for a check; stats when due."""
        signature = self._signature()
        if signature != self._seen:
            self._seen = signature  # changed since the last look: read it at the next one if it holds still
        elif signature != self._read:
            self._read = signature
            if signature is None:
                log.info("local twin %s was removed; the settings in force stay", self.path)
            else:
                self._load(full=False)
        if time.monotonic() >= self._next_stats:
            self._next_stats = time.monotonic() + self.stats_interval
            self.twin.offer_stats(self.stats())
        if self.twin.has_pending or self._unwritten:
            self._write_reported()

    def _signature(self) -> Signature:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return (exc.errno or -1,)
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _load(self, *, full: bool) -> bool:
        """Read the file and apply it as the next desired version; False (one line logged) when it cannot be."""
        desired = self._desired()
        if desired is None:
            return False
        self.loads += 1
        self.twin.apply({**desired, "$version": self.loads}, full=full)
        return True

    def _desired(self) -> dict[str, Any] | None:
        problem = ""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
        except OSError as exc:
            problem = f"cannot be read ({exc.strerror or exc})"
        else:
            problem, desired = parse_twin_file(data)
            if not problem:
                return desired
        log.warning("local twin %s %s; the settings in force stay", self.path, problem)
        return None

    def _write_reported(self) -> None:
        self.reported.update(self.twin.take_reported())
        text = json.dumps(self.reported, indent=2, ensure_ascii=False, default=str) + "\n"
        try:
            write_atomic(self.reported_path.parent, self.reported_path.name, text.encode(), fsync=False)
        except OSError as exc:
            if not self._unwritten:
                log.warning("local twin: cannot write %s (%s); retrying", self.reported_path, exc.strerror or exc)
            self._unwritten = True
            return
        self._unwritten = False


def parse_twin_file(data: bytes) -> tuple[str, dict[str, Any]]:
    """(problem, desired properties): the problem in words, "" when the bytes are one JSON object."""
    if len(data) > MAX_BYTES:
        return f"is larger than {MAX_BYTES // (1024 * 1024)} MiB", {}
    if not data.strip():
        return f"is empty: write one JSON object of desired properties, e.g. {EXAMPLE}", {}
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "is not UTF-8 text", {}
    except json.JSONDecodeError as exc:
        return f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", {}
    except (ValueError, RecursionError) as exc:  # nesting deeper than the parser goes, a number it refuses
        return f"cannot be read as JSON ({type(exc).__name__})", {}
    if not isinstance(doc, dict):
        return f"must hold one JSON object of desired properties (e.g. {EXAMPLE}), not {_JSON_KINDS[type(doc)]}", {}
    return "", doc


_JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true or false"}
_JSON_KINDS[type(None)] = "null"

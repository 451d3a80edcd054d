"""The intake gate: whether the pipeline may take frames from the share, and which frames it has in flight.

Intake pauses while any reason is set; each reason is one of the names below, and nowhere else in the code is a
pause reason spelt:

    paused            an operator's `pause` direct method (cleared by `resume`)
    twinPaused        the module twin's desired `paused: true` (followed from the live settings)
    inputUnavailable  the input share (or the claim area on it) does not answer      -> alarm inputShareUnavailable
    outputError       the output share is unmounted or refuses writes                -> alarm outputShareUnavailable
    outputFull        a result write ran out of space (ENOSPC/EDQUOT)
    outputShareLow    the alarm outputShareLow is raised (free space under MIN_FREE_MB; ops/health.py)

A reason that is an alarm too raises and clears it in the alarm registry; the one alarm that pauses intake
(outputShareLow) is followed from the registry. Each change sets `edge_inference_paused{reason}` and logs one
line. When the last reason goes, or anyone asks for it (`want_reconcile`), the claim area is due to be looked
at again (`take_reconcile`): frames kept claimed while the gate was shut are picked up then.

The in-flight table (relative path -> frame id) is what intake has claimed and not yet finished; intake, the
finish stage and the commands meet here instead of in one lock around everything.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from edge_inference.ops.alarms import INPUT_SHARE_UNAVAILABLE, OUTPUT_SHARE_LOW, OUTPUT_SHARE_UNAVAILABLE, AlarmRegistry
from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry

log = logging.getLogger(__name__)

PAUSED = "paused"
TWIN_PAUSED = "twinPaused"
INPUT_UNAVAILABLE = "inputUnavailable"
OUTPUT_ERROR = "outputError"
OUTPUT_FULL = "outputFull"
OUTPUT_LOW = OUTPUT_SHARE_LOW  # the alarm that pauses intake gives the reason its name

OPERATOR_REASONS = frozenset({PAUSED, TWIN_PAUSED})  # a pause an operator asked for (getStatus `paused`)
OUTPUT_REASONS = (OUTPUT_FULL, OUTPUT_ERROR)  # lifted by the housekeeping once the output share takes writes
_ALARM_OF_REASON = {INPUT_UNAVAILABLE: INPUT_SHARE_UNAVAILABLE, OUTPUT_ERROR: OUTPUT_SHARE_UNAVAILABLE}
_REASON_OF_ALARM = {OUTPUT_SHARE_LOW: OUTPUT_LOW}


class IntakeGate:
    """Pause reasons, the in-flight table, and the claims-to-reconcile flag; thread-safe."""

    def __init__(self, metrics: MetricsRegistry, alarms: AlarmRegistry, live: LiveSettings) -> None:
        self.metrics = metrics
        self.alarms = alarms
        self._lock = threading.Lock()
        self._blocked: dict[str, str] = {}  # reason -> message
        self._in_flight: dict[str, str] = {}  # rel_path -> frame_id
        self._closed = threading.Event()
        self._reconcile = threading.Event()
        alarms.subscribe(self._follow_alarm)
        live.subscribe(self._follow_twin)
        self._follow_twin(None, live.current())

    # -- pause reasons ------------------------------------------------------------------------------------------
    def set_reason(self, reason: str, active: bool, message: str = "") -> None:
        """Set or lift one pause reason (a change is logged, counted, and raises/clears its alarm)."""
        text = message or reason
        with self._lock:
            was = reason in self._blocked
            if active:
                self._blocked[reason] = text
            else:
                self._blocked.pop(reason, None)
        if was == active:
            return
        self.metrics.paused.labels(reason=reason).set(1 if active else 0)
        log.warning("intake %s: %s", "paused" if active else "resumed", text)
        if not active:
            self._reconcile.set()
        alarm = _ALARM_OF_REASON.get(reason)
        if alarm is not None:
            self.alarms.set(alarm, active, {"reason": text})

    def block(self, reason: str, message: str = "") -> None:
        self.set_reason(reason, True, message)

    def unblock(self, reason: str) -> None:
        self.set_reason(reason, False)

    @property
    def blocked(self) -> dict[str, str]:
        """The reasons intake is paused for, with their messages (empty: open)."""
        with self._lock:
            return dict(self._blocked)

    def is_blocked(self, reason: str | None = None) -> bool:
        with self._lock:
            return bool(self._blocked) if reason is None else reason in self._blocked

    @property
    def paused(self) -> bool:
        """An operator's pause (direct method or twin) is in force."""
        with self._lock:
            return bool(self._blocked.keys() & OPERATOR_REASONS)

    def _follow_alarm(self, alarm: str, active: bool, details: dict[str, Any]) -> None:
        reason = _REASON_OF_ALARM.get(alarm)
        if reason is not None:
            self.set_reason(reason, active, f"{alarm}: {details}")

    def _follow_twin(self, _old: TwinSettings | None, new: TwinSettings) -> None:
        self.set_reason(TWIN_PAUSED, new.paused, "paused by the module twin")

    # -- closing for good (shutdown) ----------------------------------------------------------------------------
    def close(self) -> None:
        """Take nothing new from now on (the module is draining)."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def accepting(self) -> bool:
        """Open: not closed, and no pause reason set."""
        return not self._closed.is_set() and not self.is_blocked()

    # -- in flight ----------------------------------------------------------------------------------------------
    def begin(self, rel_path: str, frame_id: str) -> bool:
        """Mark a frame in flight; False when it already is."""
        with self._lock:
            if rel_path in self._in_flight:
                return False
            self._in_flight[rel_path] = frame_id
            return True

    def end(self, rel_path: str) -> None:
        with self._lock:
            self._in_flight.pop(rel_path, None)

    def in_flight(self, rel_path: str) -> bool:
        with self._lock:
            return rel_path in self._in_flight

    def in_flight_paths(self) -> set[str]:
        with self._lock:
            return set(self._in_flight)

    @property
    def in_flight_count(self) -> int:
        with self._lock:
            return len(self._in_flight)

    # -- claims to look at again --------------------------------------------------------------------------------
    def want_reconcile(self) -> None:
        """Frames were left claimed (a failed write, a share that went away): look at the claim area again."""
        self._reconcile.set()

    def take_reconcile(self) -> bool:
        """True (once) when the claim area is due to be looked at again; clears the flag."""
        due = self._reconcile.is_set()
        self._reconcile.clear()
        return due

    @property
    def reconcile_wanted(self) -> bool:
        return self._reconcile.is_set()

"""What the model rollout says about itself: the state machine of its two lanes (`model`, `candidate`), the
acknowledgements of the twin's `model` and `candidate` (remembered in rollout.json, so a restart reports them
again, and put into the reported properties), and the reported `runtime` after every change of state.

    state      idle | fetching {bytes, totalBytes} | verifying | warming | active | failed {reason, ac} |
               rollingBack; the candidate lane also: evaluating. Each with `since` and its `target`.
    runtime    `runtime.model` names the serving model (it changes only with a swap); `runtime.model.rollout`
               is the model lane's state. Download progress is reported at most every PROGRESS_REPORT_S.

Reported properties are merged into the twin (JSON merge patch): a key an object no longer has is reported as
null, so that what the twin shows is what is in force (no `bytes` of a download left beside `active`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from edge_inference.entities import utc_now_iso
from edge_inference.iot.twin import ReportedProperties
from edge_inference.rollout.store import ModelStore
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.serving import ModelSlot

PROGRESS_REPORT_S = 2.0
LANES = ("model", "candidate")

RuntimeReport = Callable[[OnnxModel, dict[str, Any]], dict[str, Any]]


class RolloutRecord:
    """Thread-safe: the rollout worker writes; the twin's thread and getStatus read and acknowledge."""

    def __init__(
        self, store: ModelStore, reported: ReportedProperties, slot: ModelSlot, runtime_report: RuntimeReport
    ) -> None:
        self.store = store
        self.reported = reported
        self.slot = slot
        self.runtime_report = runtime_report
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {lane: {"state": "idle", "since": utc_now_iso()} for lane in LANES}
        self._reported_at = 0.0
        self._sent: dict[str, Any] = {}  # what was last reported per key: keys gone since are reported as null

    # -- the state machine ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The model lane's state, with the candidate lane's under `candidate`."""
        with self._lock:
            return {**self._states["model"], "candidate": dict(self._states["candidate"])}

    def lane(self, lane: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._states[lane])

    def set_state(self, lane: str, state: str, target: dict[str, Any] | None = None, **info: Any) -> None:
        with self._lock:
            self._states[lane] = {
                "state": state,
                "since": utc_now_iso(),
                **({"target": target} if target else {}),
                **info,
            }
        self.report_runtime()

    def progress(self, lane: str, got: int, total: int | None) -> None:
        with self._lock:
            self._states[lane] = {**self._states[lane], "bytes": got, "totalBytes": total}
            due = time.monotonic() - self._reported_at >= PROGRESS_REPORT_S
        if due:
            self.report_runtime()

    def report_runtime(self) -> None:
        with self._lock:
            self._reported_at = time.monotonic()
            state = dict(self._states["model"])
            runtime = self.runtime_report(self.slot.active, state)
            rollout = _nulls_for_gone(self._sent.get("rollout"), state)
            self._sent["rollout"] = state
        runtime["model"]["rollout"] = rollout
        self.reported.put({"runtime": runtime})

    # -- acknowledgements -------------------------------------------------------------------------------------
    def ack(self, kind: str) -> dict[str, Any] | None:
        """The last acknowledgement of `kind` (also the one before a restart)."""
        ack = (self.store.get("acks") or {}).get(kind)
        return dict(ack) if isinstance(ack, dict) else None

    def last_version(self, kind: str) -> int | None:
        """The desired `$version` the last acknowledgement answered (a method's action answers it too)."""
        version = (self.ack(kind) or {}).get("av")
        return version if isinstance(version, int) else None

    def set_ack(self, kind: str, ack: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.store.update(acks={**(self.store.get("acks") or {}), kind: ack})
            value = ack.get("value")
            sent = {**ack, "value": _nulls_for_gone(self._sent.get(kind), value)} if isinstance(value, dict) else ack
            self._sent[kind] = value
        self.reported.put({kind: sent})
        return sent


def _nulls_for_gone(before: Any, now: dict[str, Any]) -> dict[str, Any]:
    """`now`, with null for each key `before` had that `now` has not (one level: what a merge patch needs)."""
    gone = {key: None for key in before if key not in now} if isinstance(before, dict) else {}
    return {**gone, **now}

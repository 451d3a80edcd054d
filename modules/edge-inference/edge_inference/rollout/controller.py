"""The model rollout: the `model-rollout` worker, the swap, rollbacks, the candidate, acknowledgements, alarms.

    twin `model` (checked by iot/twin.py) --desired()--> a job --worker--> prepare.py (fetching, verifying,
    warming) --> the swap (vision/serving.py `ModelSlot`, between two batches) | failed: the model in force
    serves throughout

Acknowledgements (IoT Plug and Play; record.py keeps them): `value` is what is in force (the active model; the
candidate and its stats), `ac` 202 while working, then 200, 400 (the value cannot work) or 500 (it could not be
fetched or loaded now), `ad` the reason. A refusal raises `modelRolloutFailed` (cleared when the next rollout
starts); a rollback the module makes by itself (frames failing on a model on probation, a crash on
probation, a remembered model that no longer loads) raises `modelRolledBack` (cleared by the next swap).

Idempotence: every desired value is fingerprinted (spec.digest). The whole desired document that comes after
a reconnect or restart starts nothing for a value handled already; it reports the last acknowledgement again
(and resumes a download a restart cut). A patch is always a new request.

Direct methods `rollbackModel` and `promoteCandidate` run as jobs too (`run_job` waits up to METHOD_WAIT_S,
then answers 202); `getModels` is `models()`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_inference.errors import RolloutError
from edge_inference.ops.alarms import MODEL_ROLLED_BACK, MODEL_ROLLOUT_FAILED, AlarmRegistry
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.rollout.fetch import FetchCancelled, Wait
from edge_inference.rollout.prepare import ModelPreparer
from edge_inference.rollout.record import RolloutRecord
from edge_inference.rollout.shadow import CandidateShadow
from edge_inference.rollout.spec import BadSpec, ModelKind, ModelSpec, Rollback, SpecRules
from edge_inference.rollout.startup import StartingModel, boot_entry, load_entry
from edge_inference.rollout.store import ModelEntry, ModelStore
from edge_inference.settings import Settings
from edge_inference.vision.serving import ModelSlot, SlotEvent
from edge_inference.workers import Supervisor, Worker

log = logging.getLogger(__name__)

METHOD_WAIT_S = 20.0  # a direct method waits this long for its job (IoT Hub's own method timeout is 30 s)
JobKind = Literal["model", "candidate", "rollback", "promote", "nothing"]


@dataclass
class Job:
    kind: JobKind
    spec: ModelSpec | None = None
    version: int | None = None
    fingerprint: str = ""
    by: str = "the twin"
    generation: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[int, dict[str, Any]] = (202, {})

    @property
    def lane(self) -> ModelKind:
        return "candidate" if self.kind == "candidate" else "model"


class ModelRollout(Worker):
    """The `model-rollout` thread (a daemon: a verify cannot be cut short) and the twin's `ModelRequests`."""

    def __init__(
        self,
        settings: Settings,
        slot: ModelSlot,
        starting: StartingModel,
        store: ModelStore,
        preparer: ModelPreparer,
        shadow: CandidateShadow,
        record: RolloutRecord,
        alarms: AlarmRegistry,
        metrics: MetricsRegistry,
        rules: SpecRules,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("model-rollout", supervisor, daemon=True)
        self.settings = settings
        self.slot = slot
        self.store = store
        self.preparer = preparer
        self.shadow = shadow
        self.record = record
        self.alarms = alarms
        self.metrics = metrics
        self.rules = rules
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._events: deque[SlotEvent] = deque()
        self._lock = threading.Lock()
        self._generation = {"model": 0, "candidate": 0}
        self._entry = starting.entry  # what serves
        self._previous: ModelEntry | None = None  # what served before, while the slot keeps it (probation)
        self._candidate: ModelSpec | None = None
        slot.subscribe(self._events.append)
        store.remove_parts(keep=(store.get("pending") or {}).get("sha256"))
        self._at_start(starting)

    # -- the twin's side (the IoT client's owner thread) ------------------------------------------------------
    def desired(
        self,
        kind: ModelKind,
        request: ModelSpec | Rollback | BadSpec | None,
        *,
        version: int | None,
        full: bool,
        absent: bool,
        fingerprint: str,
    ) -> dict[str, Any]:
        handled = dict(self.store.get("handled") or {})
        if (full and handled.get(kind) == fingerprint) or absent:
            pending = self.store.get("pending") or {}
            if isinstance(request, ModelSpec) and pending.get("fingerprint") == fingerprint:
                log.info("resuming the %s rollout of %s cut by a restart", kind, request.title)
                return self._enqueue(Job(kind, request, version, fingerprint))
            if absent and pending.get("kind") == kind:  # asked for no more: its part is not kept
                self.store.update(pending=None)
            return self.record.ack(kind) or self._in_force_ack(kind, version, 203, "in force (not set in the twin)")
        self.store.update(handled={**handled, kind: fingerprint})
        if isinstance(request, BadSpec):
            return self._refuse(kind, version, 400, str(request), None)
        if isinstance(request, Rollback):
            return self._enqueue(Job("rollback", None, version, fingerprint))
        if kind == "model" and (request is None or request.sha256 == self.slot.active.sha256):
            self._bump("model")  # a rollout under way for another model stops
            why = "no model asked: the model in force stays" if request is None else f"{request.title} is active"
            return self.record.set_ack(kind, self._in_force_ack(kind, version, 200, why))
        return self._enqueue(Job(kind, request, version, fingerprint))

    # -- direct methods and getStatus -------------------------------------------------------------------------
    def run_job(self, kind: JobKind, wait: float = METHOD_WAIT_S) -> tuple[int, dict[str, Any]]:
        method = "rollbackModel" if kind == "rollback" else "promoteCandidate"
        job = Job(kind, version=self.record.last_version("model"), by=f"the {method} method")
        self._enqueue(job)
        if not job.done.wait(wait):
            return 202, {"state": self.record.state(), "message": f"still working after {wait:g} s: see getStatus"}
        return job.result

    def models(self) -> dict[str, Any]:
        """getModels: the active model, the candidate, the rollback targets and the cache, with hashes."""
        candidate = self._candidate
        return {
            "active": {**self._entry.shown(), "provider": self.slot.active.provider},
            "onProbation": self.slot.previous is not None,
            "candidate": None if candidate is None else {**candidate.shown(), "stats": self.shadow.stats()},
            "rollbackTo": [e.shown() for e in self.store.history() if self.store.has(e)],
            "cached": self.store.cached(),
            "state": self.record.state(),
        }

    def close(self) -> None:
        """A clean stop: the next start is not taken for a crash."""
        self.store.update(running=False)

    # -- the worker ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopping:
            try:
                job: Job | None = self._jobs.get(timeout=0.5)
            except queue.Empty:
                job = None
            self._housekeeping()
            if job is not None:
                self._do(job)
                self._housekeeping()

    def wake(self) -> None:
        self._jobs.put(Job("nothing"))

    def _housekeeping(self) -> None:
        self.slot.tick()
        while self._events:
            self._slot_event(self._events.popleft())
        reports = self.shadow.take_reports()
        if reports and self._candidate is not None:
            value = {**self._candidate_value(), "stats": reports[-1]}
            if reports[-1].get("state") == "ended":
                self._candidate = None
                self.store.update(candidate=None)
                self.record.set_state("candidate", "idle", None, ended=reports[-1].get("endedBecause"))
            self.record.set_ack("candidate", {**(self.record.ack("candidate") or {}), "value": value})

    def _do(self, job: Job) -> None:
        try:
            if job.kind == "nothing" or self.stopping:
                return
            handler = {"rollback": self._rollback, "promote": self._promote, "candidate": self._load_candidate}
            job.result = handler.get(job.kind, self._roll_out)(job)
        except FetchCancelled:
            job.result = (409, {"error": "replaced by a newer request, or the module stops"})
        except Exception as exc:  # a surprise must not kill the rollout: the model in force serves on
            log.exception("model rollout (%s) failed", job.kind)
            job.result = (500, {"error": f"{type(exc).__name__}: {exc}"})
            self._refuse(job.lane, job.version, 500, f"{type(exc).__name__}: {exc}", job.spec)
        finally:
            job.done.set()

    # -- a model rolled out -----------------------------------------------------------------------------------
    def _roll_out(self, job: Job, via: str = "rolled out") -> tuple[int, dict[str, Any]]:
        spec = job.spec
        assert spec is not None  # desired() answers a null model itself
        self.alarms.clear(MODEL_ROLLOUT_FAILED, message=f"rollout of {spec.title} started")
        try:
            model = self.preparer.prepare("model", spec, job.fingerprint, self._waiter(job))
        except RolloutError as exc:
            self._refuse("model", job.version, exc.ac, str(exc), spec)
            return exc.ac, {"error": str(exc)}
        entry, before = self.preparer.entry_of(spec), self._entry
        self.slot.swap(model, probation=True)
        self._entry, self._previous = entry, before
        self.store.activate(entry, before, probation=True)
        self.alarms.clear(MODEL_ROLLED_BACK, message=f"{entry.title} swapped in")
        self.metrics.model.info(model.describe())
        self.metrics.model_rollouts.labels(outcome="swapped").inc()
        log.info("model swapped: %s -> %s (%s by %s)", before.title, entry.title, via, job.by)
        self.record.set_state("model", "active", None, model=entry.shown())
        self.record.set_ack("model", self._in_force_ack("model", job.version, 200, f"active: {via} by {job.by}"))
        return 200, {"active": entry.shown()}

    # -- rollbacks --------------------------------------------------------------------------------------------
    def _rollback(self, job: Job) -> tuple[int, dict[str, Any]]:
        target = self.store.rollback_target()
        if target is None:
            reason = "no model to roll back to (none served before this one)"
            self.record.set_ack("model", self._in_force_ack("model", job.version, 400, f"refused: {reason}"))
            return 409, {"error": reason}
        given_up = self._entry
        self.record.set_state("model", "rollingBack", target.shown())
        previous = self.slot.previous
        try:
            if previous is not None and previous.sha256 == target.sha256:
                model = previous  # still loaded (probation): instant
            elif target.boot:
                model = self.preparer.verifier.load_boot()
            else:
                model = load_entry(self.settings, self.store, target)
        except Exception as exc:
            reason = f"cannot load {target.title} to roll back to: {exc}"
            self._refuse("model", job.version, 500, reason, None)
            return 500, {"error": reason}
        self.slot.swap(model, probation=False)
        self._finish_rollback(boot_entry(model) if target.boot else target, given_up, f"by {job.by}", job.version, 200)
        return 200, {"active": self._entry.shown(), "rolledBackFrom": given_up.shown()}

    def _slot_event(self, event: SlotEvent) -> None:
        if event.change == "confirmed":
            self._previous = None
            self.store.update(probation=None)
        elif event.change == "fellBack" and self._previous is not None:
            given_up, to = self._entry, self._previous
            self.alarms.raise_alarm(
                MODEL_ROLLED_BACK,
                {"from": given_up.shown(), "to": to.shown(), "reason": event.reason},
                f"model {given_up.title} rolled back to {to.title}: {event.reason}",
            )
            self.metrics.model_rollouts.labels(outcome="autoRolledBack").inc()
            why = f"automatically: {event.reason}"
            self._finish_rollback(to, given_up, why, self.record.last_version("model"), 500)

    def _finish_rollback(self, to: ModelEntry, given_up: ModelEntry, why: str, version: int | None, ac: int) -> None:
        self._entry, self._previous = to, None
        self.store.rolled_back(to, given_up)
        self.metrics.model.info(self.slot.active.describe())
        if ac == 200:
            self.metrics.model_rollouts.labels(outcome="rolledBack").inc()
        log.warning("model rolled back from %s to %s %s", given_up.title, to.title, why)
        self.record.set_state("model", "active", None, model=to.shown(), rolledBackFrom=given_up.shown())
        self.record.set_ack(
            "model", self._in_force_ack("model", version, ac, f"rolled back from {given_up.title} {why}")
        )

    # -- the candidate ----------------------------------------------------------------------------------------
    def _load_candidate(self, job: Job) -> tuple[int, dict[str, Any]]:
        spec = job.spec
        if spec is None:
            self.shadow.end("the twin's candidate is null")
            self._candidate = None
            self.store.update(candidate=None)
            self.record.set_state("candidate", "idle", None)
            self.record.set_ack("candidate", {"value": None, "ac": 200, "av": job.version, "ad": "no candidate"})
            return 200, {}
        self.alarms.clear(MODEL_ROLLOUT_FAILED, message=f"candidate {spec.title} loading")
        try:
            model = self.preparer.prepare(
                "candidate", spec, job.fingerprint, self._waiter(job), strict=False, threads=1
            )
        except RolloutError as exc:
            self._refuse("candidate", job.version, exc.ac, str(exc), spec)
            return exc.ac, {"error": str(exc)}
        entry = self.preparer.entry_of(spec)
        self._candidate = spec
        until = time.time() + spec.max_minutes * 60 if spec.max_minutes else None
        self.store.update(
            candidate={**entry.shown(), "labels": entry.labels, "sampleRate": spec.sample_rate, "until": until}
        )
        self.store.remember(entry)
        self.shadow.begin(model, entry.shown(), self.slot.active, spec.sample_rate, spec.max_minutes)
        self.record.set_state("candidate", "evaluating", None, model=entry.shown())
        self.record.set_ack(
            "candidate", {"value": self._candidate_value(), "ac": 200, "av": job.version, "ad": "evaluating"}
        )
        return 200, {"candidate": entry.shown()}

    def _promote(self, job: Job) -> tuple[int, dict[str, Any]]:
        spec = self._candidate
        if spec is None:
            return 404, {"error": "no candidate is being evaluated"}
        evaluation = self.shadow.end("promoted to the active model")
        self._candidate = None
        self.store.update(candidate=None)
        self.record.set_state("candidate", "idle", None, ended="promoted")
        rollout = Job("model", spec, job.version, by=job.by, generation=job.generation)  # the same lane's turn
        status, body = self._roll_out(rollout, via="promoted from the candidate")
        if status == 200:
            ack = {"value": None, "ac": 200, "av": self.record.last_version("candidate"), "ad": "promoted"}
            self.record.set_ack("candidate", ack)
        return status, {**body, "evaluation": evaluation}

    def _candidate_value(self) -> dict[str, Any]:
        spec = self._candidate
        if spec is None:
            return {}
        extra = {"sampleRate": spec.sample_rate, "maxMinutes": spec.max_minutes, "stats": self.shadow.stats()}
        return {**spec.shown(), **extra}

    # -- helpers --------------------------------------------------------------------------------------------------
    def _at_start(self, starting: StartingModel) -> None:
        if starting.rolled_back:
            reason = starting.rolled_back
            self.alarms.raise_alarm(MODEL_ROLLED_BACK, {"to": starting.entry.shown(), "reason": reason}, reason)
            why = f"rolled back at start: {reason}"
            self.record.set_ack("model", self._in_force_ack("model", self.record.last_version("model"), 500, why))
        pending = self.store.get("pending") or {}
        if starting.unclean and pending.get("phase") == "verifying":
            kind = "candidate" if pending.get("kind") == "candidate" else "model"
            reason = (
                "the module stopped without a clean shutdown while it verified this model (a crash?): not tried again"
            )
            self.store.update(pending=None)
            self._refuse(kind, self.record.last_version(kind), 500, reason, None)
        if not starting.entry.boot:
            self.record.set_state("model", "active", None, model=starting.entry.shown())
        stored = self.store.candidate()
        until = stored.get("until") if stored else None
        if stored and (until is None or until > time.time()):  # evaluated again, from the cache
            minutes = max(1.0, (until - time.time()) / 60) if until else None
            rate = stored.get("sampleRate", 0.1)
            spec = ModelSpec(stored["name"], stored["version"], stored["sha256"], sample_rate=rate, max_minutes=minutes)
            self._enqueue(Job("candidate", spec, self.record.last_version("candidate"), by="the restart"))

    def _in_force_ack(self, kind: str, version: int | None, ac: int, why: str) -> dict[str, Any]:
        value = self._entry.shown() if kind == "model" else (self._candidate_value() or None)
        return {"value": value, "ac": ac, "av": version, "ad": why}

    def _refuse(self, kind: str, version: int | None, ac: int, reason: str, spec: ModelSpec | None) -> dict[str, Any]:
        target = spec.shown() if spec else None
        log.error("model rollout refused (%s, ac %d): %s", kind, ac, reason)
        details = {"property": kind, "target": target, "ac": ac, "reason": reason}
        self.alarms.raise_alarm(MODEL_ROLLOUT_FAILED, details, f"{kind} refused: {reason}")
        self.metrics.model_rollouts.labels(outcome="refused").inc()
        self.record.set_state(kind, "failed", target, reason=reason, ac=ac)
        return self.record.set_ack(kind, self._in_force_ack(kind, version, ac, reason))

    def _enqueue(self, job: Job) -> dict[str, Any]:
        job.generation = self._bump(job.lane)
        self._jobs.put(job)
        what = job.spec.title if job.spec else "null"
        ad = {"rollback": "rolling back", "promote": "promoting the candidate"}.get(job.kind, f"working on {what}")
        return self.record.set_ack(job.lane, self._in_force_ack(job.lane, job.version, 202, ad))

    def _bump(self, lane: str) -> int:
        with self._lock:
            self._generation[lane] += 1
            return self._generation[lane]

    def _waiter(self, job: Job) -> Wait:
        """The download's wait: True (give up) when the module stops or a newer request of its lane came."""
        return lambda seconds: self.wait(seconds) or self._generation[job.lane] != job.generation

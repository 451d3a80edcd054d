"""The housekeeping, once a second: the shares watched, claims looked after, the ledger kept small.

- Share watch: intake pauses while a share does not answer - even with no frame in flight to notice it, so the
  operator gets the alarm at once - and resumes when it is back (pipeline/gate.py raises the alarms). Low free
  space is the disk monitor's alarm (ops/health.py).
- Claims: this replica's heartbeat every 10 s; claims of silent replicas adopted; the claim area reconciled
  when the gate wants it (pipeline/intake.py).
- Ledger retention: finished frames older than LEDGER_RETENTION_DAYS forgotten in steps of 500 (the first pass
  a minute after start, not in the rush of a start-up backlog), never a frame the ledger must still remember.
- Output retention (share/retention.py): a step every RETENTION_INTERVAL_S, every round while more is due.
- Frames that waited for their writer (share/arrivals.py) handed back to intake once they are due.
- Temp files a failed write could not remove while a share was away; the telemetry's summary interval.

It moves frames (archive dispositions), so its thread is not a daemon. A share error in a round never kills it
(the next round tries again); anything else escaping a round does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge_inference.pipeline.gate import INPUT_UNAVAILABLE, OUTPUT_ERROR, OUTPUT_REASONS, IntakeGate
from edge_inference.pipeline.intake import Intake
from edge_inference.pipeline.outcomes import ResultMaker
from edge_inference.settings import Settings
from edge_inference.share import tempfiles
from edge_inference.share.arrivals import ArrivingFrames
from edge_inference.share.claims import ClaimArea
from edge_inference.share.guard import ShareGuard
from edge_inference.share.ledger import Ledger, LedgerEntry
from edge_inference.share.retention import OutputRetention
from edge_inference.workers import PeriodicWorker, Supervisor

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0  # seconds between ledger retention passes
HEARTBEAT_INTERVAL_S = 10.0
RETENTION_INTERVAL_S = 10.0  # seconds between output retention steps (the next round while more is due)


class Housekeeping(PeriodicWorker):
    """The `housekeeping` thread."""

    def __init__(
        self,
        settings: Settings,
        claims: ClaimArea,
        ledger: Ledger,
        gate: IntakeGate,
        guard: ShareGuard,
        intake: Intake,
        arrivals: ArrivingFrames,
        results: ResultMaker,
        retention: OutputRetention,
        telemetry_tick: Callable[[], None],
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("housekeeping", 1.0, supervisor, daemon=False)
        self.settings = settings
        self.claims = claims
        self.ledger = ledger
        self.gate = gate
        self.guard = guard
        self.intake = intake
        self.arrivals = arrivals
        self.results = results
        self.retention = retention
        self.telemetry_tick = telemetry_tick
        self._last_beat = self._last_adopt = 0.0
        self._next_prune = time.monotonic() + 60.0  # not in the rush of a start-up backlog
        self._next_retention = time.monotonic() + 5.0

    def tick(self) -> None:
        try:
            self._round()
        except OSError as exc:  # a share error never kills the housekeeping: the next round tries again
            log.warning("housekeeping: %s (retried)", exc)
            self.gate.want_reconcile()

    def _round(self) -> None:
        now = time.monotonic()
        if self.settings.ledger_retention_days > 0 and now >= self._next_prune:
            _forgotten, more = self.prune_ledger()
            self._next_prune = now + (1.0 if more else PRUNE_INTERVAL_S)  # a backlog goes in small steps
        if now - self._last_beat > HEARTBEAT_INTERVAL_S:
            self.claims.heartbeat()
            self._last_beat = now
        self.watch_shares()
        if now - self._last_adopt > max(5.0, self.settings.claim_stale_seconds / 4):
            self._last_adopt = now
            if self.claims.adopt_stale():
                self.gate.want_reconcile()
        if self.gate.reconcile_wanted and not self.gate.is_blocked():
            self.intake.reconcile_claims()
        if self.gate.accepting():
            self.arrivals.release_due(self.intake.take_again)
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_INTERVAL_S  # a share error below: the regular interval
            more = self.retention.step()
            self._next_retention = now + (1.0 if more else RETENTION_INTERVAL_S)
        tempfiles.sweep_orphans()  # temp files a failed write could not remove while a share was away
        try:
            self.telemetry_tick()
        except Exception:
            log.exception("telemetry tick failed")

    def watch_shares(self) -> None:
        """Pause intake while a share does not answer, and resume when it is back."""
        try:
            self.guard.check_output_mounted()
        except OSError as exc:
            self.gate.block(OUTPUT_ERROR, f"output share: {exc.strerror}")
        else:
            held = [reason for reason in OUTPUT_REASONS if self.gate.is_blocked(reason)]
            if held and self.guard.output_writable():
                for reason in held:
                    self.gate.unblock(reason)
        if self.guard.input_available():
            self.gate.unblock(INPUT_UNAVAILABLE)
        elif not self.gate.is_blocked(INPUT_UNAVAILABLE):
            self.gate.block(INPUT_UNAVAILABLE, "input share unavailable (INPUT_DIR or the claim area cannot be read)")

    def prune_ledger(self, now: float | None = None, limit: int = 500) -> tuple[int, bool]:
        """Forget finished frames older than LEDGER_RETENTION_DAYS (at most `limit` per call), except frames the
        ledger must still remember: claimed ones (archive/delete), and ones still on a `keep` share. Returns how
        many were forgotten and whether more are due."""
        keep: Callable[[LedgerEntry], bool]
        if self.claims.moves_files:
            try:
                claimed = {rel for rel, _path, _st in self.claims.claimed()}
            except OSError:
                return 0, False  # the share is away: try at the next round
            claimed.update(self.gate.in_flight_paths())
            keep = lambda e: e.rel_path in claimed  # noqa: E731
        else:
            if not self.guard.input_available():
                return 0, False  # a missing file on a missing share says nothing
            keep = self.guard.still_on_share
        forgotten, more = self.ledger.prune(self.settings.ledger_retention_days * 86400, keep, limit, now)
        self.results.forget(forgotten)
        if forgotten:
            log.info(
                "ledger: forgot %d finished frames older than %g days",
                len(forgotten),
                self.settings.ledger_retention_days,
            )
        return len(forgotten), more

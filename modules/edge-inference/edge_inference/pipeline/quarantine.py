"""Quarantine: a frame whose processing keeps dying is set aside instead of being resumed into a crash loop.

Every start of a share frame's processing is counted in the ledger before the work starts (`FrameAttempts.begin`,
one committed row update), so a crash or a kill in the middle of a frame counts as surely as an error does. A
frame that has started MAX_FRAME_ATTEMPTS times without finishing is not processed again: `begin` answers with a
`quarantined` FrameError, which travels like any per-frame failure (an error result, `failed/<path>.error.json`,
the original moved to `failed/`), its message saying how many starts there were and the last failure noted.

Not every unfinished attempt is the frame's fault: when a share stops answering, the attempt is forgiven
(`retry_later(..., share_away=True)`), so a flapping share never quarantines a good frame.
"""

from __future__ import annotations

import logging

from edge_inference.entities import FrameJob
from edge_inference.errors import FrameError
from edge_inference.names import shown
from edge_inference.share.ledger import Ledger

log = logging.getLogger(__name__)


class FrameAttempts:
    """The ledger-backed start count of share frames, and the quarantine decision."""

    def __init__(self, ledger: Ledger, max_attempts: int) -> None:
        self.ledger = ledger
        self.max_attempts = max_attempts

    def begin(self, job: FrameJob) -> FrameError | None:
        """Count this start; the quarantine error when the frame already started `max_attempts` times."""
        attempts, last_error = self.ledger.begin_attempt(job.frame_id, job.rel_path, job.size, job.mtime_ns)
        if attempts <= self.max_attempts:
            return None
        why = f"the last failure: {last_error}" if last_error else "the module stopped while it was processed"
        error = FrameError(
            FrameError.QUARANTINED,
            f"quarantined: processing started {attempts - 1} times without finishing (MAX_FRAME_ATTEMPTS="
            f"{self.max_attempts}); {why}",
        )
        log.error("%s: %s", shown(job.rel_path), error.message)
        return error

    def retry_later(self, job: FrameJob, reason: str, *, share_away: bool) -> None:
        """This attempt did not finish and the frame will be tried again: note why, or forgive the attempt when
        a share that went away explains it."""
        if share_away:
            self.ledger.forgive(job.frame_id)
        else:
            self.ledger.note_failure(job.frame_id, reason)

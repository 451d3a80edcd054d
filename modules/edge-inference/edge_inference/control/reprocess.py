"""The `reprocess` direct method: finished frames matching a path or glob, processed again with the live settings.

In archive mode the archived original (processed/, or failed/ for a failed frame) is copied back into the input
share and taken like a new frame; in keep mode the frame is where it was, and the ledger forgets it is done; deleted
originals cannot be processed again. Never through a symlinked folder, and never over a frame of that name waiting
on the share (the copy is renamed into place with RENAME_NOREPLACE).

A frame whose archive move is still pending - finished a moment ago, or left in the claim area because the output
share refused the move and the housekeeping has not retried it yet - is waited for: the housekeeping is asked to
look at the claim area at once, and the method goes on once the archived file is there, for at most
REPROCESS_WAIT_S (the method's callers wait about 30 s for an answer). One still pending then is named in a
warning and not counted.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import stat
import time

from edge_inference.names import shown
from edge_inference.pipeline.runner import Pipeline
from edge_inference.settings import Settings
from edge_inference.share import output_layout, share_fs
from edge_inference.share.claims import safe_join
from edge_inference.share.ledger import LedgerEntry
from edge_inference.share.watcher import FrameWatcher

log = logging.getLogger(__name__)

REPROCESS_WAIT_S = 20.0
_POLL_S = 0.05


class _Outcome(enum.Enum):
    TAKEN = "taken"
    SKIPPED = "skipped"
    PENDING = "pending"  # finished, its archive move not done yet: wait


class FrameReprocessor:
    """Puts finished frames back on the input share to be processed again."""

    def __init__(self, settings: Settings, pipeline: Pipeline, watcher: FrameWatcher) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.watcher = watcher

    def reprocess(self, pattern: str, wait: float = REPROCESS_WAIT_S) -> int:
        """Frames matching `pattern` (a relative path or a glob) taken back; returns how many."""
        pattern = pattern.strip().lstrip("/") if isinstance(pattern, str) else ""
        if not pattern or ".." in pattern.split("/") or "\0" in pattern:
            raise ValueError(f"invalid path or glob {pattern!r}")
        taken, pending = 0, []
        for entry in self.pipeline.ledger.finished_matching(pattern):
            outcome = self._one(entry)
            taken += outcome is _Outcome.TAKEN
            if outcome is _Outcome.PENDING:
                pending.append(entry)
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            self.pipeline.gate.want_reconcile()  # the housekeeping disposes of what is left in the claim area
            time.sleep(_POLL_S)
            still = []
            for entry in pending:
                outcome = self._one(entry)
                taken += outcome is _Outcome.TAKEN
                if outcome is _Outcome.PENDING:
                    still.append(entry)
            pending = still
        for entry in pending:
            log.warning(
                "reprocess: %s still waits for its archive move after %.0f s: not taken", shown(entry.rel_path), wait
            )
        return taken

    def _one(self, entry: LedgerEntry) -> _Outcome:
        inp, rel, mode = self.settings.input_dir, entry.rel_path, self.settings.input_disposition
        ledger, results = self.pipeline.ledger, self.pipeline.results
        if mode == "delete":
            return _Outcome.SKIPPED  # deleted originals cannot be processed again
        try:
            if mode == "archive":
                place = output_layout.processed_path if entry.state == "done" else output_layout.failed_path
                archived = place(rel)
                try:
                    if not stat.S_ISREG(share_fs.lstat(self.settings.output_dir, archived).st_mode):
                        return _Outcome.SKIPPED
                except (FileNotFoundError, NotADirectoryError):  # not archived (yet)
                    return _Outcome.PENDING if self._move_pending(rel) else _Outcome.SKIPPED
                with contextlib.suppress(FileNotFoundError):
                    share_fs.lstat(inp, rel)
                    log.warning("reprocess: %s is waiting on the input share: that frame is left as it is", shown(rel))
                    return _Outcome.SKIPPED
                results.reopened(ledger.reopen([entry.frame_id]))
                share_fs.copy(self.settings.output_dir, archived, inp, rel, replace=False)
            elif not stat.S_ISREG(share_fs.lstat(inp, rel).st_mode):
                return _Outcome.SKIPPED
            else:
                results.reopened(ledger.reopen([entry.frame_id]))
        except FileNotFoundError:
            return _Outcome.SKIPPED
        except (OSError, ValueError) as exc:  # a symlinked folder, a frame that arrived meanwhile, the share away
            log.warning("reprocess: not taking %s: %s", shown(rel), exc)
            return _Outcome.SKIPPED
        self.watcher.note(str(safe_join(inp, rel)), source="fileEvent", force=True)
        return _Outcome.TAKEN

    def _move_pending(self, rel: str) -> bool:
        """The finished frame is still in our claim area (or in flight): its archive move has not happened yet."""
        if self.pipeline.gate.in_flight(rel):
            return True
        try:
            return stat.S_ISREG(share_fs.lstat(*self.pipeline.claims.location(rel)).st_mode)
        except (OSError, ValueError):
            return False

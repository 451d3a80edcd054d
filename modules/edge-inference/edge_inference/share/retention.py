"""Output retention: OUTPUT_RETENTION_DAYS and OUTPUT_MAX_GB, per output folder, in small steps.

The housekeeping calls `step()` (pipeline/housekeeping.py). Each step takes, per folder with a limit, the oldest
files the module wrote (share/catalog.py) - those older than the folder's days, then, while the folder is over
its size, the oldest of all - and removes them a frame at a time (a frame's files in that folder together), at
most STEP_FILES files and about STEP_SECONDS a step, so a share that answers slowly never holds the housekeeping
up. A file is removed only when it is still the one written (a regular file of the recorded size, reached
without following a symlink); anything else is left alone and forgotten. Folders left empty below the output
folder are removed too. `telemetry.jsonl` (local mode) is kept within its limits by rotation (ops/publisher.py).

When removal cannot keep up - the oldest file past its limit for longer than BEHIND_AFTER_S, a folder over its
size that long, or the share refusing deletes - the alarm `retentionBehind` is raised (ops/alarms.py) and cleared
once retention has caught up. Metrics: each folder's catalogued size and files, files and bytes removed, and the
lag (`edge_inference_retention_lag_seconds`).

On an Azure Stack Edge cloud share, removing a file from the share does not remove its copy in the storage account
(Microsoft's ASE documentation, "Data upload caveats"); DEPLOY.md says what that means for the limits.
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from edge_inference.log import WarnOnce
from edge_inference.names import shown
from edge_inference.ops.alarms import RETENTION_BEHIND, AlarmRegistry
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.settings import OUTPUT_FOLDERS, PerFolder
from edge_inference.share import share_fs
from edge_inference.share.catalog import CatalogRow, OutputCatalog
from edge_inference.share.guard import ShareGuard, mount_gone, share_mount

log = logging.getLogger(__name__)

CATALOGUED = tuple(f for f in OUTPUT_FOLDERS if f != "telemetry")
STEP_FILES = 200  # files removed per folder and step at most
STEP_SECONDS = 0.5  # a step stops once it has taken this long
BEHIND_AFTER_S = 3600.0  # past a limit this long: retentionBehind
GIB = 1024**3
DAY = 86400.0


class TelemetryFile(Protocol):
    """Local mode's telemetry.jsonl, kept within limits by rotation."""

    def keep_within(self, max_bytes: int, max_age_seconds: float) -> int: ...


class _Refused(Exception):
    """The share refused a removal (read-only, not permitted): retention cannot keep up."""


class OutputRetention:
    """Removes the module's oldest output files by age and size, a step at a time."""

    def __init__(
        self,
        output_dir: Path,
        catalog: OutputCatalog,
        guard: ShareGuard,
        days: PerFolder,
        max_gb: PerFolder,
        alarms: AlarmRegistry,
        metrics: MetricsRegistry,
        telemetry_file: TelemetryFile | None = None,
        *,
        step_files: int = STEP_FILES,
        step_seconds: float = STEP_SECONDS,
        behind_after: float = BEHIND_AFTER_S,
    ) -> None:
        self.output_dir = output_dir
        self.catalog = catalog
        self.guard = guard
        self.days = days
        self.max_gb = max_gb
        self.alarms = alarms
        self.metrics = metrics
        self.telemetry_file = telemetry_file
        self.step_files = step_files
        self.step_seconds = step_seconds
        self.behind_after = behind_after
        self._over_since: dict[str, float] = {}  # folder -> when it was first seen over its size
        self._mounts = {f: share_mount(output_dir / f) for f in CATALOGUED}  # a folder may be a share of its own
        self._refused: str = ""
        self._warn_once = WarnOnce(log)

    @property
    def active(self) -> bool:
        return self.days.active or self.max_gb.active

    def step(self, now: float | None = None) -> bool:
        """One step over every folder with a limit; True when more is due at once (call again soon)."""
        if not self.active or not self.guard.output_present():
            return False  # an unmounted share's missing files say nothing: the rows wait for it
        now = time.time() if now is None else now
        deadline = time.monotonic() + self.step_seconds
        more, lags = False, {}
        try:
            for folder in CATALOGUED:
                if mount_gone(self._mounts[folder]):
                    continue  # that folder's own share is away: its missing files say nothing
                more |= self._by_age(folder, now, deadline)
                more |= self._by_size(folder, now, deadline)
                lags[folder] = self._lag(folder, now)
            self._refused = ""
        except _Refused as exc:
            self._refused = str(exc)
        self._telemetry()
        self._report(lags, now)
        return more

    # -- by age and by size -----------------------------------------------------------------------------------
    def _by_age(self, folder: str, now: float, deadline: float) -> bool:
        days = self.days.of(folder)
        if days <= 0:
            return False
        rows = self.catalog.oldest(folder, self.step_files, before=now - days * DAY)
        self._remove(folder, rows, deadline)
        return len(rows) == self.step_files

    def _by_size(self, folder: str, now: float, deadline: float) -> bool:
        cap = int(self.max_gb.of(folder) * GIB)
        if cap <= 0:
            return False
        total = self.catalog.totals().get(folder, (0, 0))[0]
        if total <= cap:
            self._over_since.pop(folder, None)
            return False
        self._over_since.setdefault(folder, now)
        rows, freed = [], 0
        for row in self.catalog.oldest(folder, self.step_files):
            if total - freed <= cap:
                break
            rows.append(row)
            freed += row.size
        self._remove(folder, rows, deadline)
        return self.catalog.totals().get(folder, (0, 0))[0] > cap

    def _lag(self, folder: str, now: float) -> float:
        """Seconds the oldest file of `folder` has been past its age limit, or the folder over its size."""
        lag = 0.0
        days = self.days.of(folder)
        if days > 0:
            oldest = self.catalog.oldest(folder, 1, before=now - days * DAY)
            if oldest:
                lag = now - days * DAY - oldest[0].written_at
        if folder in self._over_since:
            lag = max(lag, now - self._over_since[folder])
        return lag

    # -- removal --------------------------------------------------------------------------------------------
    def _remove(self, folder: str, rows: list[CatalogRow], deadline: float) -> None:
        """Remove these files and the other files of their frames in `folder`, frame by frame."""
        if not rows:
            return
        frames: dict[str, None] = dict.fromkeys(r.frame for r in rows)  # oldest first, each once
        files: dict[str, list[CatalogRow]] = {}
        for row in self.catalog.of_frames(folder, frames):
            files.setdefault(row.frame, []).append(row)
        for frame in frames:
            if time.monotonic() >= deadline:
                return
            group = files.get(frame, [])
            self._remove_group(folder, group)
            self.catalog.forget(folder, [r.path for r in group])

    def _remove_group(self, folder: str, group: Iterable[CatalogRow]) -> None:
        for row in group:
            try:
                st = share_fs.lstat(self.output_dir, row.path)
            except (FileNotFoundError, NotADirectoryError, share_fs.OutsideShare, ValueError):
                continue  # gone already, or behind a symlink: not the module's file any more
            except OSError as exc:
                if share_fs.is_transient(exc):
                    raise  # the share is away: the housekeeping tries again at its next round
                self._warn_once(row.path, "retention: cannot look at %s: %s", shown(row.path), exc.strerror)
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size != row.size:
                self._warn_once(
                    row.path, "retention: %s changed since the module wrote it: left alone", shown(row.path)
                )
                continue
            try:
                share_fs.remove(self.output_dir, row.path)
            except PermissionError as exc:
                raise _Refused(f"cannot remove {shown(row.path)}: {exc.strerror}") from None
            except OSError as exc:
                if exc.errno == errno.EROFS:
                    raise _Refused(f"cannot remove {shown(row.path)}: {exc.strerror}") from None
                raise
            self.metrics.retention_removed_files.labels(folder=folder).inc()
            self.metrics.retention_removed_bytes.labels(folder=folder).inc(row.size)
            parent = row.path.rpartition("/")[0]
            share_fs.prune_empty(self.output_dir, parent, keep_top=1)  # never the output folder itself

    # -- telemetry.jsonl, metrics, alarm ----------------------------------------------------------------------
    def _telemetry(self) -> None:
        if self.telemetry_file is None:
            return
        max_bytes = int(self.max_gb.of("telemetry") * GIB)
        max_age = self.days.of("telemetry") * DAY
        if max_bytes > 0 or max_age > 0:
            size = self.telemetry_file.keep_within(max_bytes, max_age)
            self.metrics.output_bytes.labels(folder="telemetry").set(size)

    def _report(self, lags: dict[str, float], now: float) -> None:
        for folder, (size, files) in self.catalog.totals().items():
            self.metrics.output_bytes.labels(folder=folder).set(size)
            self.metrics.output_files.labels(folder=folder).set(files)
        for folder, lag in lags.items():
            self.metrics.retention_lag.labels(folder=folder).set(round(lag, 1))
        behind = {folder: round(lag) for folder, lag in lags.items() if lag > self.behind_after}
        if self._refused:
            self.alarms.raise_alarm(
                RETENTION_BEHIND, {"reason": self._refused}, f"output retention cannot remove files: {self._refused}"
            )
        elif behind:
            self.alarms.raise_alarm(
                RETENTION_BEHIND,
                {"lagSeconds": behind},
                "output retention cannot keep up: files past their limit for "
                + ", ".join(f"{folder} {lag} s" for folder, lag in behind.items()),
            )
        elif self.alarms.is_active(RETENTION_BEHIND):
            self.alarms.clear(RETENTION_BEHIND, message="output retention has caught up")

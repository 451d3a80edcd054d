"""Output retention (share/retention.py, share/catalog.py) on a real tmpfs: by age and by size, oldest first, a
frame's files together, never a file the module did not write (a user's file, a file replaced since, a symlink),
the alarm `retentionBehind` when it cannot keep up or the share refuses, telemetry.jsonl kept by rotation, and
the whole module keeping processed/ under its cap."""

# ruff: noqa: F811 (the pipeline fixtures of test_pipeline.py are imported, then named as test arguments)

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_inference.ops.alarms import RETENTION_BEHIND, AlarmRegistry
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.publisher import LocalTelemetrySink
from edge_inference.ops.telemetry import OutgoingMessage
from edge_inference.settings import PerFolder
from edge_inference.share import share_fs
from edge_inference.share.catalog import OutputCatalog, OutputFile
from edge_inference.share.claims import ClaimArea
from edge_inference.share.guard import ShareGuard
from edge_inference.share.results import ResultWriter
from edge_inference.share.retention import GIB, OutputRetention
from tests.iot_fakes import ListSink, make_result
from tests.test_pipeline import eventually, frame, model_path, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)

DAY = 86400.0


@pytest.fixture
def output(tmp_path: Path) -> Iterator[Path]:
    """The output share: a real tmpfs mounted for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "output"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


class Setup:
    def __init__(self, tmp_path: Path, output: Path) -> None:
        self.output = output
        self.catalog = OutputCatalog(tmp_path / "state" / "outputs.sqlite")
        self.writer = ResultWriter(output, catalog=self.catalog, fsync=False)
        claims = ClaimArea(tmp_path / "input", output, "r1", "archive", 300)
        self.guard = ShareGuard(tmp_path / "input", output, 0, claims)
        self.sink = ListSink()
        self.metrics = MetricsRegistry()
        self.alarms = AlarmRegistry(self.sink, self.metrics)

    def retention(
        self, days: PerFolder | None = None, max_gb: PerFolder | None = None, **kw: object
    ) -> OutputRetention:
        return OutputRetention(
            self.output,
            self.catalog,
            self.guard,
            days or PerFolder(),
            max_gb or PerFolder(),
            self.alarms,
            self.metrics,
            **kw,  # type: ignore[arg-type]
        )

    def module_file(self, rel: str, frame: str, data: bytes, at: float) -> Path:
        """A file the module writes (recorded first, then written), as of time `at`."""
        self.catalog.record([OutputFile(rel, frame, len(data))], at=at)
        path = self.output / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def alarm_messages(self) -> list[tuple[str, bool]]:
        return [(m.body["alarm"], m.body["active"]) for m in self.sink.messages]


@pytest.fixture
def setup(tmp_path: Path, output: Path) -> Setup:
    return Setup(tmp_path, output)


def test_by_age_removes_old_module_files_and_nothing_it_did_not_write(setup: Setup, tmp_path: Path) -> None:
    now = time.time()
    old, new = now - 10 * DAY, now - 1 * DAY
    # given the module's files: an old and a new result, an old failed frame (original + .error.json)
    old_result = setup.module_file("results/cam1/old.jpg.json", "cam1/old.jpg", b"{}" * 50, old)
    new_result = setup.module_file("results/cam1/new.jpg.json", "cam1/new.jpg", b"{}" * 50, new)
    failed = setup.module_file("failed/cam2/bad.jpg", "cam2/bad.jpg", b"\xff\xd8broken", old)
    error = setup.module_file("failed/cam2/bad.jpg.error.json", "cam2/bad.jpg", b'{"error": 1}', old)
    # and files it did not write, or that changed since: a user's note, a result replaced by someone, a symlink
    note = setup.output / "results" / "cam1" / "README.txt"
    note.write_text("written by a person")
    replaced = setup.module_file("results/cam3/x.jpg.json", "cam3/x.jpg", b"{}" * 50, old)
    replaced.write_bytes(b"someone else's content")
    outside = tmp_path / "outside.json"
    outside.write_bytes(b"{}" * 50)
    link = setup.module_file("results/cam4/l.jpg.json", "cam4/l.jpg", b"{}" * 50, old)
    link.unlink()
    link.symlink_to(outside)
    # when a step runs with a 7-day limit on every folder
    setup.retention(days=PerFolder(7.0)).step(now)
    # then the old module files are gone, together, and their emptied folders too; the rest is untouched
    assert not old_result.exists() and not failed.exists() and not error.exists()
    assert not (setup.output / "failed" / "cam2").exists() and (setup.output / "failed").is_dir()
    assert new_result.exists() and note.read_text() == "written by a person"
    assert replaced.read_bytes() == b"someone else's content"
    assert link.is_symlink() and outside.read_bytes() == b"{}" * 50
    # and the catalog no longer holds what was removed or is not the module's any more
    assert setup.catalog.totals()["results"][1] == 1 and setup.catalog.totals()["failed"] == (0, 0)
    assert setup.metrics.retention_removed_files.labels(folder="failed")._value.get() == 2


def test_by_size_removes_the_oldest_first_until_the_folder_fits(setup: Setup) -> None:
    now = time.time()
    files = [
        setup.module_file(f"processed/cam/{i:02d}.jpg", f"cam/{i:02d}.jpg", bytes(1000), now - 100 + i)
        for i in range(10)
    ]
    other = setup.module_file("results/cam/00.jpg.json", "cam/00.jpg", bytes(5000), now - 200)
    retention = setup.retention(max_gb=PerFolder(0.0, (("processed", 4500 / GIB),)))
    while retention.step(now):
        pass
    assert [f.exists() for f in files] == [False] * 6 + [True] * 4
    assert other.exists()  # results/ has no cap here
    assert setup.catalog.totals()["processed"] == (4000, 4)


def test_a_module_result_written_into_a_folder_retention_just_emptied_is_written(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the writer opens results/cam/, then retention removes that emptied folder before the file is created
    real_open_dir = share_fs.open_dir
    raced: list[bool] = []

    def racing_open_dir(root: Path, parts: list[str], *, create: bool = False) -> int:
        fd = real_open_dir(root, parts, create=create)
        if create and list(parts) == ["results", "cam"] and not raced:
            raced.append(True)
            os.rmdir(root / "results" / "cam")
        return fd

    monkeypatch.setattr(share_fs, "open_dir", racing_open_dir)
    setup.writer.write_results([make_result(rel_path="cam/a.jpg")])
    assert raced and json.loads((setup.output / "results" / "cam" / "a.jpg.json").read_text())["frame"]


def test_retention_behind_is_raised_when_it_cannot_keep_up_and_cleared_when_it_has(setup: Setup) -> None:
    now = time.time()
    for i in range(6):
        setup.module_file(f"annotated/{i}.jpg", f"{i}.jpg", b"x" * 10, now - 5 * DAY)
    # a retention allowed one file per step, and behind as soon as a file is past its limit
    retention = setup.retention(days=PerFolder(1.0), step_files=1, behind_after=0.0)
    retention.step(now)
    assert setup.alarms.is_active(RETENTION_BEHIND)
    lag = setup.metrics.retention_lag.labels(folder="annotated")._value.get()
    assert lag > 3 * DAY
    while retention.step(now):
        pass
    retention.step(now)
    assert not setup.alarms.is_active(RETENTION_BEHIND)
    assert setup.alarm_messages() == [(RETENTION_BEHIND, True), (RETENTION_BEHIND, False)]


def test_a_share_that_refuses_deletes_raises_retention_behind_with_the_reason(setup: Setup) -> None:
    now = time.time()
    kept = setup.module_file("results/old.jpg.json", "old.jpg", b"{}", now - 9 * DAY)
    subprocess.run(["mount", "-o", "remount,ro", str(setup.output)], check=True)
    try:
        setup.retention(days=PerFolder(1.0)).step(now)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(setup.output)], check=True)
    assert kept.exists()
    alarm = setup.alarms.active()[RETENTION_BEHIND]
    assert "cannot remove" in alarm["message"] and "results/old.jpg.json" in alarm["details"]["reason"]
    # once the share takes deletes again, the next step removes it and clears the alarm
    setup.retention(days=PerFolder(1.0)).step(now)
    assert not kept.exists() and not setup.alarms.is_active(RETENTION_BEHIND)


def test_an_unmounted_output_share_is_never_cleaned_from_its_empty_mount_point(setup: Setup) -> None:
    now = time.time()
    setup.module_file("results/old.jpg.json", "old.jpg", b"{}", now - 9 * DAY)
    subprocess.run(["umount", "-l", str(setup.output)], check=True)
    setup.retention(days=PerFolder(1.0)).step(now)
    # the rows wait for the share: nothing was forgotten because its file looked missing
    assert setup.catalog.totals()["results"] == (2, 1)


def _message(i: int, at: str) -> OutgoingMessage:
    return OutgoingMessage("detections", f"m{i}", {"processedAt": at, "count": i, "pad": "x" * 200})


def test_telemetry_jsonl_is_kept_within_its_size_and_age_by_rotation(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # an old telemetry.jsonl found at start (its first line years old)
    (out / "telemetry.jsonl").write_text(json.dumps({"body": {"processedAt": "2020-01-01T00:00:00.000Z"}}) + "\n")
    sink = LocalTelemetrySink(out)
    try:
        sink.keep_within(0, 2 * DAY)  # first line older than half the age limit: rotated
        assert (out / "telemetry.jsonl.1").exists() and (out / "telemetry.jsonl").stat().st_size == 0
        for i in range(30):
            sink.publish(_message(i, "2026-11-30T10:00:00.000Z"))
        size = sink.keep_within(10_000, 0)  # over half of 10 kB: rotated again, the old .1 replaced
        assert size <= 10_000
        lines = (out / "telemetry.jsonl.1").read_text().splitlines()
        assert len(lines) == 30 and json.loads(lines[0])["messageId"] == "m0"
        os.utime(out / "telemetry.jsonl.1", (time.time() - DAY, time.time() - DAY))
        sink.keep_within(0, 2 * DAY)  # its last line half the age limit old: removed
        assert not (out / "telemetry.jsonl.1").exists()
        for i in range(60):  # a burst over the whole cap between two checks: the rotated file alone is over it
            sink.publish(_message(100 + i, "2026-11-30T10:00:01.000Z"))
        assert sink.keep_within(10_000, 0) == 0 and not (out / "telemetry.jsonl.1").exists()
        sink.publish(_message(99, "2026-11-30T10:00:01.000Z"))  # the sink still appends after rotations
        assert json.loads((out / "telemetry.jsonl").read_text().splitlines()[-1])["messageId"] == "m99"
    finally:
        sink.close()


def test_the_module_keeps_processed_under_its_cap_and_keeps_every_result(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given the whole module in archive mode with a cap of about three frames' originals in processed/
    run = start(OUTPUT_MAX_GB=f"processed:{3.5 * 9000 / GIB}")
    for i in range(6):
        frame(shares["input"] / "cam" / f"{i}.jpg", 96, 96, seed=i)
        assert eventually(lambda i=i: (shares["output"] / "processed" / "cam" / f"{i}.jpg").exists(), 10)
        time.sleep(0.02)  # distinct write times: oldest first is well defined
    sizes = {p.name: p.stat().st_size for p in (shares["output"] / "processed" / "cam").iterdir()}
    cap = 3.5 * 9000
    # when the housekeeping's retention steps (called here at once rather than waiting for its round)
    while run.module.pipeline.retention.step():
        pass
    left = sorted(p.name for p in (shares["output"] / "processed" / "cam").iterdir())
    assert sum(sizes[n] for n in left) <= cap
    expected_left = []
    total = 0
    for i in reversed(range(6)):
        if total + sizes[f"{i}.jpg"] > cap:
            break
        total += sizes[f"{i}.jpg"]
        expected_left.append(f"{i}.jpg")
    assert left == sorted(expected_left) and left  # the newest stay
    assert len(list((shares["output"] / "results" / "cam").iterdir())) == 6  # results have no cap
    assert run.module.pipeline.retention is run.module.pipeline.housekeeping.retention

"""The whole frame pipeline on real files, real watchdog and real ONNX Runtime (tiny models built here), wired by
the composition root itself (`app.Module`), with a collector in place of the telemetry publisher."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_inference.app import Module
from edge_inference.entities import FrameJob, FrameResult
from edge_inference.settings import Settings, read_settings
from tests.onnx_models import build_constant_model, yolov8_output

pytestmark = pytest.mark.timeout(60)


class Collector:
    """The telemetry stand-in: every finished share frame."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.lock = threading.Lock()

    def on_result(self, result: FrameResult) -> None:
        with self.lock:
            self.results.append(result)

    def group(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def wait_for(self, count: int, timeout: float = 20) -> list[FrameResult]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.results) >= count:
                    return list(self.results)
            time.sleep(0.02)
        return list(self.results)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    # two candidates: "scratch" 0.9 and "dent" 0.6, both well inside a 64x64 input
    out = yolov8_output([(20, 32, 10, 10), (44, 32, 10, 10)], [[0.9, 0.05], [0.05, 0.6]])
    return build_constant_model(tmp_path / "tiny.onnx", out, names="{0: 'scratch', 1: 'dent'}")


class Running:
    def __init__(self, module: Module, collector: Collector, settings: Settings) -> None:
        self.module, self.collector, self.settings = module, collector, settings
        self.commands, self.pipeline = module.commands, module.pipeline
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.module.shutdown()


@pytest.fixture
def start(shares: dict[str, Path], model_path: Path, no_thread_leaks: None) -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def _start(replica: str = "r1", state: Path | None = None, **env: str) -> Running:
        base = {
            "MODEL_PATH": str(model_path),
            "INPUT_DIR": str(shares["input"]),
            "OUTPUT_DIR": str(shares["output"]),
            "STATE_DIR": str(state or shares["state"]),
            "SETTLE_SECONDS": "0.2",
            "REPLICA_ID": replica,
            "RESCAN_INTERVAL_SECONDS": "1",
            "BATCH_SIZE": "4",  # batches on the CPU too, so batching is exercised
            "HTTP_PORT": "0",  # off: the REST API has its own tests
            "METRICS_PORT": "0",
            "LOCAL_TELEMETRY": "false",
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
        s = read_settings({**base, **env})
        collector = Collector()
        module = Module(s, env={}, telemetry=collector)
        module.start()
        run = Running(module, collector, s)
        running.append(run)
        return run

    yield _start
    for run in running:
        run.stop()


def frame(path: Path, width: int = 320, height: int = 240, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    tmp = path.with_name("." + path.name + ".tmp")
    cv2.imwrite(str(tmp) + ".jpg", image)
    os.replace(str(tmp) + ".jpg", path)
    return path


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def results_of(output: Path) -> dict[str, dict[str, Any]]:
    root = output / "results"
    return {
        p.relative_to(root).as_posix().removesuffix(".json"): json.loads(p.read_text()) for p in root.rglob("*.json")
    }


def test_each_frame_gets_one_result_in_the_design_schema(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    frame(shares["input"] / "line1" / "cam2" / "0001.jpg", 640, 480)
    frame(shares["input"] / "top.jpg", 320, 240, seed=1)
    got = run.collector.wait_for(2)
    assert sorted(r.rel_path for r in got) == ["line1/cam2/0001.jpg", "top.jpg"]
    results = results_of(shares["output"])
    body = results["line1/cam2/0001.jpg"]
    assert body["schemaVersion"] == "1.1"
    assert body["frame"]["path"] == "line1/cam2/0001.jpg" and (body["frame"]["width"], body["frame"]["height"]) == (
        640,
        480,
    )
    assert len(body["frame"]["sha256"]) == 64
    assert body["model"] == {
        "name": "tiny",
        "version": "0.0.1",
        "provider": "CPUExecutionProvider",
        "sha256": hashlib.sha256(run.settings.model_path.read_bytes()).hexdigest(),
        "task": "detect",
    }
    assert body["profile"] is None and "classification" not in body
    assert body["thresholds"] == {"confidence": 0.5, "iou": 0.45}
    # 640x480 -> 64x64: scale 0.1, 8 px padding at the top; box 15..25 x 27..37 in model pixels
    assert body["detections"] == [
        {"label": "scratch", "classId": 0, "confidence": 0.9, "box": [150.0, 190.0, 250.0, 290.0]},
        {"label": "dent", "classId": 1, "confidence": 0.6, "box": [390.0, 190.0, 490.0, 290.0]},
    ]
    assert body["count"] == 2 and body["processedAt"].endswith("Z")
    assert {"queue", "decode", "inference", "total"} <= set(body["timingsMs"])
    # archived originals, nothing left in the input tree but the claim area
    assert eventually((shares["output"] / "processed" / "line1" / "cam2" / "0001.jpg").is_file)
    assert eventually(lambda: not list(shares["input"].rglob("*.jpg")))  # disposition follows the telemetry


def test_a_threshold_change_applies_to_the_next_frame(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    frame(shares["input"] / "a.jpg")
    assert run.collector.wait_for(1)[0].detections[1].label == "dent"
    run.module.live.update(confidence_threshold=0.8, classes=("scratch", "dent"))
    frame(shares["input"] / "b.jpg")
    b = run.collector.wait_for(2)[1]
    assert [d.label for d in b.detections] == ["scratch"] and b.confidence_threshold == 0.8
    run.module.live.update(confidence_threshold=0.5, classes=("dent",))
    frame(shares["input"] / "c.jpg")
    assert [d.label for d in run.collector.wait_for(3)[2].detections] == ["dent"]


def test_bad_inputs_end_in_failed_with_their_reason_and_the_module_keeps_going(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    from PIL import Image

    run = start(MAX_IMAGE_PIXELS="10000000", TRUNCATED_GRACE_SECONDS="1")  # cut-short files fail after 1 s
    inp = shares["input"]
    good = cv2.imencode(".jpg", np.zeros((100, 100, 3), np.uint8))[1].tobytes()
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, format="PNG")
    (inp / "zero.jpg").write_bytes(b"")
    (inp / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (inp / "text.jpg").write_bytes(b"hello, I am not an image\n")
    (inp / "bomb.png").write_bytes(bomb.getvalue())
    (inp / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    os.mkfifo(inp / "fifo.jpg")
    (tmp_path / "outside.jpg").write_bytes(good)
    (inp / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    frame(inp / "fine.jpg")
    got = {r.rel_path: r for r in run.collector.wait_for(8, timeout=30)}
    expected = {
        "zero.jpg": "empty_file",
        "truncated.jpg": "corrupt_image",
        "text.jpg": "not_an_image",
        "bomb.png": "too_many_pixels",
        "corrupt.png": "corrupt_image",
        "fifo.jpg": "not_a_regular_file",
        "link.jpg": "not_a_regular_file",
    }
    failed = shares["output"] / "failed"
    results = results_of(shares["output"])
    for name, code in expected.items():
        assert results[name]["error"]["code"] == code, name
        error = json.loads((failed / f"{name}.error.json").read_text())
        assert error["error"]["code"] == code and error["error"]["message"]
    for name in ("zero.jpg", "truncated.jpg", "text.jpg", "bomb.png", "corrupt.png"):
        assert eventually((failed / name).is_file), name  # the original moved to failed/
    assert (inp / "fifo.jpg").exists() and (inp / "link.jpg").is_symlink()  # special files never touched
    assert (tmp_path / "outside.jpg").read_bytes() == good  # never followed
    assert got["fine.jpg"].ok and results["fine.jpg"]["count"] == 2


def test_keep_mode_works_on_a_read_only_share_and_the_ledger_remembers(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "writer-side"
    source.mkdir()
    frame(source / "a.jpg")
    frame(source / "sub" / "b.jpg", seed=3)
    ro = shares["input"]
    subprocess.run(["mount", "--bind", str(source), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        run = start(INPUT_DISPOSITION="keep")
        assert sorted(r.rel_path for r in run.collector.wait_for(2)) == ["a.jpg", "sub/b.jpg"]
        run.stop()
        # a restart on the same state takes nothing again; a changed file is a new frame
        run2 = start(INPUT_DISPOSITION="keep")
        time.sleep(1.5)
        assert run2.collector.results == []
        frame(source / "a.jpg", seed=9)
        assert [r.rel_path for r in run2.collector.wait_for(1, timeout=10)] == ["a.jpg"]
        assert (source / "a.jpg").exists() and (source / "sub" / "b.jpg").exists()
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_delete_mode_removes_the_original_after_the_result(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start(INPUT_DISPOSITION="delete")
    frame(shares["input"] / "x" / "a.jpg")
    run.collector.wait_for(1)
    assert "x/a.jpg" in results_of(shares["output"])
    assert eventually(lambda: not list(shares["input"].rglob("*.jpg")))
    assert not (shares["output"] / "processed").exists()


def test_two_replicas_on_one_share_process_every_frame_once(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = start("replica-a", tmp_path / "state-a")
    b = start("replica-b", tmp_path / "state-b")
    names = [f"cam{i % 3}/{i:04d}.jpg" for i in range(60)]
    for i, name in enumerate(names):
        frame(shares["input"] / name, 160, 120, seed=i)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and len(a.collector.results) + len(b.collector.results) < 60:
        time.sleep(0.05)
    time.sleep(1.0)
    got_a = [r.rel_path for r in a.collector.results]
    got_b = [r.rel_path for r in b.collector.results]
    assert sorted(got_a + got_b) == sorted(names)  # every frame once: no loss, no duplicate
    assert len(results_of(shares["output"])) == 60


def test_claims_left_by_a_crash_are_finished_at_restart(start, shares) -> None:  # type: ignore[no-untyped-def]
    # a frame claimed (moved into the claim area) by a run that died before processing it
    claim = shares["input"] / ".edge-inference" / "claims" / "r1" / "line" / "c.jpg"
    frame(claim)
    run = start()
    assert [r.rel_path for r in run.collector.wait_for(1)] == ["line/c.jpg"]
    assert eventually(lambda: (shares["output"] / "processed" / "line" / "c.jpg").is_file() and not claim.exists())


def test_a_finished_frame_whose_input_share_was_away_is_disposed_when_it_returns(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # given the input share is a mount (a bind mount of a backing folder here; SMB/NFS on a box)
    backing = tmp_path / "input-backing"
    backing.mkdir()
    subprocess.run(["mount", "--bind", str(backing), str(shares["input"])], check=True)
    try:
        run = start()
        # when it is unmounted (its mount point is left as a bare, writable folder) with a frame whose result was
        # written but whose original could not be archived yet
        subprocess.run(["umount", "-l", str(shares["input"])], check=True)
        claim = frame(backing / ".edge-inference" / "claims" / "r1" / "line" / "gone.jpg")
        st = claim.stat()
        job = FrameJob("line/gone.jpg", claim, st.st_size, st.st_mtime_ns, "watch", time.monotonic())
        run.module.ledger.record(job.frame_id, job.rel_path, st.st_size, st.st_mtime_ns, "done")
        # then reconciling the claims forgets nothing: intake waits for the share, the claim area is not
        # made again in the bare folder
        assert run.pipeline.intake.reconcile_claims() == 0
        assert "inputUnavailable" in run.pipeline.gate.blocked
        assert not (shares["input"] / ".edge-inference").exists()
        # and once it is back, the housekeeping archives the original by itself, without a new frame or a restart
        subprocess.run(["mount", "--bind", str(backing), str(shares["input"])], check=True)
        assert eventually(lambda: (shares["output"] / "processed" / "line" / "gone.jpg").is_file(), timeout=10)
        assert eventually(lambda: not claim.exists())  # a move across mounts: copied, then the claim removed
        assert eventually(lambda: not run.pipeline.gate.blocked, timeout=5)
        assert run.collector.results == []  # archived, not processed a second time
    finally:
        subprocess.run(["umount", "-l", str(shares["input"])], check=False)


def test_a_claim_area_removed_by_hand_is_made_again(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    frame(shares["input"] / "a.jpg")
    run.collector.wait_for(1)
    # when someone cleaning the share removes the hidden folder
    shutil.rmtree(shares["input"] / ".edge-inference")
    frame(shares["input"] / "b.jpg", seed=1)
    # then the module makes its claim area again and goes on, with no share alarm left standing
    assert [r.rel_path for r in run.collector.wait_for(2, timeout=15)] == ["a.jpg", "b.jpg"]
    assert (shares["input"] / ".edge-inference" / "claims" / "r1").is_dir()
    assert eventually(lambda: not run.pipeline.gate.blocked, timeout=5)


def test_keep_mode_forgets_old_frames_only_once_they_are_gone_from_the_share(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = start(INPUT_DISPOSITION="keep", LEDGER_RETENTION_DAYS="7")
    frame(shares["input"] / "stays.jpg")
    frame(shares["input"] / "goes.jpg", seed=1)
    run.collector.wait_for(2)
    assert eventually(lambda: run.module.ledger.counts().get("done") == 2)
    (shares["input"] / "goes.jpg").unlink()
    # nothing is due within the retention period
    assert run.pipeline.housekeeping.prune_ledger() == (0, False)
    # eight days later, the frame that left the share is forgotten; the one still there is remembered
    assert run.pipeline.housekeeping.prune_ledger(now=time.time() + 8 * 86400) == (1, False)
    assert run.module.ledger.counts() == {"done": 1}
    run.stop()
    # so a restart (start-up scan of the share) does not process it again
    again = start(INPUT_DISPOSITION="keep", LEDGER_RETENTION_DAYS="7")
    time.sleep(2.0)
    assert again.collector.results == []


def test_archive_mode_forgets_old_frames_but_not_claimed_ones(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    for i in range(3):
        frame(shares["input"] / f"f{i}.jpg", seed=i)
    run.collector.wait_for(3)
    assert eventually(lambda: run.commands.status()["inFlight"] == 0)
    # a finished frame still in the claim area (its archive move is pending) must stay known
    claim = shares["input"] / ".edge-inference" / "claims" / "r1" / "f1.jpg"
    os.rename(shares["output"] / "processed" / "f1.jpg", claim)
    forgotten, more, rounds = 0, True, 0
    while more:  # in steps of 2, as the housekeeping does with a backlog
        n, more = run.pipeline.housekeeping.prune_ledger(now=time.time() + 8 * 86400, limit=2)
        forgotten, rounds = forgotten + n, rounds + 1
    assert forgotten == 2 and rounds == 2
    assert run.module.ledger.counts() == {"done": 1}
    assert run.commands.reprocess("f0.jpg") == 0  # beyond the retention period, reprocess cannot reach it


def test_a_claim_that_fails_is_retried_and_never_stops_the_watcher(start, shares, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    run = start()
    real_claim, failures = run.pipeline.claims.claim, []

    def flaky_claim(rel_path: str) -> Path | None:  # an SMB share answering EIO a few times
        if len(failures) < 3:
            failures.append(rel_path)
            raise OSError(5, "Input/output error")
        return real_claim(rel_path)

    monkeypatch.setattr(run.pipeline.claims, "claim", flaky_claim)
    frame(shares["input"] / "a.jpg")
    assert [r.rel_path for r in run.collector.wait_for(1, timeout=15)] == ["a.jpg"]
    assert failures == ["a.jpg"] * 3 and run.module.watcher.alive()


def test_a_silent_replicas_claims_are_adopted(start, shares) -> None:  # type: ignore[no-untyped-def]
    dead = shares["input"] / ".edge-inference" / "claims" / "gone"
    frame(dead / "d.jpg")
    (dead / ".heartbeat").touch()
    old = time.time() - 3600
    os.utime(dead / ".heartbeat", (old, old))
    run = start(CLAIM_STALE_SECONDS="60")
    assert [r.rel_path for r in run.collector.wait_for(1)] == ["d.jpg"]


@pytest.mark.parametrize("disposition", ["archive", "keep"])
def test_reprocess_runs_a_finished_frame_again_under_a_new_message_id(start, shares, disposition) -> None:  # type: ignore[no-untyped-def]
    run = start(INPUT_DISPOSITION=disposition)
    frame(shares["input"] / "line1" / "a.jpg")
    frame(shares["input"] / "line2" / "b.jpg", seed=1)
    first = {r.rel_path: r for r in run.collector.wait_for(2)}
    result_file = shares["output"] / "results" / "line1" / "a.jpg.json"
    before = result_file.stat().st_mtime_ns
    archived = shares["output"] / "processed" / "line1" / "a.jpg"
    assert eventually(lambda: run.commands.status()["inFlight"] == 0 and (archived.is_file() or disposition == "keep"))
    # when line1's frames are asked for again, twice
    assert run.commands.reprocess("line1/*.jpg") == 1
    again = run.collector.wait_for(3)[2]
    assert eventually(lambda: run.commands.status()["inFlight"] == 0 and (archived.is_file() or disposition == "keep"))
    assert run.commands.reprocess("line1/a.jpg") == 1
    third = run.collector.wait_for(4)[3]
    # then each run is a new result of the same frame: its own message id, the result file rewritten in place
    assert again.rel_path == third.rel_path == "line1/a.jpg"
    ids = [first["line1/a.jpg"].frame_id, again.frame_id, third.frame_id]
    assert ids[1] == ids[0] + ".r1" and ids[2] == ids[0] + ".r2"
    assert eventually(lambda: result_file.stat().st_mtime_ns != before)
    assert len(results_of(shares["output"])) == 2
    if disposition == "archive":  # the archived original is taken back, processed, archived again: once
        assert eventually(archived.is_file)
        assert not (shares["input"] / "line1" / "a.jpg").exists()
    else:
        assert (shares["input"] / "line1" / "a.jpg").is_file()
    # and a pattern that matches nothing, or leaves the share, queues nothing
    assert run.commands.reprocess("line9/*.jpg") == 0
    with pytest.raises(ValueError):
        run.commands.reprocess("../etc/*")
    time.sleep(0.5)
    assert len(run.collector.results) == 4


DEMO_MODEL = Path(__file__).resolve().parent.parent / "modules" / "edge-inference" / "models" / "demo-defects.onnx"


def test_batched_frames_get_the_same_detections_as_frames_run_one_by_one(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # given 12 different frames with defects, run through the real demo model one at a time for reference
    from tools.synthetic import encode_jpeg, generate_frame

    rng = np.random.default_rng(7)
    blobs = [encode_jpeg(generate_frame(rng, 640, 480, max_defects=4, min_defects=1)[0]) for _ in range(12)]
    one_by_one = start(
        "solo", MODEL_PATH=str(DEMO_MODEL), BATCH_SIZE="1", INPUT_DIR=str(tmp_path / "in1"),
        OUTPUT_DIR=str(tmp_path / "out1"), STATE_DIR=str(tmp_path / "state1"),
    )  # fmt: skip
    reference = {}
    for i, blob in enumerate(blobs):
        reference[f"f{i:02d}.jpg"] = one_by_one.commands.predict(blob).detections
    # when the same frames arrive together at a module that batches 4 (buffers reused from batch to batch)
    batched = start(MODEL_PATH=str(DEMO_MODEL), BATCH_SIZE="4", BATCH_MAX_WAIT_MS="500")
    staging = shares["input"].parent / "staging"
    staging.mkdir()
    for i, blob in enumerate(blobs):
        (staging / f"f{i:02d}.jpg").write_bytes(blob)
    for name in sorted(os.listdir(staging)):
        os.rename(staging / name, shares["input"] / name)
    got = {r.rel_path: r.detections for r in batched.collector.wait_for(12, timeout=60)}
    # then batches really formed, and every frame has its own detections, not a neighbour's
    histogram = batched.module.metrics.registry.get_sample_value
    assert histogram("edge_inference_batch_size_sum") > histogram("edge_inference_batch_size_count")
    assert sum(bool(d) for d in reference.values()) >= 10  # the frames do have defects to find
    assert set(got) == set(reference)
    for name, detections in reference.items():
        assert [d.label for d in got[name]] == [d.label for d in detections], name
        for a, b in zip(got[name], detections, strict=True):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-3)
            assert np.allclose(a.box, b.box, atol=0.5), name


def test_predict_shares_the_batcher_and_honours_a_per_request_threshold(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    data = cv2.imencode(".png", np.zeros((240, 320, 3), np.uint8))[1].tobytes()
    result = run.commands.predict(data, confidence=0.7)
    assert [d.label for d in result.detections] == ["scratch"] and result.confidence_threshold == 0.7
    assert result.rel_path.startswith("http/")
    assert not results_of(shares["output"])  # /predict writes nothing to the share


def test_pause_leaves_frames_on_the_share_and_resume_takes_them(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    run.commands.pause()
    frame(shares["input"] / "p.jpg")
    time.sleep(1.0)
    assert run.collector.results == [] and (shares["input"] / "p.jpg").exists()
    run.commands.resume()
    assert [r.rel_path for r in run.collector.wait_for(1)] == ["p.jpg"]


def test_output_share_full_pauses_intake_loses_nothing_and_resumes(start, shares, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = shares["output"]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(out)], check=True)
    try:
        run = start(MIN_FREE_MB="0")  # no free-space alarm: this is about a write that runs out of space
        filler = out / "filler.bin"
        with open(filler, "wb") as fh, contextlib.suppress(OSError):  # leave almost nothing
            fh.write(b"\0" * (600 * 1024))
        for i in range(5):
            frame(shares["input"] / f"f{i}.jpg", seed=i)
        time.sleep(2.0)
        assert "outputFull" in run.pipeline.gate.blocked or "outputError" in run.pipeline.gate.blocked
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written
        filler.unlink()
        got = run.collector.wait_for(5, timeout=20)
        assert sorted(r.rel_path for r in got) == [f"f{i}.jpg" for i in range(5)]
        assert len(results_of(out)) == 5 and run.pipeline.gate.blocked == {}
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)


@pytest.mark.parametrize("sub", ["", "site1/line1"])
def test_an_output_share_unmounted_under_the_module_gets_nothing_written_into_its_mount_point(
    start, shares, sub
) -> None:  # type: ignore[no-untyped-def]
    # given the output share is a mount (a tmpfs here; an SMB/NFS share on a box); OUTPUT_DIR is the share or a
    # folder inside it
    mount = shares["output"]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    out = mount / sub
    out.mkdir(parents=True, exist_ok=True)
    try:
        run = start(MIN_FREE_MB="1", OUTPUT_DIR=str(out))
        frame(shares["input"] / "a.jpg")
        run.collector.wait_for(1)
        assert eventually((out / "processed" / "a.jpg").is_file)
        # when it is unmounted and its mount point is a plain, writable folder
        subprocess.run(["umount", "-l", str(mount)], check=True)
        frame(shares["input"] / "b.jpg", seed=1)
        assert eventually(lambda: "outputError" in run.pipeline.gate.blocked)
        time.sleep(1.0)
        # then nothing lands in the folder (it would be hidden by the share when it returns)
        assert list(mount.iterdir()) == [] and len(run.collector.results) == 1
        # and once a share is mounted there again (a new mount, a new device number), the frame is finished
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
        assert [r.rel_path for r in run.collector.wait_for(2, timeout=15)][1] == "b.jpg"
        assert set(results_of(out)) == {"b.jpg"} and eventually((out / "processed" / "b.jpg").is_file)
        assert eventually(lambda: run.pipeline.gate.blocked == {})
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_self_test_finds_the_known_defects_with_the_demo_model_and_round_trips_with_another(  # type: ignore[no-untyped-def]
    start, tmp_path
) -> None:
    from tools import selftest_frame

    # given the committed self-test frame is the one tools/selftest_frame.py makes
    assert selftest_frame.main(["--check"]) == 0
    # when the demo model's module runs its selfTest, then every drawn defect is found
    demo = start(
        "demo", MODEL_PATH=str(DEMO_MODEL), INPUT_DIR=str(tmp_path / "in1"), OUTPUT_DIR=str(tmp_path / "out1"),
        STATE_DIR=str(tmp_path / "state1"),
    )  # fmt: skip
    report = demo.commands.self_test()
    assert report["passed"] is True and report["check"] == "known defects found", report
    assert report["found"] == report["expected"] == 2 and report["provider"] == "CPUExecutionProvider"
    # and a model with other classes passes on the round trip alone
    other = start()
    report = other.commands.self_test()
    assert report["passed"] is True and report["check"].startswith("round trip"), report
    assert not list((tmp_path / "out1").rglob("*.json"))  # the self-test writes nothing to the share

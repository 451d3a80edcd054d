"""Hostile frames against the real pipeline (real files, real watchdog, real ONNX Runtime): each fails alone, with a
code and a reason, or is served; the stages never die, and the good frames around them are processed.

Issue 18 items 1, 2, 9 and 10: extreme aspect ratios, names that are not UTF-8, an exception in any stage, a
frame that keeps dying (quarantine), a progressive-JPEG scan bomb, a 16-bit RGBA memory bomb, and a decode that
runs past its time budget while good frames wait behind it.
"""

# ruff: noqa: F811  (the fixtures of test_pipeline.py are imported, and named as test arguments)

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_inference.entities import FrameJob
from edge_inference.errors import FrameError
from edge_inference.share.ledger import Ledger
from edge_inference.vision import decode as decoding
from tests.jpeg_bombs import deep_png, scan_bomb
from tests.test_pipeline import (  # noqa: F401  (fixtures)
    Running,
    eventually,
    frame,
    model_path,
    results_of,
    start,
)

pytestmark = pytest.mark.timeout(90)


def strip(width: int, height: int, ext: str) -> bytes:
    image = np.random.default_rng(width + height).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


EXTREME = {"wide.png": (2048, 1), "wide.bmp": (3000, 1), "tall.tiff": (1, 3000), "wide.webp": (16383, 1)}


def drop(input_dir: Path, rel: str, data: bytes) -> None:
    target = input_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = input_dir / f".{os.path.basename(rel)}.part"
    tmp.write_bytes(data)
    os.replace(tmp, target)


def wait_results(run: Running, output: Path, names: list[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
    assert eventually(lambda: set(names) <= set(results_of(output)), timeout), (
        sorted(results_of(output)),
        run.pipeline.stage_death(),
    )
    assert not run.pipeline.stage_death()
    return results_of(output)


def test_extreme_aspect_ratios_are_served_on_the_share_and_by_predict(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given 1-pixel strips (the letterbox rounded their short side to 0 rows: the decode stage died)
    run = start()
    for name, (w, h) in EXTREME.items():
        drop(shares["input"], f"strips/{name}", strip(w, h, os.path.splitext(name)[1]))
    frame(shares["input"] / "after/ok.jpg")
    # then each is served with its real size, and the good frame after them too
    results = wait_results(run, shares["output"], [*(f"strips/{n}" for n in EXTREME), "after/ok.jpg"])
    for name, (w, h) in EXTREME.items():
        body = results[f"strips/{name}"]
        assert "error" not in body, body
        assert (body["frame"]["width"], body["frame"]["height"]) == (w, h)
    # and /predict serves them the same way (it was a 500)
    for name, (w, h) in EXTREME.items():
        result = run.commands.predict(strip(w, h, os.path.splitext(name)[1]))
        assert result.ok and (result.width, result.height) == (w, h)


def test_a_name_that_is_not_utf8_is_processed_with_a_stable_id_and_an_escaped_path(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given a Latin-1 name from a legacy SMB client (the watcher died on it: a crash loop)
    run = start()
    staged = shares["input"] / ".t"
    frame(staged)
    os.rename(os.fsencode(staged), os.fsencode(shares["input"]) + b"/caf\xe9.jpg")
    frame(shares["input"] / "after/ok.jpg")
    # then it gets a result at the same bytes under results/, with the name escaped in the JSON
    output = os.fsencode(shares["output"])
    assert eventually(lambda: os.path.exists(output + b"/results/caf\xe9.jpg.json"), 20), run.pipeline.stage_death()
    body = json.loads(Path(os.fsdecode(output + b"/results/caf\xe9.jpg.json")).read_bytes())
    assert body["frame"]["path"] == "caf\\xe9.jpg" and "error" not in body
    assert eventually(lambda: os.path.exists(output + b"/processed/caf\xe9.jpg"), 10)
    # and its telemetry id is the hash of the name's bytes: the same every time
    sent = [r for r in run.collector.wait_for(2) if r.rel_path.startswith("caf")]
    st = os.stat(output + b"/processed/caf\xe9.jpg")
    key = b"caf\xe9.jpg\0" + f"{st.st_size}\0{st.st_mtime_ns}".encode()
    assert [r.frame_id for r in sent] == [hashlib.sha256(key).hexdigest()[:32]]
    wait_results(run, shares["output"], ["after/ok.jpg"])


def test_an_exception_in_any_stage_fails_that_frame_alone(start, shares, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # given one frame per stage whose processing raises something no rule foresaw (injected at the seams: the
    # decoder, the model, the postprocessing and the result writer), among good frames
    src = shares["output"].parent / "src"
    prepare_poison = frame(src / "prepare.jpg", seed=99).read_bytes()
    cv2.imwrite(str(src / "infer.jpg"), np.full((320, 320, 3), 7, np.uint8))  # square: a tensor of 7s, no pad
    real_decode = decoding.decode_checked

    def decode_checked(data: bytes, *args: Any) -> Any:
        if data == prepare_poison:
            raise MemoryError("injected: the decoder's surprise")
        return real_decode(data, *args)

    monkeypatch.setattr(decoding, "decode_checked", decode_checked)
    run = start(BATCH_SIZE="4")
    model, writer = run.module.model, run.pipeline.finisher.writer
    real_run, real_write, real_postprocess = model.run, writer.write_results, model.decoder.decode

    def run_model(tensor: np.ndarray) -> Any:
        if any(abs(float(t.max()) - 7 / 255) < 0.02 and float(t.min()) > 0 for t in tensor):
            raise RuntimeError("injected: the model cannot take this frame")
        return real_run(tensor)

    def post(outputs: Any, letterbox: Any, *args: Any) -> Any:
        if letterbox.width == 321:
            raise IndexError("injected: an output row out of range")
        return real_postprocess(outputs, letterbox, *args)

    def write_results(results: list[Any]) -> None:
        if any(r.rel_path == "poison/write.jpg" and r.ok for r in results):
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "injected")
        real_write(results)

    monkeypatch.setattr(model, "run", run_model)
    monkeypatch.setattr(model.decoder, "decode", post)
    monkeypatch.setattr(writer, "write_results", write_results)
    drop(shares["input"], "poison/prepare.jpg", prepare_poison)
    drop(shares["input"], "poison/infer.jpg", (src / "infer.jpg").read_bytes())
    frame(shares["input"] / "poison/post.jpg", width=321)  # the postprocessing fault keys on this width
    frame(shares["input"] / "poison/write.jpg", seed=98)
    for i in range(6):
        frame(shares["input"] / f"good/{i}.jpg", seed=10 + i)
    names = [f"poison/{n}.jpg" for n in ("prepare", "infer", "post", "write")] + [f"good/{i}.jpg" for i in range(6)]
    # then each poisoned frame fails with its stage's code, the good ones are done, no stage died
    results = wait_results(run, shares["output"], names)
    codes = {n: results[n].get("error", {}).get("code") for n in names}
    assert codes == {
        "poison/prepare.jpg": FrameError.PREPARE_FAILED,
        "poison/infer.jpg": FrameError.INFERENCE_FAILED,
        "poison/post.jpg": FrameError.POSTPROCESS_FAILED,
        "poison/write.jpg": FrameError.WRITE_FAILED,
        **{f"good/{i}.jpg": None for i in range(6)},
    }
    assert "MemoryError: injected" in results["poison/prepare.jpg"]["error"]["message"]
    assert eventually(lambda: (shares["output"] / "failed/poison/write.jpg").exists())
    assert run.commands.readiness() == (True, "ready")


def test_a_frame_that_kept_dying_is_quarantined_not_resumed(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given a frame left claimed by a module that died three times while processing it (the ledger counted the
    # three starts before the work, as a kill leaves them), and MAX_FRAME_ATTEMPTS=3
    claimed = shares["input"] / ".edge-inference/claims/r1/cam/killer.jpg"
    frame(claimed)
    st = claimed.stat()
    job = FrameJob("cam/killer.jpg", claimed, st.st_size, st.st_mtime_ns, "recovered", 0.0)
    ledger = Ledger(shares["state"] / "ledger.sqlite")
    for _ in range(3):
        ledger.begin_attempt(job.frame_id, job.rel_path, job.size, job.mtime_ns)
    ledger.close()
    # when the module starts again
    run = start(MAX_FRAME_ATTEMPTS="3")
    frame(shares["input"] / "after/ok.jpg")
    # then the frame is not processed again: it is quarantined into failed/ with the reason
    results = wait_results(run, shares["output"], ["cam/killer.jpg", "after/ok.jpg"])
    error = results["cam/killer.jpg"]["error"]
    assert error["code"] == "quarantined" and "started 3 times" in error["message"], error
    assert (shares["output"] / "failed/cam/killer.jpg").exists()
    assert json.loads((shares["output"] / "failed/cam/killer.jpg.error.json").read_text())["error"]["code"] == (
        "quarantined"
    )
    assert "error" not in results["after/ok.jpg"]


def test_a_frame_counts_one_attempt_per_start_and_a_share_outage_is_forgiven(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.begin_attempt("f", "a.jpg", 1, 1) == (1, None)
    ledger.note_failure("f", "cannot write its outputs: EIO")
    assert ledger.begin_attempt("f", "a.jpg", 1, 1) == (2, "cannot write its outputs: EIO")
    ledger.forgive("f")
    assert ledger.begin_attempt("f", "a.jpg", 1, 1)[0] == 2
    ledger.record("f", "a.jpg", 1, 1, "claimed")  # a claim again keeps the count
    assert ledger.begin_attempt("f", "a.jpg", 1, 1)[0] == 3
    # a name that is not UTF-8 is kept as its bytes and comes back as the same name
    odd = os.fsdecode(b"caf\xe9.jpg")
    ledger.record("g", odd, 1, 1, "done")
    assert [e.rel_path for e in ledger.finished_matching("caf*")] == [odd]
    ledger.close()
    old = tmp_path / "old.sqlite"  # a ledger written before attempts were counted migrates
    with sqlite3.connect(old) as db:
        db.execute(
            "CREATE TABLE frames (frame_id TEXT PRIMARY KEY, rel_path TEXT NOT NULL, size INTEGER NOT NULL,"
            " mtime_ns INTEGER NOT NULL, state TEXT NOT NULL, updated_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO frames VALUES ('g', 'a.jpg', 1, 1, 'claimed', 0)")
    db.close()
    migrated = Ledger(old)
    assert migrated.begin_attempt("g", "a.jpg", 1, 1)[0] == 1
    migrated.close()


def test_scan_and_memory_bombs_fail_before_decoding_and_good_frames_follow(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given a 66 KB progressive JPEG of 3,010 scans (about 10 s of decoding) and a 31 KB 16-bit RGBA PNG
    # whose decode needs 44 MB, with MAX_DECODE_MB=16
    run = start(MAX_DECODE_MB="16")
    drop(shares["input"], "bombs/scans.jpg", scan_bomb(3000))
    drop(shares["input"], "bombs/deep.png", deep_png(2000, 2000))
    frame(shares["input"] / "after/ok.jpg")
    results = wait_results(run, shares["output"], ["bombs/scans.jpg", "bombs/deep.png", "after/ok.jpg"], 15)
    # then each is refused undecoded with its own code and a reason
    scans, deep = results["bombs/scans.jpg"]["error"], results["bombs/deep.png"]["error"]
    assert (
        scans["code"] == "too_many_scans" and "3010 scans" in scans["message"] and "JPEG_MAX_SCANS" in scans["message"]
    )
    assert deep["code"] == "decode_memory_over_limit" and "42 MB" in deep["message"], deep
    assert results["bombs/scans.jpg"]["timingsMs"]["decode"] < 1000  # refused from its markers, not decoded
    assert "error" not in results["after/ok.jpg"]


def test_good_frames_do_not_wait_behind_a_decode_past_its_budget(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given one decode worker, no scan limit to speak of, a 0.5 s decode budget and a bomb of 3,000 scans
    run = start(DECODE_WORKERS="1", JPEG_MAX_SCANS="100000", DECODE_TIMEOUT_SECONDS="0.5", JPEG_REDUCED_DECODE="false")
    drop(shares["input"], "bombs/scans.jpg", scan_bomb(3000))
    assert eventually(lambda: run.pipeline.preparer.decode_guard.reserved_bytes > 0, 10)  # the bomb is being decoded
    for i in range(3):
        frame(shares["input"] / f"good/{i}.jpg", seed=i)
    # then the bomb fails with decode_timeout, and the good frames are done while it still decodes
    results = wait_results(run, shares["output"], ["bombs/scans.jpg", *(f"good/{i}.jpg" for i in range(3))], 30)
    assert run.pipeline.preparer.decode_guard.overruns == 1, "the bomb's decode should still be running"
    assert results["bombs/scans.jpg"]["error"]["code"] == "decode_timeout"
    assert all("error" not in results[f"good/{i}.jpg"] for i in range(3))
    # and its memory is given back when it ends
    assert eventually(
        lambda: (
            run.pipeline.preparer.decode_guard.reserved_bytes == 0 and run.pipeline.preparer.decode_guard.overruns == 0
        ),
        60,
    )


def test_predict_refuses_bombs_with_the_same_limits(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start(MAX_DECODE_MB="16")
    for data, code in ((scan_bomb(3000), "too_many_scans"), (deep_png(2000, 2000), "decode_memory_over_limit")):
        started = time.monotonic()
        with pytest.raises(FrameError) as err:
            run.commands.predict(data)
        assert err.value.code == code
        assert time.monotonic() - started < 5

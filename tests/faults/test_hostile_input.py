"""Hostile input against the running module (`python -m edge_inference`): frames that killed it, a state folder
that is a file, and bombs through /predict. Each was a crash loop or a stall of the released module (issue 18);
here the module stays up, refuses what it must with a reason, and processes the good frames after them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.faults.harness import FrameDropper, ModuleProcess, Shares, module_env, wait_until
from tests.faults.test_bad_input import result_of, started, still_serves
from tests.jpeg_bombs import deep_png, scan_bomb
from tests.test_hostile_frames import EXTREME, strip
from tools.edgehub_rig.broker import free_port


def attempts_of(shares: Shares, rel: str) -> int:
    """The ledger's count of starts of `rel` (read as another process would)."""
    path = shares.state / "ledger.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            row = db.execute("SELECT MAX(attempts) FROM frames WHERE rel_path = ?", (rel,)).fetchone()
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0
    return int(row[0] or 0)


@pytest.mark.timeout(240)
def test_a_frame_that_kills_the_module_mid_decode_is_quarantined_not_a_crash_loop(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    # given a frame whose decode takes many seconds (a scan bomb under a lax scan limit and time budget), and a
    # module killed -9 while decoding it, three times (as an OOM kill or a crash in a decoder would)
    module = ModuleProcess(
        module_env(model, shares, JPEG_MAX_SCANS=100_000, DECODE_TIMEOUT_SECONDS=600, JPEG_REDUCED_DECODE="false"),
        tmp_path / "module.log",
    )
    FrameDropper(shares.input).drop("cam/killer.jpg", scan_bomb(6000))
    try:
        for kill in range(1, 4):
            module.start()
            wait_until(lambda k=kill: attempts_of(shares, "cam/killer.jpg") >= k, 60, f"start {kill}", module.log_tail)
            time.sleep(0.3)  # well inside the decode
            module.kill()
        # when it starts a fourth time
        module.start()
        module.wait_ready()
        # then the frame is quarantined at once (not decoded again), and the module goes on with good frames
        wait_until(lambda: (shares.output / "results/cam/killer.jpg.json").exists(), 30, "quarantine", module.log_tail)
        error = result_of(shares, "cam/killer.jpg")["error"]
        assert error["code"] == "quarantined" and "started 3 times" in error["message"], error
        assert (shares.output / "failed/cam/killer.jpg").exists()
        still_serves(module, shares)
        assert module.terminate() == 0
    finally:
        module.close()


@pytest.mark.timeout(120)
def test_a_name_that_is_not_utf8_is_processed_and_the_watcher_lives(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    # given the module running, and a legacy client renaming a frame to a Latin-1 name (the watcher died:
    # "'utf-8' codec can't encode character '\udce9'", exit 1 at every restart)
    module = started(tmp_path, model, shares)
    staging = shares.input / ".t"
    FrameDropper(shares.input).drop(".stage/x.jpg")
    os.rename(os.fsencode(shares.input / ".stage/x.jpg"), os.fsencode(staging))
    os.rename(os.fsencode(staging), os.fsencode(shares.input) + b"/caf\xe9.jpg")
    # then its result is written under the same bytes, the JSON shows the name escaped
    result = os.fsencode(shares.output) + b"/results/caf\xe9.jpg.json"
    wait_until(lambda: os.path.exists(result), 30, "result of caf\\xe9.jpg", module.log_tail)
    with open(result, "rb") as fh:
        assert json.load(fh)["frame"]["path"] == "caf\\xe9.jpg"
    still_serves(module, shares)
    assert "Traceback" not in module.this_run_log()
    assert module.terminate() == 0


@pytest.mark.timeout(60)
def test_a_state_folder_that_is_a_plain_file_stops_start_up_with_one_sentence(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    # given `.edge-inference` as a plain file on the input share
    (shares.input / ".edge-inference").write_text("not a folder")
    module = ModuleProcess(module_env(model, shares), tmp_path / "module.log").start()
    assert module.proc is not None
    code = module.proc.wait(60)
    # then the module exits non-zero with one clear sentence and no traceback
    log = module.this_run_log()
    assert code != 0
    assert "Traceback" not in log, log
    assert "is `.edge-inference` on the share a plain file" in log, log


@pytest.mark.timeout(120)
def test_predict_serves_extreme_strips_and_refuses_bombs_with_a_reason(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    port = free_port("127.0.0.1")
    module = started(tmp_path, model, shares, HTTP_HOST="127.0.0.1", HTTP_PORT=port, MAX_DECODE_MB=16)
    url = f"http://127.0.0.1:{port}/predict"
    try:
        # given 1-pixel strips (a 500 before): each is a 200 with its own size
        for name, (w, h) in EXTREME.items():
            ext = os.path.splitext(name)[1]
            response = requests.post(url, files={"image": (name, strip(w, h, ext))}, timeout=30)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert (body["frame"]["width"], body["frame"]["height"]) == (w, h)
        # and bombs are refused before decoding, with their code
        for data, code in ((scan_bomb(3000), "too_many_scans"), (deep_png(2000, 2000), "decode_memory_over_limit")):
            response = requests.post(url, data=data, headers={"Content-Type": "application/octet-stream"}, timeout=30)
            assert response.status_code == 413 and response.json()["error"]["code"] == code, response.text
        still_serves(module, shares)
    finally:
        assert module.terminate() == 0

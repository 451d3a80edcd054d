"""`make run`, `make demo` and `make simulate` as a newcomer runs them: a given twin patch through the rig, the demo's
progress line, and every process they start gone when they are stopped (SIGINT, SIGTERM, SIGHUP), with no port
held; a port already in use is one line naming it and its setting, and exit code 2."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from tests.process_support import REPO, Proc, descendants, make, running, wait_for_line
from tools.edgehub_rig import MQTTS_PORT, pick_loopback_host
from tools.edgehub_rig.broker import free_port, port_is_free
from tools.module_process import module_process_env


@pytest.fixture
def ports() -> Iterator[dict[str, int]]:
    yield {"HTTP_PORT": free_port("0.0.0.0"), "METRICS_PORT": free_port("0.0.0.0")}


def local_env(tmp_path: Path, ports: dict[str, int], **extra: str) -> dict[str, str]:
    folders = {f"{name.upper()}_DIR": str(tmp_path / name) for name in ("input", "output", "state")}
    return module_process_env(**folders, **ports, PYTHONUNBUFFERED="1", **extra)


def signal_and_check(
    proc: subprocess.Popen[bytes],
    log: Path,
    ready: str,
    parts: tuple[str, ...],
    signum: int,
    *,
    group: bool,
    ports: dict[str, int],
) -> list[Proc]:
    """Once `ready` is in the log and each of `parts` runs under `make`: `signum` to make's process group (as the
    terminal sends SIGINT and SIGHUP) or to make alone (as `kill` does); then make ends, nothing it started still
    runs and the module's ports are free again. Returns what ran under make."""
    try:
        wait_for_line(log, ready, proc, 60)
        tree = descendants(proc.pid)
        commands = " | ".join(p.cmdline for p in tree)
        assert all(part in commands for part in parts), commands
        if group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert running(tree) == [], [p.cmdline for p in running(tree)]
    for setting, port in ports.items():
        assert port_is_free("0.0.0.0", port), f"{setting} {port} still held"
    return tree


@pytest.mark.timeout(120)
def test_make_simulate_pushes_the_given_patch_and_its_valid_properties_apply(
    tmp_path: Path, ports: dict[str, int]
) -> None:
    # given the rig on a free loopback address and a patch with one valid and one invalid property
    host, log, data = pick_loopback_host(), tmp_path / "simulate.log", tmp_path / "data"
    patch = '{"saveAnnotated": true, "confidenceThreshold": 7}'
    args = f"--seconds 90 --frames 4 --interval 0.3 --patch-after 0 --host {host} --data-dir {data}"
    env = local_env(tmp_path, ports, JPEG_REDUCED_DECODE="true")  # a frame to annotate is decoded whole all the same
    proc = make("simulate", log, env, f"PATCH={patch}", f"SIMULATE_ARGS={args}")
    annotated = data / "output" / "annotated" / "line1" / "cam1"
    try:
        # when the module has acknowledged it and annotated a frame
        wait_for_line(log, '"ac":200,"av":2,"ad":"applied"', proc, 60)
        deadline = time.monotonic() + 30
        while not list(annotated.glob("*.jpg")):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        proc.wait(timeout=60)
    text = log.read_text()
    # then the patch was pushed as given, saveAnnotated applied and the invalid threshold refused (0.5 stays)
    assert f"pushed {json.dumps(json.loads(patch))} as $version 2" in text
    assert '"saveAnnotated":{"value":true,"ac":200,"av":2,"ad":"applied"}' in text
    assert re.search(r'"confidenceThreshold":\{"value":0\.5,"ac":400,"av":2,"ad":"refused: expected a number', text)
    assert "confidence>=0.5" in text
    # and the frames after it are annotated at their full size (the reduced JPEG decode is for the model only)
    images = sorted(annotated.glob("*.jpg"))
    assert images, text[-3000:]
    assert cv2.imread(str(images[0])).shape == (1080, 1920, 3)
    assert "stop      SIGINT" in text and "module exit code 0" in text


@pytest.mark.timeout(120)
def test_sighup_to_make_simulate_leaves_no_process_no_port_and_no_temp_folder(
    tmp_path: Path, ports: dict[str, int]
) -> None:
    # given make simulate running: the rig (mosquitto, hub emulator), the module and the frame dropper
    host, log = pick_loopback_host(), tmp_path / "simulate.log"
    args = f"--frames 200 --interval 0.3 --host {host} --data-dir {tmp_path / 'data'}"
    proc = make("simulate", log, local_env(tmp_path, ports), f"SIMULATE_ARGS={args}")
    # when the terminal hangs up while the module works and the dropper drops: SIGHUP to the foreground process
    # group (make and tools/simulate.py)
    parts = ("tools/simulate.py", "-m edge_inference", "drop_frames.py", "mosquitto -c")
    tree = signal_and_check(proc, log, "body: frame=", parts, signal.SIGHUP, group=True, ports=ports)
    # then the module drained and stopped, the rig's port on that address is free and its temp folder gone
    rig_dir = Path(next(p.cmdline for p in tree if "mosquitto -c" in p.cmdline).split()[-1]).parent
    text = log.read_text()
    assert "stop      SIGHUP" in text and "stopped (drained)" in text and "module exit code 0" in text
    assert port_is_free(host, MQTTS_PORT)
    assert not rig_dir.exists()


@pytest.mark.timeout(120)
def test_make_demo_says_its_progress_and_sigterm_to_make_stops_everything(
    tmp_path: Path, ports: dict[str, int]
) -> None:
    # given make demo with 3 frames, fast
    log = tmp_path / "demo.log"
    env = local_env(tmp_path, ports, LOCAL_TWIN_PATH=str(tmp_path / "twin.json"))
    proc = make("demo", log, env, "DEMO_ARGS=--count 3 --interval 0.2 --delay 0")
    # when the frames are done, `kill <make's pid>` (SIGTERM to make alone, which passes it on to its child)
    parts = ("tools/demo.py", "-m edge_inference")
    signal_and_check(proc, log, "[demo] 3 of 3 frames done:", parts, signal.SIGTERM, group=False, ports=ports)
    # then the console said what happened to each frame in one line, the progress in two, and nothing is left
    text = log.read_text()
    assert "[demo] 3 frames dropped, Ctrl-C to stop" in text
    assert (
        len(re.findall(r"INFO edge_inference\.ops\.console \[dispatch\] line1/cam1/\S+\.jpg: \d+ detections?", text))
        == 3
    )
    assert '{"output"' not in text  # the full messages are in telemetry.jsonl, not on the console
    assert len((tmp_path / "output" / "telemetry.jsonl").read_text().splitlines()) == 3
    assert "signal SIGTERM received: draining" in text and "stopped (drained)" in text
    assert (tmp_path / "twin.reported.json").exists()


@pytest.mark.timeout(90)
def test_make_run_stops_on_sighup(tmp_path: Path, ports: dict[str, int]) -> None:
    log = tmp_path / "run.log"
    proc = make("run", log, local_env(tmp_path, ports), f"LOCAL_TWIN_PATH={tmp_path / 'twin.json'}")
    ready = "ready (CPUExecutionProvider, local mode)"
    signal_and_check(proc, log, ready, ("-m edge_inference",), signal.SIGHUP, group=True, ports=ports)
    assert "signal SIGHUP received: draining" in log.read_text()


@pytest.mark.timeout(90)
def test_nohup_keeps_sighup_ignored_and_sigint_stops_a_module_started_in_the_background(
    tmp_path: Path, ports: dict[str, int]
) -> None:
    # given the module started as `nohup make run &` would start it: SIGHUP ignored by nohup, SIGINT by the shell
    log = tmp_path / "module.log"
    shell = subprocess.Popen(
        ["bash", "-c", 'nohup "$0" -m edge_inference & wait $!', sys.executable],
        env=local_env(tmp_path, ports),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_line(log, "ready (CPUExecutionProvider, local mode)", shell, 60)
        module = next(p for p in descendants(shell.pid) if "-m edge_inference" in p.cmdline)
        # when the terminal hangs up, the module keeps running; when it gets SIGINT, it drains and exits 0
        os.kill(module.pid, signal.SIGHUP)
        time.sleep(1.0)
        assert running([module]) == [module]
        os.kill(module.pid, signal.SIGINT)
        assert shell.wait(timeout=30) == 0
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    text = log.read_text()
    assert "signal SIGHUP" not in text and "signal SIGINT received: draining" in text and "stopped (drained)" in text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("setting", ["HTTP_PORT", "METRICS_PORT"])
def test_a_port_in_use_is_one_line_naming_port_and_setting_and_exit_2(
    tmp_path: Path, ports: dict[str, int], setting: str
) -> None:
    # given another program listening on the port
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = local_env(tmp_path, {**ports, setting: port})
        # when the module starts
        done = subprocess.run([sys.executable, "-m", "edge_inference"], env=env, capture_output=True, timeout=50)
    # then it exits 2 with one line that names the port and the setting, and no traceback
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 2, out
    errors = [line for line in out.splitlines() if " ERROR " in line]
    assert len(errors) == 1, out
    assert f"{setting}={port} is already in use" in errors[0] and f"set {setting} to a free port" in errors[0]
    assert "Traceback" not in out


@pytest.mark.timeout(60)
def test_the_rigs_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    host = pick_loopback_host()
    with socket.socket() as taken:
        # SO_REUSEADDR as the rig's own check uses: a connection of an earlier rig on this address may still be in
        # TIME_WAIT, which port_is_free() (rightly) ignores but a plain bind refuses
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((host, MQTTS_PORT))
        taken.listen()
        done = subprocess.run(
            [sys.executable, "tools/simulate.py", "--host", host, "--seconds", "5", "--data-dir", str(tmp_path)],
            cwd=REPO,
            env=module_process_env(),
            capture_output=True,
            timeout=50,
        )
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 2, out
    assert out.count("\n") == 1, out
    assert f"port {MQTTS_PORT} on {host}" in out and "already in use" in out and "--host" in out


@pytest.mark.timeout(30)
def test_simulate_refuses_a_patch_that_is_not_a_json_object(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "tools/simulate.py", "--patch", '{"saveAnnotated": tru', "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=module_process_env(),
        capture_output=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert b"--patch: not valid JSON" in done.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "says"),
    [
        ("--count 0", "--count must be at least 1"),
        ("--interval -1", "--interval and --delay must not be negative"),
        ("--subdir ../up", "--subdir must be a relative path inside --input"),
    ],
)
def test_make_demo_refuses_bad_options_in_one_line_before_starting_anything(
    tmp_path: Path, ports: dict[str, int], args: str, says: str
) -> None:
    log = tmp_path / "demo.log"
    proc = make("demo", log, local_env(tmp_path, ports), f"DEMO_ARGS={args}")
    assert proc.wait(timeout=20) != 0
    text = log.read_text()
    assert f"demo: error: {says}" in text, text
    assert "Traceback" not in text and "edge_inference" not in text  # the module was never started
    assert not (tmp_path / "input").exists() or not any((tmp_path / "input").rglob("*.jpg"))

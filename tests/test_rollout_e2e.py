"""The whole module (`python -m edge_inference`) against the edgeHub rig with a real HTTPS model server: a `model`
in the twin becomes the model named by every message, `runtime.model` follows, `getModels` and `rollbackModel`
answer as direct methods, the acknowledgements fit the DTDL interface, and a module killed during a download
finishes it after its restart; the SAS token reaches no log line."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dtdl import conformance, contents
from tests.rollout_support import build_models, drop, eventually, sha, spec
from tools.model_server import ModelServer
from tools.module_process import fast_module_env

pytestmark = [
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed"),
    pytest.mark.timeout(240),
]

HOSTS = ("127.0.0.13", "127.0.0.14", "127.0.0.15")


class Process:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_inference"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        marker = self.log.read_bytes().count(b" ready (")
        assert eventually(lambda: self.log.read_bytes().count(b" ready (") > marker, 90), self.text()[-3000:]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def rig_module(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from tools.edgehub_rig import EdgeHubRig, pick_loopback_host

    models = build_models(tmp_path / "models")
    dirs = {name: tmp_path / name for name in ("input", "output", "state")}
    for d in dirs.values():
        d.mkdir()
    with (
        ModelServer(tmp_path / "server") as server,
        EdgeHubRig(tmp_path / "rig", host=pick_loopback_host(HOSTS)) as rig,
    ):
        env = fast_module_env(rig.env(), models["A"], dirs, "rollout-e2e", MODEL_CA_FILE=str(server.ca_file))
        process = Process(env, tmp_path / "module.log")
        try:
            yield {"rig": rig, "server": server, "models": models, "process": process, **dirs}
        finally:
            if process.proc is not None:
                process.stop()


def frame_messages(rig: Any, paths: list[str]) -> dict[str, dict[str, Any]]:
    got = rig.wait_messages(len(paths), output="detections", timeout=60)
    bodies = {g.json()["frame"]["path"]: g.json() for g in got}
    assert set(paths) <= set(bodies), bodies.keys()
    return bodies


def test_a_rollout_and_a_rollback_through_edgehub(rig_module: dict[str, Any]) -> None:
    rig, server, models, process = rig_module["rig"], rig_module["server"], rig_module["models"], rig_module["process"]
    a, b = sha(models["A"]), sha(models["B"])
    server.put("b.onnx", models["B"].read_bytes())
    process.start()
    rig.wait_reported(lambda r: r["runtime"]["model"]["sha256"] == a, timeout=30)
    # when the operator sets `model` in the twin
    version = rig.set_desired({"model": spec("defects", models["B"], server.url("b.onnx"))})
    reported = rig.wait_reported(lambda r: r["model"]["av"] == version and r["model"]["ac"] == 200, timeout=60)
    # then runtime.model follows, and the acknowledgement and runtime fit the interface
    assert reported["runtime"]["model"]["sha256"] == b and reported["runtime"]["model"]["rollout"]["state"] == "active"
    writable, read_only = contents("Property", writable=True), contents("Property", writable=False)
    assert conformance(reported["model"]["value"], writable["model"]["schema"], "model") == []
    assert conformance(reported["runtime"], read_only["runtime"]["schema"], "runtime") == []
    # and the next frames' messages name the new model
    drop(rig_module["input"], "after/1.jpg", seed=1)
    body = frame_messages(rig, ["after/1.jpg"])["after/1.jpg"]
    assert body["model"]["sha256"] == b and body["model"]["name"] == "defects"
    # getModels shows it, with the boot model to roll back to
    status, models_now = rig.invoke_method("getModels", {}, timeout=15)
    assert status == 200 and models_now["active"]["sha256"] == b and models_now["rollbackTo"][0]["sha256"] == a
    # rollbackModel returns to the boot model
    status, body = rig.invoke_method("rollbackModel", None, timeout=30)
    assert status == 200 and body["active"]["sha256"] == a
    rig.wait_reported(lambda r: r["model"]["value"]["sha256"] == a and r["runtime"]["model"]["sha256"] == a, 20)
    assert rig.reported["model"]["value"].get("url") is None  # the merge patch cleared B's URL
    status, body = rig.invoke_method("rollbackModel", None, timeout=30)
    assert status == 409  # nothing before the boot model
    rig.clear_messages()
    drop(rig_module["input"], "after/2.jpg", seed=2)
    assert frame_messages(rig, ["after/2.jpg"])["after/2.jpg"]["model"]["sha256"] == a
    assert process.stop() == 0
    assert server.sas.split("sig=")[1] not in process.text() + str(rig.reported_patches())


def test_a_module_killed_during_a_download_finishes_it_after_the_restart(rig_module: dict[str, Any]) -> None:
    rig, server, models, process = rig_module["rig"], rig_module["server"], rig_module["models"], rig_module["process"]
    data = models["SHIFTED"].read_bytes()
    part = rig_module["state"] / "models" / f"{sha(models['SHIFTED'])}.onnx.part"
    server.put("s.onnx", data)
    server.stall["s.onnx"] = len(data) // 2
    process.start()
    version = rig.set_desired({"model": spec("shifted", models["SHIFTED"], server.url("s.onnx"))})
    assert eventually(lambda: part.exists() and part.stat().st_size == len(data) // 2, 30)
    assert process.stop(signal.SIGKILL) == -signal.SIGKILL
    server.stall.clear()
    # the restart gets the same desired document from edgeHub and resumes the download
    process.start()
    rig.wait_reported(lambda r: r["model"]["av"] == version and r["model"]["ac"] == 200, timeout=60)
    assert server.asked("s.onnx")[-1].range == f"bytes={len(data) // 2}-"
    assert rig.reported["runtime"]["model"]["sha256"] == sha(models["SHIFTED"])
    time.sleep(0.2)
    assert process.stop() == 0


def test_make_simulate_rollout_shows_a_rollout_and_a_rollback(tmp_path: Path) -> None:
    from tools.edgehub_rig import pick_loopback_host

    command = [sys.executable, "tools/simulate_rollout.py", "--data-dir", str(tmp_path / "data"), "--interval", "0.3"]
    command += ["--host", pick_loopback_host(("127.0.0.16", "127.0.0.17"))]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "rollout seen, rollback seen" in done.stdout
    assert "model=demo-defects 1.1.0-sim" in done.stdout and "rollbackModel -> 200" in done.stdout

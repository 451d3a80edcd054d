"""Model rollout from the twin, on the whole module in-process: real HTTPS on loopback with a test CA, real ONNX
Runtime, real files. A `model` patch while frames flow; each refusal with the old model serving throughout; a
cut download resumed; a restart during a download; a restart after a swap with the network down; rollbacks by
patch, by method, automatic, and after a crash on probation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_inference.ops.alarms import MODEL_ROLLED_BACK, MODEL_ROLLOUT_FAILED
from tests.onnx_models import build_constant_model, yolov8_output
from tests.rollout_support import Running, build_models, drop, eventually, modules, sha, spec, start_module
from tools.model_server import ModelServer

pytestmark = pytest.mark.timeout(120)


def served_by(run: Running, rel: str, timeout: float = 20.0) -> str:
    """Drop a frame and return the sha256 of the model that judged it."""
    drop(run.dirs["input"], rel, seed=hash(rel) % 1000)
    found = eventually(lambda: [r for r in run.collector.snapshot() if r.rel_path == rel], timeout)
    assert found, f"no result for {rel}"
    assert found[0].ok, found[0].error
    return found[0].model.sha256


def test_a_model_patch_while_frames_flow_swaps_with_no_frame_lost_or_doubled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = build_models(tmp_path / "models")
    a, b = sha(models["A"]), sha(models["B"])
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("b.onnx", models["B"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        run.take_reported()
        # given frames flowing in, 30 ms apart
        stop, dropped = threading.Event(), []

        def feed() -> None:
            for i in range(300):
                if stop.is_set():
                    return
                drop(run.dirs["input"], f"cam/{i:04d}.jpg", seed=i)
                dropped.append(f"cam/{i:04d}.jpg")
                time.sleep(0.03)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            assert eventually(lambda: len(run.collector.snapshot()) >= 10)
            # when the twin asks for model B by URL (with a SAS token)
            run.patch({"model": spec("defects", models["B"], server.url("b.onnx"))})
            assert run.take_reported()["model"]["ac"] == 202  # accepted: it works on it, A serves meanwhile
            ack = run.ack("model")
            assert eventually(lambda: any(r.model.sha256 == b for r in run.collector.snapshot()))
            time.sleep(0.5)
        finally:
            stop.set()
            feeder.join()
        # then it is acknowledged with ac 200, and every frame got exactly one result
        assert ack["ac"] == 200 and ack["value"]["sha256"] == b and ack["value"]["name"] == "defects", ack
        results = eventually(lambda: len(run.collector.snapshot()) == len(dropped) and run.collector.snapshot(), 30)
        assert results, f"{len(run.collector.snapshot())} results for {len(dropped)} frames"
        paths = [r.rel_path for r in results]
        assert sorted(paths) == sorted(dropped) and len(set(paths)) == len(paths)
        assert set(run.results_on_share()) == set(dropped)
        # results before the swap name A, after it B (with B's own detections on B's own input size)
        by_index = [r.model.sha256 for r in sorted(results, key=lambda r: r.rel_path)]
        assert by_index[0] == a and by_index[-1] == b
        first_b = by_index.index(b)
        assert by_index[first_b:].count(a) <= 4, "after the swap only frames already batched finish on A"
        for r in results:
            labels = sorted(d.label for d in r.detections)
            assert labels == (["dent", "scratch"] if r.model.sha256 == a else ["dent"]), (r.model, labels)
            assert r.model.name == ("defects" if r.model.sha256 == b else "tiny")
        on_share = run.results_on_share()["cam/0000.jpg"]
        assert on_share["model"]["sha256"] == a and on_share["model"]["name"] == "tiny"
        # reported runtime.model named A until the swap, B after it
        runtime_models = [p["runtime"]["model"]["sha256"] for p in run.patches if "runtime" in p]
        assert runtime_models[0] == a and runtime_models[-1] == b
        assert runtime_models == sorted(runtime_models, key=lambda m: m == b), "runtime.model changes once, at the swap"
        assert run.reported["runtime"]["model"]["rollout"]["state"] == "active"
        status = run.module.commands.status()
        assert status["model"]["sha256"] == b and status["rollout"]["state"] == "active"
        assert status["rollout"]["model"]["name"] == "defects" and status["rollout"]["candidate"]["state"] == "idle"
        # the SAS token is in no log line, reported property, result or state file
        secret = server.sas.split("sig=")[1]
        state = (run.dirs["state"] / "models" / "rollout.json").read_text()
        outputs = "".join(p.read_text() for p in (run.dirs["output"] / "results").rglob("*.json"))
        assert secret not in caplog.text + json.dumps(run.patches) + state + outputs
        assert "sig=" not in json.dumps(run.reported)


def test_each_refusal_keeps_the_old_model_serving(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    a = sha(models["A"])
    models_dir = tmp_path / "models-share"
    (models_dir / "sub").mkdir(parents=True)
    (models_dir / "sub" / "b.onnx").write_bytes(models["B"].read_bytes())
    (models_dir / "escape").symlink_to(tmp_path / "models")
    nhwc = build_constant_model(
        tmp_path / "nhwc.onnx", yolov8_output([(20, 32, 10, 10)], [[0.9, 0.1]]), input_shape=["b", 64, 64, 3]
    )
    junk = np.random.default_rng(1).bytes(1536 * 1024)
    junk_sha = __import__("hashlib").sha256(junk).hexdigest()
    with ModelServer(tmp_path / "server") as server, modules() as running:
        for name, data in {"b.onnx": models["B"].read_bytes(), "nhwc.onnx": nhwc.read_bytes(), "junk": junk}.items():
            server.put(name, data)
        server.put("half.onnx", models["B"].read_bytes()[: models["B"].stat().st_size // 2])
        server.put("cut.onnx", models["B"].read_bytes())
        server.cut["cut.onnx"] = 64
        server.put("stall.onnx", models["B"].read_bytes())
        server.stall["stall.onnx"] = 64
        run = start_module(
            tmp_path, models["A"], server.ca_file, running=running, MODELS_DIR=str(models_dir), MODEL_MAX_MB="1"
        )
        b_spec = spec("b", models["B"], server.url("b.onnx"))
        cases: list[tuple[str, dict[str, Any], int, str]] = [
            ("wrong hash", {**b_spec, "sha256": "ab" * 32}, 400, "sha256 mismatch"),
            ("truncated file", {**b_spec, "url": server.url("half.onnx")}, 400, "sha256 mismatch"),
            ("a connection that always breaks", {**b_spec, "url": server.url("cut.onnx")}, 500, "download failed"),
            ("404", {**b_spec, "url": server.url("gone.onnx")}, 400, "HTTP 404"),
            ("a server that stalls", {**b_spec, "url": server.url("stall.onnx")}, 500, "stalls"),
            ("too large", {**b_spec, "url": server.url("junk"), "sha256": junk_sha}, 400, "over MODEL_MAX_MB"),
            ("sizeBytes over the cap", {**b_spec, "sizeBytes": 5 * 1024 * 1024}, 400, "sizeBytes"),
            ("wrong input", spec("nhwc", nhwc, server.url("nhwc.onnx")), 400, "NHWC"),
            (
                "a path escaping MODELS_DIR",
                {**b_spec, "url": None, "path": "../models/a.onnx"},
                400,
                "inside MODELS_DIR",
            ),
            ("a symlink out of MODELS_DIR", {**b_spec, "url": None, "path": "escape/b.onnx"}, 400, "out of MODELS_DIR"),
            ("plain http", {**b_spec, "url": server.url("b.onnx").replace("https:", "http:")}, 400, "only https"),
            ("not a URL scheme we take", {**b_spec, "url": "ftp://127.0.0.1/b.onnx"}, 400, "https URL"),
            ("no sha256", {k: v for k, v in b_spec.items() if k != "sha256"}, 400, "'sha256' is required"),
        ]
        assert served_by(run, "before.jpg") == a
        for i, (case, value, ac, reason) in enumerate(cases):
            value = {k: v for k, v in value.items() if v is not None}
            run.patch({"model": value})
            ack = run.ack("model")
            assert ack["ac"] == ac and reason in ack["ad"], (case, ack)
            assert ack["value"]["sha256"] == a, case  # the value in force: still A
            assert run.module.alarms.is_active(MODEL_ROLLOUT_FAILED), case
            assert served_by(run, f"after-{i}.jpg") == a, case
            state = run.module.commands.status()["rollout"]
            assert state["state"] == "failed" and state["ac"] == ac and reason in state["reason"], (case, state)
            assert server.sas.split("sig=")[1] not in ack["ad"]
        alarm = run.module.alarms.active()[MODEL_ROLLOUT_FAILED]
        assert alarm["details"]["property"] == "model" and alarm["details"]["ac"] == 400
        assert [m["body"]["alarm"] for m in run.messages("alerts")].count(MODEL_ROLLOUT_FAILED) >= 2
        # and a good value after all of them still goes through (the alarm clears)
        run.patch({"model": {**{k: v for k, v in b_spec.items() if k != "url"}, "path": "sub/b.onnx"}})
        assert run.ack("model")["ac"] == 200
        assert not run.module.alarms.is_active(MODEL_ROLLOUT_FAILED)
        assert served_by(run, "finally.jpg") == sha(models["B"])


def test_a_download_cut_half_way_resumes_with_range(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    data = models["B"].read_bytes()
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("b.onnx", data)
        server.cut_once["b.onnx"] = len(data) // 2
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        run.patch({"model": spec("b", models["B"], server.url("b.onnx"))})
        assert run.ack("model")["ac"] == 200
        asked = server.asked("b.onnx")
        assert [(r.range, r.status) for r in asked] == [(None, 200), (f"bytes={len(data) // 2}-", 206)]
        assert (run.dirs["state"] / "models" / f"{sha(models['B'])}.onnx").read_bytes() == data


def test_a_restart_during_a_download_finishes_it(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    data = models["B"].read_bytes()
    b = sha(models["B"])
    part = tmp_path / "state" / "models" / f"{b}.onnx.part"
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("b.onnx", data)
        server.stall["b.onnx"] = len(data) // 3  # the connection hangs a third of the way in
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        value = spec("b", models["B"], server.url("b.onnx"))
        version = run.patch({"model": value})
        assert eventually(lambda: part.exists() and part.stat().st_size == len(data) // 3)
        # getStatus shows the state machine: fetching, with the bytes so far
        status = eventually(lambda: (s := run.module.commands.status()["rollout"]).get("bytes") and s)
        assert status["state"] == "fetching" and status["bytes"] == len(data) // 3
        assert status["totalBytes"] == len(data) and status["target"]["sha256"] == b
        # when the module is restarted during the download
        run.stop()
        assert run.module.rollout.join(10)
        assert part.stat().st_size == len(data) // 3  # the part stays for the next start
        server.stall.clear()
        again = start_module(tmp_path, models["A"], server.ca_file, running=running)
        # and the twin's whole desired document comes again (same value, as after a reconnect)
        again.patch({"model": value, "confidenceThreshold": 0.5}, full=True, version=version)
        # then the download resumes where it stopped and the model swaps in
        assert again.ack("model", version)["ac"] == 200
        assert server.asked("b.onnx")[-1].range == f"bytes={len(data) // 3}-"
        assert served_by(again, "after-restart.jpg") == b


def test_a_restart_after_a_swap_comes_back_on_the_new_model_with_the_network_down(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    b = sha(models["B"])
    with modules() as running:
        with ModelServer(tmp_path / "server") as server:
            server.put("b.onnx", models["B"].read_bytes())
            run = start_module(tmp_path, models["A"], server.ca_file, running=running)
            value = spec("defects", models["B"], server.url("b.onnx"))
            version = run.patch({"model": value})
            assert run.ack("model")["ac"] == 200
            run.stop()
            asked = len(server.requests)
        # the model server is gone and the module starts in local mode: no twin, no network
        again = start_module(tmp_path, models["A"], None, running=running)
        assert again.module.slot.active.sha256 == b
        assert served_by(again, "offline.jpg") == b
        models_now = again.module.commands.models()
        assert models_now["active"]["sha256"] == b and models_now["rollbackTo"][0]["boot"] is True
        # and when the twin's document comes back with the same value, nothing is fetched again
        again.patch({"model": value}, full=True, version=version)
        assert again.take_reported()["model"]["ac"] == 200
        assert len(server.requests) == asked


def test_rollback_by_patch_and_by_method(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    a, b = sha(models["A"]), sha(models["B"])
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("b.onnx", models["B"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        assert run.module.commands.rollback_model()[0] == 409  # nothing served before the boot model
        value = spec("b", models["B"], server.url("b.onnx"))
        run.patch({"model": value})
        assert run.ack("model")["ac"] == 200 and served_by(run, "b1.jpg") == b
        # by patch
        run.patch({"model": {"rollback": True}})
        ack = run.ack("model")
        assert ack["ac"] == 200 and ack["value"]["sha256"] == a and "rolled back" in ack["ad"]
        assert served_by(run, "a1.jpg") == a
        # by method, after the same model again (from the cache: no second download)
        run.patch({"model": value})
        assert run.ack("model")["ac"] == 200 and served_by(run, "b2.jpg") == b
        assert len(server.asked("b.onnx")) == 1
        status, body = run.module.commands.rollback_model()
        assert status == 200 and body["active"]["sha256"] == a and body["rolledBackFrom"]["sha256"] == b
        assert served_by(run, "a2.jpg") == a
        assert run.take_reported()["model"]["value"]["sha256"] == a
        assert not run.module.alarms.is_active(MODEL_ROLLED_BACK)  # asked for: no alarm


def test_automatic_rollback_after_a_model_that_fails_frames(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    a, failing = sha(models["A"]), sha(models["FAILING"])
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("f.onnx", models["FAILING"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running, BATCH_SIZE="1")
        run.patch({"model": spec("failing", models["FAILING"], server.url("f.onnx"))})
        assert run.ack("model")["ac"] == 200  # it passes the checks, warm-up and self-test
        # when bright frames come, which it fails
        for i in range(8):
            drop(run.dirs["input"], f"white/{i}.jpg", white=True, size=(128, 128))
        results = eventually(lambda: len(run.collector.snapshot()) == 8 and run.collector.snapshot(), 30)
        # then no frame is lost: the model before it served each one, and after 5 in a row it is rolled back
        assert results and all(r.ok for r in results), [r.error for r in run.collector.snapshot()]
        assert {r.model.sha256 for r in results} == {a}
        assert eventually(lambda: run.module.alarms.is_active(MODEL_ROLLED_BACK))
        assert run.module.slot.active.sha256 == a and run.module.slot.previous is None
        assert eventually(lambda: run.take_reported()["model"]["ac"] == 500)
        ack = run.reported["model"]
        assert "automatically: 5 frames in a row failed" in ack["ad"] and ack["value"]["sha256"] == a
        alarm = run.module.alarms.active()[MODEL_ROLLED_BACK]
        assert alarm["details"]["from"]["sha256"] == failing and "5 frames in a row" in alarm["details"]["reason"]
        assert any(m["body"]["alarm"] == MODEL_ROLLED_BACK for m in run.messages("alerts"))
        assert run.module.store.active() is None  # remembered: a restart starts on the boot model


def test_a_crash_on_probation_rolls_back_at_the_next_start(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    a = sha(models["A"])
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("b.onnx", models["B"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        run.patch({"model": spec("b", models["B"], server.url("b.onnx"))})
        assert run.ack("model")["ac"] == 200
        run.stop(clean=False)  # as after a worker died (or a kill): no clean stop noted
        again = start_module(tmp_path, models["A"], server.ca_file, running=running)
        assert again.module.slot.active.sha256 == a
        assert again.module.alarms.is_active(MODEL_ROLLED_BACK)
        assert "probation" in again.module.alarms.active()[MODEL_ROLLED_BACK]["message"]
        assert served_by(again, "after-crash.jpg") == a


def test_a_second_module_reads_a_model_with_its_own_labels(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    unnamed = build_constant_model(tmp_path / "unnamed.onnx", yolov8_output([(20, 32, 10, 10)], [[0.9, 0.1]]))
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("u.onnx", unnamed.read_bytes())
        server.put("labels.txt", b"crack\nchip\n")
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        run.patch({"model": spec("u", unnamed, server.url("u.onnx"), labelsUrl=server.url("labels.txt"))})
        assert run.ack("model")["ac"] == 200
        drop(run.dirs["input"], "l.jpg")
        found = eventually(lambda: [r for r in run.collector.snapshot() if r.rel_path == "l.jpg"])
        assert [d.label for d in found[0].detections] == ["crack"]
        assert run.take_reported()["runtime"]["classes"] == ["crack", "chip"]


def test_a_gpu_failure_under_a_new_model_on_probation_falls_back_instead_of_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_inference.errors import GpuError
    from tests.gpu_fakes import CUDA_FAILURE

    models = build_models(tmp_path / "models")
    a = sha(models["A"])
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("b.onnx", models["B"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running, BATCH_SIZE="1")
        run.patch({"model": spec("b", models["B"], server.url("b.onnx"))})
        assert run.ack("model")["ac"] == 200
        # the GPU is the one edge that cannot run here: the new session's runs fail as a CUDA session does

        def gpu_lost(batch: object) -> object:
            raise GpuError(f"inference failed on CUDAExecutionProvider: {CUDA_FAILURE}")

        monkeypatch.setattr(run.module.slot.active, "run", gpu_lost)
        for i in range(7):
            drop(run.dirs["input"], f"gpu/{i}.jpg", seed=i)
        results = eventually(lambda: len(run.collector.snapshot()) == 7 and run.collector.snapshot(), 30)
        assert results and all(r.ok and r.model.sha256 == a for r in results)
        assert run.module.slot.active.sha256 == a
        assert eventually(lambda: run.module.alarms.is_active(MODEL_ROLLED_BACK))
        assert not run.module.supervisor.describe_death()  # the inference stage lives on


def test_the_local_twin_file_rolls_out_a_model_as_the_module_twin_does(tmp_path: Path) -> None:
    """Outside IoT Edge, `model` in the LOCAL_TWIN_PATH file goes through the same TwinState to the rollout: the
    swap happens, the acknowledgement lands in `<name>.reported.json`."""
    models = build_models(tmp_path / "models")
    models_dir = tmp_path / "models-share"
    models_dir.mkdir()
    (models_dir / "b.onnx").write_bytes(models["B"].read_bytes())
    twin_file = tmp_path / "twin.json"
    b = sha(models["B"])
    with modules() as running:
        run = start_module(
            tmp_path, models["A"], None, running=running, MODELS_DIR=str(models_dir), LOCAL_TWIN_PATH=str(twin_file)
        )
        assert run.module.local_twin is not None
        twin_file.write_text(json.dumps({"model": {"name": "b", "version": "2.0.0", "path": "b.onnx", "sha256": b}}))
        reported = tmp_path / "twin.reported.json"

        def acknowledged() -> dict[str, Any] | None:
            ack = json.loads(reported.read_text()).get("model") if reported.exists() else None
            return ack if ack and ack.get("ac") == 200 else None

        ack = eventually(acknowledged, timeout=60)
        assert ack["value"]["sha256"] == b and run.module.slot.active.sha256 == b
        assert served_by(run, "after.jpg") == b

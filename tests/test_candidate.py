"""The candidate shadow on the whole module in-process (real HTTPS, real ONNX Runtime, real files): agreement 1.0
for a copy of the active model and 0 for one whose classes are shifted, reported in `candidate.stats` and on
`modelEvaluation`; nothing of it in results/; starved under a saturating load, not the active model; promoted
through verify and swap; ended by null, by maxMinutes; evaluated again after a restart."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inference.ops.live_settings import LiveSettings, TwinSettings
from edge_inference.rollout.shadow import SHADOW_QUEUE, CandidateShadow, ShadowInbox
from edge_inference.settings import read_settings
from edge_inference.vision.model import OnnxModel
from tests.rollout_support import ListSink, Running, build_models, drop, eventually, modules, sha, spec, start_module
from tools.model_server import ModelServer

pytestmark = pytest.mark.timeout(120)


def evaluating(run: Running, candidate: dict[str, object]) -> None:
    run.patch({"telemetry": {"summaryIntervalSeconds": 1}})
    run.patch({"candidate": candidate})
    ack = run.ack("candidate")
    assert ack["ac"] == 200 and ack["ad"] == "evaluating", ack


def trickle(run: Running, count: int, prefix: str, pause: float = 0.15) -> None:
    """Frames with idle moments between them (spare capacity for the candidate)."""
    for i in range(count):
        drop(run.dirs["input"], f"{prefix}/{i:03d}.jpg", seed=i)
        time.sleep(pause)


def compared(run: Running, at_least: int, timeout: float = 30.0) -> dict[str, object]:
    stats = eventually(lambda: (s := run.module.shadow.stats()) and s["framesCompared"] >= at_least and s, timeout)
    assert stats, run.module.shadow.stats()
    return stats


def test_a_copy_of_the_active_model_agrees_fully_and_nothing_of_it_is_written(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    a = sha(models["A"])
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("a.onnx", models["A"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        evaluating(run, spec("copy", models["A"], server.url("a.onnx"), sampleRate=1.0))
        trickle(run, 10, "line")
        stats = compared(run, 10)
        assert stats["agreement"] == 1.0 and stats["precision"] == 1.0 and stats["recall"] == 1.0
        assert stats["framesAgreeing"] == stats["framesCompared"] and stats["meanConfidenceShift"] == 0.0
        assert set(stats["perClass"]) == {"scratch", "dent"}  # type: ignore[arg-type]
        assert stats["latencyMs"]["candidate"]["mean"] is not None  # type: ignore[index]
        # on `modelEvaluation` every interval, and in the reported candidate.stats
        messages = eventually(lambda: run.messages("modelEvaluation"))
        body = messages[-1]["body"]
        assert body["candidateModel"]["sha256"] == a and body["activeModel"]["sha256"] == a
        assert messages[-1]["properties"]["messageType"] == "evaluation"
        reported = eventually(lambda: (run.take_reported()["candidate"]["value"] or {}).get("stats"))
        assert reported and reported["agreement"] in (None, 1.0)
        # nothing of the candidate in results/: one result per frame, each from the active model
        # (the shadow compares a frame in the dispatcher, before the finish stage writes its result: wait for them)
        eventually(lambda: len(run.collector.snapshot()) >= 10 and len(run.results_on_share()) >= 10)
        results = run.collector.snapshot()
        assert len(results) == 10 and len(run.results_on_share()) == 10
        assert {r.model.name for r in results} == {"tiny"}


def test_a_candidate_with_shifted_classes_agrees_near_zero(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("s.onnx", models["SHIFTED"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        evaluating(run, spec("shifted", models["SHIFTED"], server.url("s.onnx"), sampleRate=1.0))
        trickle(run, 8, "line")
        stats = compared(run, 8)
        assert stats["agreement"] == 0.0 and stats["precision"] == 0.0 and stats["recall"] == 0.0
        assert stats["framesAgreeing"] == 0
        assert stats["perClass"]["dent"]["candidateDetections"] == 8  # type: ignore[index]


def test_under_a_saturating_load_the_candidate_is_starved_not_the_active_model(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("a.onnx", models["A"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running, QUEUE_SIZE="500")
        evaluating(run, spec("copy", models["A"], server.url("a.onnx"), sampleRate=1.0))
        # given a backlog: 150 frames of 1.2 megapixels waiting at once (decoding them keeps the pipeline busy)
        run.module.commands.pause()
        for i in range(150):
            small = np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8)
            assert cv2.imwrite(str(tmp_path / "frame.jpg"), cv2.resize(small, (1280, 960)))
            os.replace(tmp_path / "frame.jpg", run.dirs["input"] / f"burst-{i:03d}.jpg")
        run.module.commands.resume()
        # then every frame gets its result from the active model
        assert eventually(lambda: len(run.collector.snapshot()) == 150, 60)
        assert {r.model.name for r in run.collector.snapshot()} == {"tiny"}
        # and the candidate compared only the few frames queued in the backlog's gaps and at its end (the shared
        # CI cores can open short gaps while intake claims the backlog): the rest were skipped
        stats = eventually(lambda: (s := run.module.shadow.stats()) and s["framesSampled"] == 150 and s)
        time.sleep(0.5)
        stats = run.module.shadow.stats()
        assert stats is not None
        assert stats["framesCompared"] <= max(2 * SHADOW_QUEUE, 150 // 5), stats
        assert stats["framesSkipped"] + stats["framesCompared"] == 150, stats
        # when the load is gone, it runs again on spare capacity
        before = stats["framesCompared"]
        trickle(run, 3, "after")
        assert compared(run, before + 3)


def test_promote_candidate_makes_it_active_through_verify_and_swap(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    b = sha(models["B"])
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("b.onnx", models["B"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        assert run.module.commands.promote_candidate()[0] == 404
        evaluating(run, spec("b", models["B"], server.url("b.onnx"), sampleRate=0.5))
        status, body = run.module.commands.promote_candidate()
        assert status == 200 and body["active"]["sha256"] == b and body["evaluation"]["state"] == "ended"
        assert run.module.slot.active.sha256 == b and run.module.shadow.model is None
        reported = run.take_reported()
        assert reported["model"]["ac"] == 200 and "promoted" in reported["model"]["ad"]
        assert reported["candidate"]["value"] is None and reported["candidate"]["ad"] == "promoted"
        assert run.module.commands.models()["candidate"] is None
        assert len(server.asked("b.onnx")) == 1  # from the cache: no second download
        drop(run.dirs["input"], "p.jpg")
        assert eventually(lambda: [r.model.sha256 for r in run.collector.snapshot()] == [b])


def test_null_ends_the_evaluation_and_a_restart_evaluates_it_again(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    with ModelServer(tmp_path / "server") as server, modules() as running:
        server.put("s.onnx", models["SHIFTED"].read_bytes())
        run = start_module(tmp_path, models["A"], server.ca_file, running=running)
        evaluating(run, spec("shifted", models["SHIFTED"], server.url("s.onnx"), sampleRate=1.0, maxMinutes=30))
        run.stop()
        again = start_module(tmp_path, models["A"], None, running=running)  # no server: from the cache
        assert eventually(lambda: again.module.shadow.model is not None)
        assert again.module.commands.models()["candidate"]["sha256"] == sha(models["SHIFTED"])
        again.patch({"candidate": None})
        assert again.ack("candidate")["value"] is None
        assert again.module.shadow.model is None
        ended = [m["body"] for m in again.messages("modelEvaluation") if m["body"]["state"] == "ended"]
        assert ended and ended[-1]["endedBecause"] == "the twin's candidate is null"


def test_max_minutes_ends_the_evaluation(tmp_path: Path) -> None:
    models = build_models(tmp_path / "models")
    settings = read_settings({"MODEL_PATH": str(models["A"]), "STATE_DIR": str(tmp_path), "EXECUTION_PROVIDERS": "cpu"})
    active, candidate = OnnxModel(settings), OnnxModel(settings, path=models["SHIFTED"], identity=("s", "1"))
    sink = ListSink()
    shadow = CandidateShadow(settings, ShadowInbox(), lambda: True, sink, LiveSettings(TwinSettings()))
    with shadow:
        shadow.begin(candidate, {"name": "s", "version": "1", "sha256": candidate.sha256}, active, 1.0, 0.01)
        assert eventually(lambda: shadow.model is None, 10)
    reports = shadow.take_reports()
    assert reports[-1]["state"] == "ended" and reports[-1]["endedBecause"] == "maxMinutes reached"
    assert sink.sent and sink.sent[-1].output == "modelEvaluation"

"""The other tasks through the whole module (`app.Module` on real files, real ONNX Runtime, the real telemetry
publisher writing local mode's telemetry.jsonl): a segmentation model's polygons, areas, annotated frame and mask
PNG; a classifier's result, routing properties and alerts; the twin settings judging both; the twin's `runtime`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_inference.app import Module
from edge_inference.settings import read_settings
from tests.onnx_models import build_channel_classifier, build_model
from tests.test_tasks import DISC_CENTRE, DISC_RADIUS, disc, pixel_iou, segment_outputs, stripes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def start(shares: dict[str, Path], no_thread_leaks: None) -> Iterator[Callable[..., Module]]:
    modules: list[Module] = []

    def _start(model: Path, **env: str) -> Module:
        base = {
            "MODEL_PATH": str(model),
            "INPUT_DIR": str(shares["input"]),
            "OUTPUT_DIR": str(shares["output"]),
            "STATE_DIR": str(shares["state"]),
            "SETTLE_SECONDS": "0.1",
            "HTTP_PORT": "0",
            "METRICS_PORT": "0",
            "LOCAL_TELEMETRY": "true",
            "SHUTDOWN_TIMEOUT_SECONDS": "5",
        }
        module = Module(read_settings({**base, **env}), env={})
        module.start()
        modules.append(module)
        return module

    yield _start
    for module in modules:
        module.shutdown()


def drop(input_dir: Path, name: str, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)  # lossless: the frame's pixels are the ones the test drew
    assert ok
    tmp = input_dir / f".{name}.tmp"
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, input_dir / name)


def wait_for(check: Callable[[], Any], timeout: float = 20) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def messages(output: Path) -> list[dict[str, Any]]:
    path = output / "telemetry.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def result(output: Path, name: str) -> dict[str, Any]:
    path = output / "results" / f"{name}.json"
    return wait_for(lambda: path.exists() and json.loads(path.read_text()))  # type: ignore[no-any-return]


def test_segmentation_model_end_to_end(start, shares, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # given a segmentation model (a disc of radius 100 at (300, 250) in an 800x600 frame) and saveAnnotated on
    meta = {"task": "segment", "names": "{0: 'defect'}", "imgsz": "[160, 160]", "end2end": "False"}
    model = build_model(tmp_path / "seg.onnx", segment_outputs(False), input_hw=(160, 160), metadata=meta)
    module = start(model)
    module.live.update(save_annotated=True)
    runtime = module.commands.runtime_info()
    assert (runtime["task"], runtime["outputLayout"], runtime["classes"]) == ("segment", "yolov8", ["defect"])
    # when a frame arrives
    drop(shares["input"], "part.png", np.full((600, 800, 3), 80, np.uint8))
    body = result(shares["output"], "part.png")
    # then its result has the masks: outlines in original pixels, areas in original pixels
    assert body["schemaVersion"] == "1.1" and body["model"]["task"] == "segment"
    whole = body["detections"][0]
    assert whole["mask"]["areaPx"] == pytest.approx(math.pi * DISC_RADIUS**2, rel=0.04)
    outline = whole["mask"]["polygons"][0]
    assert all(abs(math.dist(p, DISC_CENTRE) - DISC_RADIUS) < 8 for p in outline)
    # the annotated frame, and the masks at full resolution as a PNG (pixel = 1 + index of the detection)
    annotated = shares["output"] / "annotated" / "part.png.jpg"
    png = shares["output"] / "annotated" / "part.png.mask.png"
    wait_for(lambda: annotated.exists() and png.exists())
    labels = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (600, 800) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    assert pixel_iou(labels == 1, disc(600, 800)) > 0.95  # the best detection on top
    drawn = cv2.imread(str(annotated))
    inside, outside = drawn[250, 250].astype(int), drawn[500, 700].astype(int)
    assert abs(int(outside.mean()) - 80) < 4 and np.abs(inside - outside).max() > 20  # tinted, translucent
    # and the telemetry carried the same body, with its routing properties
    sent = wait_for(lambda: [m for m in messages(shares["output"]) if m["output"] == "detections"])
    assert sent[0]["properties"]["labels"] == "defect" and sent[0]["properties"]["detectionCount"] == "2"
    assert sent[0]["body"]["detections"][0]["mask"] == whole["mask"]


def test_classifier_end_to_end_with_routing_alerts_and_twin_settings(start, shares, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # given a classifier (R, G, B mean), alerts on "green", and a frame whose centre half is green
    module = start(build_channel_classifier(tmp_path / "cls.onnx"))
    module.live.update(alert_classes=("green",), save_annotated=True)
    assert module.commands.runtime_info()["task"] == "classify"
    drop(shares["input"], "a.png", stripes())
    body = result(shares["output"], "a.png")
    # then the result is a classification of the whole frame; no detections
    top = body["classification"]
    assert (top["label"], top["classId"]) == ("green", 1) and top["confidence"] == pytest.approx(0.5761, abs=0.01)
    assert top["top5"][0]["label"] == "green" and len(top["top5"]) == 3
    assert body["detections"] == [] and body["count"] == 0
    # routing properties carry the top class and its confidence, and the alert class fired
    sent = wait_for(lambda: len(messages(shares["output"])) >= 2 and messages(shares["output"]))
    by_output = {m["output"]: m for m in sent}
    props = by_output["detections"]["properties"]
    assert (props["labels"], props["detectionCount"], props["hasDetections"]) == ("green", "1", "true")
    assert float(props["maxConfidence"]) == pytest.approx(0.5761, abs=0.01)
    assert by_output["alerts"]["body"]["alert"] == {"classes": ["green"]}
    assert (shares["output"] / "annotated" / "a.png.jpg").exists()
    # when the threshold is raised over the top class's confidence: still classified, but nothing found
    module.live.update(confidence_threshold=0.6)
    drop(shares["input"], "b.png", stripes())
    body = result(shares["output"], "b.png")
    assert body["classification"]["label"] == "green"
    props = wait_for(lambda: [m for m in messages(shares["output"]) if m["body"]["frame"]["path"] == "b.png"])[0]
    props = props["properties"]
    assert (props["labels"], props["detectionCount"]) == ("", "0")
    # and `classes` keeps only the listed classes: blue is then the top class
    module.live.update(confidence_threshold=0.3, classes=("blue",))
    drop(shares["input"], "c.png", stripes())
    assert result(shares["output"], "c.png")["classification"]["label"] == "blue"
    alerts = [m for m in messages(shares["output"]) if m["output"] == "alerts"]
    assert [m["body"]["frame"]["path"] for m in alerts] == ["a.png"]

"""Result files: atomic, grouped durable writes, and a full share that leaves nothing half-written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge_inference.entities import FrameResult, ModelInfo
from edge_inference.errors import OutputFullError
from edge_inference.iot.outbox import Outbox
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.publisher import GroupedSink
from edge_inference.ops.telemetry import OutgoingMessage
from edge_inference.share.results import ResultWriter, write_group_atomic

pytestmark = pytest.mark.timeout(30)


def result(rel: str) -> FrameResult:
    return FrameResult(rel, "id-" + rel, 10, 10, "0" * 64, ModelInfo("m", "1", "CPU"), 0.5, 0.45, (), {}, "now")


def test_a_group_of_results_is_written_in_one_flush(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path)
    writer.write_results([result(f"cam/{i}.jpg") for i in range(20)])
    files = sorted(p.name for p in (tmp_path / "results" / "cam").iterdir())
    assert files == sorted(f"{i}.jpg.json" for i in range(20))
    assert json.loads((tmp_path / "results" / "cam" / "3.jpg.json").read_text())["frame"]["path"] == "cam/3.jpg"


def test_a_full_share_raises_and_leaves_no_temp_or_partial_file(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        items = [(f"r{i}.json", b"x" * 8192) for i in range(20)]  # 160 KB into 64 KB
        with pytest.raises(OutputFullError):
            write_group_atomic(small, items)
        assert list(small.iterdir()) == []  # all or nothing: no temp file, no result
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_grouped_sink_stores_a_group_in_one_outbox_transaction(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", 1000, 3600, MetricsRegistry())
    sink = GroupedSink(outbox)
    with sink.group():
        for i in range(5):
            sink.publish(OutgoingMessage("detections", f"m{i}", {"i": i}))
        assert outbox.depth() == 0  # held until the group ends
    sink.publish(OutgoingMessage("detections", "m0", {"i": 0}))  # same id: ignored
    assert outbox.depth() == 5
    assert [m.message_id for _, m in outbox.peek(10)] == [f"m{i}" for i in range(5)]
    outbox.close()

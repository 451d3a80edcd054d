"""The durable outbox: order, de-duplication, acks, bounds with counted drops, survival of a killed process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge_inference.iot.outbox import Outbox
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.ops.telemetry import OutgoingMessage
from tools.module_process import module_process_env

REPO = Path(__file__).resolve().parents[1]


def msg(i: int, output: str = "detections") -> OutgoingMessage:
    return OutgoingMessage(output, f"m{i:05d}", {"i": i, "text": "défaut"}, {"messageType": "detection"})


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.timeout(20)
def test_publish_peek_ack_in_order_and_ignore_duplicates(tmp_path: Path) -> None:
    metrics = MetricsRegistry()
    box = Outbox(tmp_path / "outbox.sqlite", 100, 3600, metrics)
    for i in range(5):
        box.publish(msg(i))
    box.publish(msg(2))  # the same frame result again: not queued twice
    assert box.depth() == 5
    peeked = box.peek(3)
    assert [m.message_id for _, m in peeked] == ["m00000", "m00001", "m00002"]
    assert peeked[0][1] == msg(0)
    box.ack([seq for seq, _ in peeked[:2]])
    assert [m.message_id for _, m in box.peek(10)] == ["m00002", "m00003", "m00004"]
    assert box.depth() == 3
    assert metrics.outbox_depth._value.get() == 3
    box.ack([])
    box.close()


@pytest.mark.timeout(20)
def test_count_bound_drops_oldest_counted_and_alerted(tmp_path: Path) -> None:
    metrics = MetricsRegistry()
    box = Outbox(tmp_path / "o.sqlite", 3, 3600, metrics)
    for i in range(5):
        box.publish(msg(i))
    assert box.depth() == 3
    assert [m.message_id for _, m in box.peek(10)] == ["m00002", "m00003", "m00004"]
    assert box.dropped() == {"count": 2, "age": 0}  # what the IoT client raises outboxOverflow from
    assert metrics.outbox_dropped.labels(reason="count")._value.get() == 2
    box.close()


@pytest.mark.timeout(20)
def test_age_bound_drops_old_messages(tmp_path: Path) -> None:
    metrics = MetricsRegistry()
    wall = Wall()
    box = Outbox(tmp_path / "o.sqlite", 100, 60, metrics, wall_clock=wall)
    box.publish(msg(1))
    box.publish(msg(2))
    wall.now += 30
    box.publish(msg(3))
    assert box.oldest_age() == pytest.approx(30)
    wall.now += 45  # m1, m2 are 75 s old, m3 45 s
    assert box.expire() == 2
    assert [m.message_id for _, m in box.peek(10)] == ["m00003"]
    assert box.dropped() == {"count": 0, "age": 2}
    assert metrics.outbox_dropped.labels(reason="age")._value.get() == 2
    box.close()


@pytest.mark.timeout(20)
def test_concurrent_publishers_and_a_drainer(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", 10_000, 3600, MetricsRegistry(), synchronous="NORMAL")
    drained: list[str] = []
    done = threading.Event()

    def drain() -> None:
        while not done.is_set() or box.depth():
            batch = box.peek(50)
            drained.extend(m.message_id for _, m in batch)
            box.ack(seq for seq, _ in batch)

    def produce(base: int) -> None:
        for i in range(200):
            box.publish(msg(base + i))

    drainer = threading.Thread(target=drain)
    drainer.start()
    producers = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(4)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    drainer.join(10)
    assert sorted(drained) == sorted(f"m{k * 1000 + i:05d}" for k in range(4) for i in range(200))
    assert box.depth() == 0
    box.close()


@pytest.mark.timeout(60)
def test_published_messages_survive_a_killed_process(tmp_path: Path) -> None:
    # given a process that publishes 50 messages, says so, and is then killed with SIGKILL
    db = tmp_path / "state" / "outbox.sqlite"
    script = textwrap.dedent(
        f"""
        import sys, time
        from edge_inference.ops.telemetry import OutgoingMessage
        from edge_inference.iot.outbox import Outbox
        box = Outbox({str(db)!r}, 1000, 3600)
        for i in range(50):
            box.publish(OutgoingMessage("detections", f"m{{i:05d}}", {{"i": i}}, {{}}))
        print("published", flush=True)
        time.sleep(60)
        """
    )
    env = module_process_env()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "published"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # when a new process opens the same file
    box = Outbox(db, 1000, 3600)
    # then every message is there, in order
    assert box.depth() == 50
    assert [m.body["i"] for _, m in box.peek(100)] == list(range(50))
    box.close()


@pytest.mark.timeout(20)
def test_closed_outbox_refuses(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", 10, 60)
    box.close()
    box.close()
    with pytest.raises(RuntimeError):
        box.publish(msg(1))
    with pytest.raises(ValueError):
        Outbox(tmp_path / "p.sqlite", 0, 60)

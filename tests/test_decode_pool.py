"""The decode pool sizes itself from what the model costs: as many decodes at once as keep the model busy."""

from __future__ import annotations

import threading
import time

import pytest

from edge_inference.pipeline.decode_pool import RESIZE_EVERY, DecodeSlots

pytestmark = pytest.mark.timeout(10)


def slots(workers: int, model_ms: float | None, *, adaptive: bool = True, initial: int = 1) -> DecodeSlots:
    return DecodeSlots(workers, adaptive=adaptive, model_cost_ms=lambda: model_ms, initial=initial)


@pytest.mark.parametrize(
    ("workers", "decode_ms", "model_ms", "wanted"),
    [
        (2, 8.0, 6.0, 2),  # the demo model on 1080p on the CPU: decoding is the limit, it gets both cores
        (2, 8.0, 65.0, 1),  # a YOLOv8n-sized model on the CPU: one decode worker keeps it fed
        (8, 8.0, 1.5, 6),  # a GPU serving 1.5 ms frames: six decodes at once
        (4, 8.0, 0.5, 4),  # never more than the workers there are
    ],
)
def test_the_limit_is_decode_time_over_model_time(workers: int, decode_ms: float, model_ms: float, wanted: int) -> None:
    pool = slots(workers, model_ms)
    for _ in range(RESIZE_EVERY):
        pool.observe(decode_ms)
    assert pool.limit == wanted


def test_no_model_figure_yet_keeps_the_start_and_a_fixed_pool_never_moves() -> None:
    pool = slots(4, None, initial=1)
    for _ in range(3 * RESIZE_EVERY):
        pool.observe(8.0)
    assert pool.limit == 1
    fixed = slots(3, 0.1, adaptive=False)
    for _ in range(3 * RESIZE_EVERY):
        fixed.observe(50.0)
    assert fixed.limit == 3


def test_only_limit_workers_decode_at_once_and_a_raised_limit_lets_the_others_in() -> None:
    pool = slots(3, 65.0)  # starts at 1
    inside = []
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            if pool.acquire(0.05):
                inside.append(threading.get_ident())
                time.sleep(0.05)
                pool.release()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert pool._busy <= 1
    pool.model_cost_ms = lambda: 1.0  # the model got cheap (or the frames dear): every worker decodes
    for _ in range(RESIZE_EVERY):
        pool.observe(8.0)
    assert pool.limit == 3
    inside.clear()
    time.sleep(0.3)
    done.set()
    for t in threads:
        t.join()
    assert len(set(inside)) == 3


@pytest.mark.parametrize(
    ("on_cpu", "model_ms", "yields"),
    [(True, 65.0, True), (True, 6.0, False), (False, 65.0, False)],  # only a slower model on the CPU
)
def test_decoding_yields_to_a_slower_model_on_the_cpu_only(on_cpu: bool, model_ms: float, yields: bool) -> None:
    pool = DecodeSlots(2, adaptive=True, model_cost_ms=lambda: model_ms, initial=1, model_on_cpu=on_cpu)
    for _ in range(RESIZE_EVERY):
        pool.observe(8.0)
    assert pool.yield_to_model is yields

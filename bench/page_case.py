"""The live-page case of `make bench`: does an open page cost the module throughput?

The same module (the demo model, 1080p frames, a saturating burst) runs RUNS_EACH times without and as often
with the live page open in headless Chromium (tools/browser.py), alternately; the page polls as it does for an
operator (status every 2 s, new frames every 1 s, a thumbnail per new frame, drawn over it). The module fps
compared is the median of each kind's runs, so a drift of the shared machine's load hits both alike. The goal:
with the page open, at least 95 % of the fps without it.

An operator's browser runs on their own PC, not on the edge box: what is measured is the module serving the page
(its data, thumbnails, full frames), not Chromium's own rendering. So the CPUs are split in every run, with and
without the page: the module (and the bench's dropper) on the first half, the browser on the second half.

    bench/run_bench.py --models none --page    # this case alone (a full run always ends with it)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.run_bench import SIZES, ModelCase, ModuleProcess, load_average, make_frames, run_module

PAGE_KEY = "bench-page-key-0123456789abcdef"
GOAL_RATIO = 0.95
RUNS_EACH = 3


def split_cpus() -> tuple[set[int], set[int]]:
    """(the module's CPUs, the browser's): the first half and the rest (the same set on a 1-CPU machine)."""
    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    return set(cpus[:half]), set(cpus[half:]) or set(cpus)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PageViewer:
    """The live page open in headless Chromium while the module runs; counts what the page drew."""

    def __init__(self, port: int, cpus: set[int]) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.cpus = cpus
        self.drawn = 0
        self.status = 0

    @contextlib.contextmanager
    def open(self, _module: ModuleProcess) -> Iterator[None]:
        from playwright.sync_api import sync_playwright

        from tools.browser import launch_chromium

        with contextlib.ExitStack() as stack:
            mine = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.cpus)  # Playwright's driver and Chromium inherit this thread's CPUs
            try:
                playwright = stack.enter_context(sync_playwright())
                browser = launch_chromium(playwright)
            finally:
                os.sched_setaffinity(0, mine)
            stack.callback(browser.close)
            context = browser.new_context(
                http_credentials={"username": "bench", "password": PAGE_KEY}, viewport={"width": 1440, "height": 1000}
            )
            page = context.new_page()
            response = page.goto(self.url)
            self.status = response.status if response is not None else 0
            page.locator("#state").filter(has_text="running").wait_for(timeout=30_000)
            yield
            page.wait_for_timeout(1500)  # the last poll
            self.drawn = page.locator('.frame canvas:not([data-drawn=""])').count()


def run_page_case(model: ModelCase, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    width, height = SIZES["1080p"]
    frames = make_frames(width, height, 12)
    burst = args.frames or (60 if args.quick else 400)
    module_cpus, browser_cpus = split_cpus()
    print(f"== live page: {model.key} 1080p, burst of {burst}, {RUNS_EACH} runs without and with the page", flush=True)
    case: dict[str, Any] = {
        "model": model.key,
        "size": "1080p",
        "frames": burst,
        "moduleCpus": sorted(module_cpus),
        "browserCpus": sorted(browser_cpus),
        "loadStart": load_average(),
    }
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for i in range(RUNS_EACH * 2):
        kind = "without" if i % 2 == 0 else "with"
        port = free_port()
        env = {"HTTP_PORT": str(port), "HTTP_HOST": "127.0.0.1", "HTTP_API_KEY": PAGE_KEY}
        viewer = PageViewer(port, browser_cpus) if kind == "with" else None
        mine = os.sched_getaffinity(0)
        os.sched_setaffinity(0, module_cpus)  # the module process inherits it
        try:
            out = run_module(
                model,
                frames,
                "1080p",
                args.providers,
                workdir / f"page-{i}-{kind}",
                burst,
                0,
                None,
                600,
                env,
                viewer.open if viewer is not None else None,
            )
        finally:
            os.sched_setaffinity(0, mine)
        run = {"fps": out["saturated"]["fps"], "latencyP50Ms": out["saturated"]["latencyMs"]["p50"]}
        if viewer is not None:
            run.update(pageStatus=viewer.status, framesDrawn=viewer.drawn)
        runs[kind].append(run)
        print(f"   {kind} the page: {run['fps']} fps", flush=True)
    without = statistics.median(r["fps"] for r in runs["without"])
    with_page = statistics.median(r["fps"] for r in runs["with"])
    ratio = round(with_page / without, 3) if without else None
    case.update(
        runs=runs,
        fpsWithout=without,
        fpsWithPage=with_page,
        ratio=ratio,
        goal={"ratioAtLeast": GOAL_RATIO, "met": ratio is not None and ratio >= GOAL_RATIO},
        loadEnd=load_average(),
    )
    print(f"   page open: {with_page} fps against {without} fps without ({ratio} x)", flush=True)
    return case

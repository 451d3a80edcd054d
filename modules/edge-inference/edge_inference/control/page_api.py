"""The live operator page on HTTP_PORT: `GET /` and its files (control/page/), and the data it polls.

    GET /                          the page (plain HTML, CSS and JS from control/page/; no external asset)
    GET /page/<file>               page.js, page.css
    GET /api/status                model, provider, task, model rollout state, live twin settings, alarms,
                                   shares, paused, queues,
                                   outbox depth, frames/s, drop-to-result latency, the last hour per minute
    GET /api/frames                the newest frames (ops/recent_frames.py) with their results; `after=<id>`
                                   only newer ones, `profile=<name>`, `only=detections|failed`
    GET /api/frames/<id>           that frame's result (the result schema)
    GET /api/frames/<id>/thumb.jpg its thumbnail; /full.jpg its full picture while the ring still holds it

Every route here needs HTTP_API_KEY when it is set (control/http_base.py). The page draws boxes, masks,
keypoints, rotated boxes and labels itself from the result over the thumbnail, so the module encodes only
plain pictures, on a small pool of its own (PAGE_THREADS), never on the event loop or a pipeline thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tornado.ioloop import IOLoop

from edge_inference.control.http_base import ApiHandler
from edge_inference.ops.recent_frames import RecentFrames
from edge_inference.pipeline.gate import INPUT_UNAVAILABLE, OUTPUT_ERROR, OUTPUT_FULL, OUTPUT_LOW

PAGE_THREADS = 2
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "page.js": "text/javascript", "page.css": "text/css"}
# The page loads nothing from anywhere else and cannot be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SHARE_REASONS = {
    "input": {INPUT_UNAVAILABLE: "unavailable"},
    "output": {OUTPUT_FULL: "full", OUTPUT_ERROR: "unavailable", OUTPUT_LOW: "low on space"},
}


def page_file(name: str) -> bytes:
    """One of the page's files, as shipped in the package."""
    return (resources.files("edge_inference.control") / "page" / name).read_bytes()


@dataclass
class PageSources:
    """What the page reads: the module's status and runtime (control/commands.py), its alarms, the recent frames
    and the outbox depth (None outside IoT Edge)."""

    status: Callable[[], dict[str, Any]]
    runtime: Callable[[], dict[str, Any]]
    alarms: Callable[[], dict[str, dict[str, Any]]]
    recent: RecentFrames
    outbox_depth: Callable[[], int | None]
    input_dir: str
    output_dir: str

    def live_status(self) -> dict[str, Any]:
        status = self.status()
        runtime = self.runtime()
        blocked: dict[str, str] = status.get("intakeBlocked") or {}
        shares = {}
        for share, folder in (("input", self.input_dir), ("output", self.output_dir)):
            states = [(state, blocked[reason]) for reason, state in _SHARE_REASONS[share].items() if reason in blocked]
            shares[share] = {
                "path": folder,
                "state": states[0][0] if states else "ok",
                "why": states[0][1] if states else "",
            }
        model = status.get("model") or {}
        return {
            "ready": status.get("ready"),
            "paused": status.get("paused"),
            "intakeBlocked": blocked,
            "model": {
                **model,
                "provider": status.get("provider"),
                "task": runtime.get("task"),
                "moduleVersion": runtime.get("moduleVersion"),
            },
            "rollout": status.get("rollout"),
            "settings": status.get("settings"),
            "alarms": self.alarms(),
            "shares": shares,
            "queues": status.get("queues"),
            "inFlight": status.get("inFlight"),
            "outboxDepth": self.outbox_depth(),
            "frames": status.get("frames"),
            "lastResultAt": status.get("lastResultAt"),
            "uptimeSeconds": status.get("uptimeSeconds"),
            "figures": self.recent.snapshot(),
        }


class PageApp:
    """The page's sources and the pool its answers are made on."""

    def __init__(self, sources: PageSources) -> None:
        self.sources = sources
        self.pool = ThreadPoolExecutor(PAGE_THREADS, thread_name_prefix="http-page")

    def routes(self, api: object) -> list[tuple[str, type[ApiHandler], dict[str, Any]]]:
        args = {"api": api, "page": self}
        return [
            (r"/", _Page, args),
            (r"/page/([a-z.]+)", _PageFile, args),
            (r"/api/status", _Status, args),
            (r"/api/frames", _Frames, args),
            (r"/api/frames/([0-9]{1,12})", _FrameResult, args),
            (r"/api/frames/([0-9]{1,12})/(thumb|full)\.jpg", _FramePicture, args),
        ]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class _PageHandler(ApiHandler):
    def initialize(self, api: Any, page: PageApp) -> None:  # type: ignore[override]
        super().initialize(api)
        self.page = page

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("Referrer-Policy", "no-referrer")

    async def off_loop(self, work: Callable[[], Any]) -> Any:
        return await IOLoop.current().run_in_executor(self.page.pool, work)


class _Page(_PageHandler):
    def get(self) -> None:
        self.send(PAGE_FILES["index.html"], page_file("index.html"))


class _PageFile(_PageHandler):
    def get(self, name: str) -> None:
        if name not in PAGE_FILES or name == "index.html":
            self.error(404, "not_found", "no such page file")
            return
        self.send(PAGE_FILES[name], page_file(name))


class _Status(_PageHandler):
    async def get(self) -> None:
        self.json(200, await self.off_loop(self.page.sources.live_status))


class _Frames(_PageHandler):
    async def get(self) -> None:
        after_text = self.get_query_argument("after", "0") or "0"
        only = self.get_query_argument("only", None) or None
        profile = self.get_query_argument("profile", None)
        if not after_text.isdigit() or len(after_text) > 12:
            self.error(400, "invalid_parameter", "after: expected a frame id (a whole number)")
            return
        if only not in (None, "detections", "failed"):
            self.error(400, "invalid_parameter", "only: expected detections or failed")
            return
        recent = self.page.sources.recent
        frames = recent.frames(int(after_text), profile, only)
        self.json(200, {"latest": recent.latest, "capacity": recent.capacity, "frames": frames})


class _FrameResult(_PageHandler):
    def get(self, seq: str) -> None:
        result = self.page.sources.recent.result(int(seq))
        if result is None:
            self.error(404, "not_found", "that frame is no longer among the recent frames")
            return
        self.json(200, result)


class _FramePicture(_PageHandler):
    async def get(self, seq: str, kind: str) -> None:
        recent = self.page.sources.recent
        picture = recent.thumbnail if kind == "thumb" else recent.full_image
        jpeg = await self.off_loop(lambda: picture(int(seq)))
        if jpeg is None:
            message = "no picture of that frame is held (gone from the ring, or the frame was never decoded)"
            self.error(404, "not_found", message)
            return
        self.send("image/jpeg", jpeg)

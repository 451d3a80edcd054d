"""The fault suite's tools: the real module as a subprocess, shares on real mounts, frames dropped like a camera,
and the end-of-run audit (one result, one delivered message id, nothing failed, no temp files, per frame).

Everything here drives `python -m edge_inference` exactly as IoT Edge does (environment variables, SIGTERM,
SIGKILL) against temp folders, tmpfs/bind mounts (the tests run as root in the sandbox) and the edgeHub rig.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tools.module_process import fast_module_env

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "modules" / "edge-inference"
TEMP_SUFFIXES = (".tmp", ".part")


# -- model and frames -------------------------------------------------------------------------------------------
def build_model(path: Path) -> Path:
    """The tiny constant model of tests/test_iot_e2e.py: scratch 0.9 and dent 0.6 in every frame."""
    from tests.onnx_models import build_constant_model, yolov8_output

    return build_constant_model(
        path,
        yolov8_output([(16, 16, 10, 10), (48, 48, 10, 10)], [[0.9, 0.0], [0.0, 0.6]]),
        names="{0: 'scratch', 1: 'dent'}",
    )


def jpeg_blobs(count: int = 8, seed: int = 0, size: tuple[int, int] = (64, 48)) -> list[bytes]:
    """A few small, different, valid JPEGs (dropped frames cycle through them)."""
    import cv2

    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(count):
        image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", image)
        assert ok
        blobs.append(buf.tobytes())
    return blobs


def frame_names(count: int, prefix: str = "line1/cam") -> list[str]:
    """`count` relative paths spread over a few folders, as several cameras would write them."""
    return [f"{prefix}{i % 4}/{i:05d}.jpg" for i in range(count)]


class FrameDropper:
    """A camera: writes each frame under a hidden staging folder of the share, then renames it into place."""

    def __init__(self, input_dir: Path, blobs: list[bytes] | None = None) -> None:
        self.input_dir = input_dir
        self.blobs = blobs or jpeg_blobs()
        self.dropped: list[str] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None

    def drop(self, rel: str, data: bytes | None = None) -> None:
        staging = self.input_dir / ".drop"
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / f"{len(self.dropped)}.{os.getpid()}.part"
        tmp.write_bytes(data if data is not None else self.blobs[len(self.dropped) % len(self.blobs)])
        target = self.input_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        self.dropped.append(rel)

    def drop_all(self, rels: Iterable[str]) -> None:
        for rel in rels:
            self.drop(rel)

    def start(self, rels: list[str], per_second: float, *, retry_while_away: bool = False) -> None:
        """Drop `rels` at a steady rate on a thread (`join()` waits for the last). With `retry_while_away` a
        write that fails (the share is gone) is retried every half second, as a line PC that buffers frames."""

        def run() -> None:
            try:
                began = time.monotonic()
                for i, rel in enumerate(rels):
                    if self._stop.is_set():
                        return
                    delay = began + i / per_second - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    while True:
                        try:
                            self.drop(rel)
                            break
                        except OSError:
                            if not retry_while_away or self._stop.wait(0.5):
                                raise
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, name="frame-dropper", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(BaseException):
            self.join(5)


# -- shares on real mounts ----------------------------------------------------------------------------------------
def run_cmd(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def can_mount() -> bool:
    return os.geteuid() == 0


@dataclass
class Shares:
    """INPUT_DIR / OUTPUT_DIR / STATE_DIR for one test, plus the mounts the test made (undone at the end)."""

    root: Path
    input: Path
    output: Path
    state: Path
    mounts: list[Path] = field(default_factory=list)
    backing: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def make(cls, root: Path) -> Shares:
        s = cls(root, root / "input", root / "output", root / "state")
        for d in (s.input, s.output, s.state):
            d.mkdir(parents=True, exist_ok=True)
        return s

    def mount_tmpfs(self, path: Path, size: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        run_cmd("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
        self.mounts.append(path)

    def detachable(self, name: str) -> Path:
        """Make share `name` ("input"/"output") a bind mount that `detach`/`attach` can take away and give back.

        The mount point lives on a read-only tmpfs, so while the share is away the path exists but every write
        fails (EROFS), as on a dead SMB/NFS mount - nothing can land, unseen, under the mount point."""
        backing = self.root / f"{name}-backing"
        backing.mkdir(exist_ok=True)
        base = self.root / f"{name}-mnt"
        base.mkdir(exist_ok=True)
        run_cmd("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(base))
        self.mounts.append(base)
        point = base / name
        point.mkdir()
        run_cmd("mount", "-o", "remount,ro", str(base))
        self.backing[name] = backing
        setattr(self, name, point)
        self.attach(name)
        return point

    def attach(self, name: str) -> None:
        point: Path = getattr(self, name)
        run_cmd("mount", "--bind", str(self.backing[name]), str(point))
        self.mounts.append(point)

    def detach(self, name: str) -> None:
        point: Path = getattr(self, name)
        run_cmd("umount", "-l", str(point))
        self.mounts.remove(point)

    def unmount_all(self) -> None:
        for point in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)
        self.mounts.clear()


# -- the module as a subprocess -----------------------------------------------------------------------------------
def module_env(
    model: Path, shares: Shares, rig: Any = None, replica: str = "fault", **overrides: str | int | float
) -> dict[str, str]:
    return fast_module_env(
        rig.env() if rig is not None else {},
        model,
        {"input": shares.input, "output": shares.output, "state": shares.state},
        replica,
        RESCAN_INTERVAL_SECONDS="1",
        MIN_FREE_MB="1",
        SHUTDOWN_TIMEOUT_SECONDS="15",
        LOCAL_TELEMETRY="false",
    ) | {k: str(v) for k, v in overrides.items()}


class ModuleProcess:
    """`python -m edge_inference` with a log file that survives restarts (each start appends)."""

    started: ClassVar[list[ModuleProcess]] = []  # every one started in this test process: `reap_all` ends them

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self.starts = 0

    def start(self) -> ModuleProcess:
        assert self.proc is None or self.proc.poll() is not None
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_inference"],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(REPO),
            )
        self.starts += 1
        if self not in ModuleProcess.started:
            ModuleProcess.started.append(self)
        return self

    @classmethod
    def reap_all(cls) -> None:
        """Kill whatever a test left running (a failed assertion skips its own terminate)."""
        while cls.started:
            module = cls.started.pop()
            if module.alive:
                module.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def this_run_log(self) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(self._offset)
            return fh.read().decode(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while " ready (" not in self.this_run_log():
            assert self.alive, f"module exited {self.proc and self.proc.returncode}:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"module not ready in {timeout}s:\n{self.log_tail()}"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code (kills and fails on a hang)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"module did not stop within {timeout}s of SIGTERM:\n{self.log_tail()}") from None

    def close(self) -> None:
        if self.alive:
            with contextlib.suppress(AssertionError):
                self.terminate(30)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail()}")
        time.sleep(0.1)


def random_kills(
    module: ModuleProcess, kills: int, rng: random.Random, between: tuple[float, float] = (0.5, 4.0)
) -> list[float]:
    """Start, let it run a random while (start-up included), SIGKILL; `kills` times. Returns the run lengths."""
    runs = []
    for _ in range(kills):
        module.start()
        run_for = rng.uniform(*between)
        time.sleep(run_for)
        assert module.alive, f"module died by itself:\n{module.log_tail()}"
        module.kill()
        runs.append(run_for)
    return runs


# -- the audit ------------------------------------------------------------------------------------------------------
def files_under(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def result_paths(output: Path) -> list[str]:
    return sorted(p[: -len(".json")] for p in files_under(output / "results") if p.endswith(".json"))


def temp_files(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for rel in files_under(root):
            name = rel.rsplit("/", 1)[-1]
            if name.startswith(".") and name.endswith(TEMP_SUFFIXES) and "/.drop/" not in f"/{rel}":
                found.append(f"{root}/{rel}")
    return found


def delivered_ids(rig: Any, output: str = "detections") -> dict[str, set[str]]:
    """frame path -> distinct message ids that reached the rig on `output`."""
    ids: dict[str, set[str]] = {}
    for message in rig.messages(output):
        path = message.json()["frame"]["path"]
        ids.setdefault(path, set()).add(str(message.message_id))
    return ids


@dataclass
class Audit:
    expected: list[str]
    results: list[str]
    processed: list[str]
    failed: list[str]
    left_in_input: list[str]
    claimed: list[str]
    temps: list[str]
    messages: dict[str, set[str]] | None
    bad_results: list[str]

    def problems(self) -> list[str]:
        want = set(self.expected)
        out = []
        if set(self.results) != want:
            out.append(
                f"results: missing {sorted(want - set(self.results))[:10]}, extra {sorted(set(self.results) - want)[:10]}"
            )
        if set(self.processed) != want:
            out.append(f"processed/: missing {sorted(want - set(self.processed))[:10]}")
        if self.failed:
            out.append(f"failed/: {self.failed[:10]}")
        if self.left_in_input or self.claimed:
            out.append(f"left on the input share: {(self.left_in_input + self.claimed)[:10]}")
        if self.temps:
            out.append(f"temp files: {self.temps[:10]}")
        if self.bad_results:
            out.append(f"results not ok: {self.bad_results[:10]}")
        if self.messages is not None:
            missing = sorted(want - set(self.messages))
            multi = sorted(p for p, ids in self.messages.items() if len(ids) != 1)
            if missing:
                out.append(f"no message delivered for {len(missing)} frames: {missing[:10]}")
            if multi:
                out.append(f"frames with more than one message id: {multi[:10]}")
        return out

    def summary(self) -> dict[str, int]:
        return {
            "frames": len(self.expected),
            "results": len(self.results),
            "processed": len(self.processed),
            "failed": len(self.failed),
            "messageIds": sum(len(v) for v in (self.messages or {}).values()),
        }


def audit(shares: Shares, expected: list[str], rig: Any = None) -> Audit:
    results = result_paths(shares.output)
    bad = []
    for rel in results:
        body = json.loads((shares.output / "results" / f"{rel}.json").read_bytes())
        if "error" in body or body.get("count") != 2:
            bad.append(rel)
    input_files = [p for p in files_under(shares.input) if not p.startswith((".edge-inference/", ".drop/"))]
    claims = shares.input / ".edge-inference" / "claims"
    claimed = [p for p in files_under(claims) if not p.endswith(".heartbeat")]
    return Audit(
        expected=sorted(expected),
        results=results,
        processed=files_under(shares.output / "processed"),
        failed=files_under(shares.output / "failed"),
        left_in_input=input_files,
        claimed=claimed,
        temps=temp_files(shares.output, shares.input),
        messages=delivered_ids(rig) if rig is not None else None,
        bad_results=bad,
    )


def wait_all_done(shares: Shares, expected: list[str], rig: Any, module: ModuleProcess, timeout: float) -> Audit:
    """Until every expected frame has its result, its archived original and (with a rig) a delivered id."""
    want = set(expected)
    state: dict[str, Audit] = {}

    def done() -> bool:
        results = set(result_paths(shares.output))
        if not want <= results:
            return False
        if rig is not None and not want <= set(delivered_ids(rig)):
            return False
        state["a"] = audit(shares, expected, rig)
        return not state["a"].problems()

    def detail() -> str:
        a = audit(shares, expected, rig)
        return f"{a.summary()} {a.problems()}\n{module.log_tail()}"

    wait_until(done, timeout, f"{len(expected)} frames done", detail)
    return state["a"]

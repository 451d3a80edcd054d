"""`make simulate`: run the module against the local edgeHub rig (real mosquitto over TLS, hub emulator).

Starts the rig on 127.0.0.1, runs `python -m edge_inference` with the rig's edgeHub variables and folders under
data/simulate/, drops demo frames with tools/drop_frames.py (when present), prints every message the module sends and
every reported-properties change, pushes one desired patch after a few frames (`--patch`, from `make simulate
PATCH='{"saveAnnotated": true}'`; default `{"confidenceThreshold": 0.7}`), invokes `getStatus`, and stops on Ctrl-C,
SIGTERM or SIGHUP (tools/child_processes.py: the module, the dropper, mosquitto and the hub emulator all stop with
it) or after --seconds. Also `python -m tools.edgehub_rig`.

Exit codes: 0 when stopped, the module's code when it stopped by itself (2: a bad setting or a port in use, which
the module names), 2 when the rig's MQTT port is taken or `--patch` is not a JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "modules" / "edge-inference", REPO):  # run as a script without PYTHONPATH
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tools.child_processes import ChildProcesses, Stopped, stop_on_signals  # noqa: E402
from tools.edgehub_rig import MQTTS_PORT, BrokerError, CapturedMessage, EdgeHubRig  # noqa: E402
from tools.module_process import module_process_env  # noqa: E402

DATA_DIR = REPO / "data" / "simulate"
DESIRED_PATCH: dict[str, Any] = {"confidenceThreshold": 0.7}
EXIT_USAGE = 2
MODULE_GRACE_SECONDS = 30.0  # the module drains within SHUTDOWN_TIMEOUT_SECONDS (20) on SIGTERM


def desired_patch(text: str) -> dict[str, Any]:
    """`--patch`: one JSON object of desired properties (argparse turns a ValueError into a usage error)."""
    try:
        patch = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(patch, dict):
        raise argparse.ArgumentTypeError(f"expected one JSON object of desired properties, got {text!r}")
    return patch


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="simulate", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: run until Ctrl-C)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address of the rig (127.0.0.1..127.0.0.20)")
    p.add_argument("--frames", type=int, default=10, help="demo frames to drop")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between dropped frames")
    p.add_argument(
        "--patch",
        type=desired_patch,
        default=DESIRED_PATCH,
        help=f"the desired patch to push (JSON object; default {json.dumps(DESIRED_PATCH)})",
    )
    p.add_argument("--patch-after", type=int, default=3, help="push the desired patch after this many messages")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR, help="input/, output/, state/ live here")
    return p.parse_args(argv)


def _say(kind: str, text: str) -> None:
    print(f"[simulate] {time.strftime('%H:%M:%S')} {kind:<9} {text}", flush=True)


def summarize_body(message: CapturedMessage, limit: int = 160) -> str:
    """A one-line summary of a telemetry body: the result schema's key facts, else the first characters."""
    try:
        doc = message.json()
    except (ValueError, UnicodeDecodeError):
        text = message.text()
        return text[:limit] + ("..." if len(text) > limit else "")
    if isinstance(doc, dict):
        parts: list[str] = []
        frame = doc.get("frame")
        if isinstance(frame, dict) and "path" in frame:
            parts.append(f"frame={frame['path']}")
        if "count" in doc:
            parts.append(f"count={doc['count']}")
        detections = doc.get("detections")
        if isinstance(detections, list) and detections:
            labels = [f"{d.get('label')}:{d.get('confidence', 0):.2f}" for d in detections[:5] if isinstance(d, dict)]
            parts.append("detections=[" + ", ".join(labels) + (", ...]" if len(detections) > 5 else "]"))
        thresholds = doc.get("thresholds")
        if isinstance(thresholds, dict) and "confidence" in thresholds:
            parts.append(f"confidence>={thresholds['confidence']}")
        if "error" in doc:
            parts.append(f"error={doc['error']}")
        if parts:
            return " ".join(parts)
    text = json.dumps(doc, separators=(",", ":"))
    return text[:limit] + ("..." if len(text) > limit else "")


def _module_env(rig: EdgeHubRig, data_dir: Path) -> dict[str, str]:
    folders = {}
    for name in ("input", "output", "state"):
        (data_dir / name).mkdir(parents=True, exist_ok=True)
        folders[f"{name.upper()}_DIR"] = str(data_dir / name)
    return module_process_env(**rig.env(), **folders, PYTHONUNBUFFERED="1")


def _start_dropper(
    children: ChildProcesses, args: argparse.Namespace, input_dir: Path
) -> subprocess.Popen[bytes] | None:
    script = REPO / "tools" / "drop_frames.py"
    if not script.exists():
        _say("frames", f"{script.relative_to(REPO)} not found; drop frames into {input_dir} yourself")
        return None
    cmd = [sys.executable, str(script), "--to", str(input_dir), "--count", str(args.frames)]
    cmd += ["--interval", str(args.interval)]
    _say("frames", f"dropping {args.frames} demo frames into {input_dir}")
    return children.start("drop_frames", cmd, cwd=REPO)


class _Reporter:
    """Prints what is new since the last call: captured messages and reported patches."""

    def __init__(self, rig: EdgeHubRig) -> None:
        self.rig = rig
        self.seen_messages = 0
        self.seen_patches = 0

    def poll(self) -> None:
        messages = self.rig.messages()
        for m in messages[self.seen_messages :]:
            props = ", ".join(f"{k}={v}" for k, v in sorted(m.properties.items()))
            _say("message", f"output={m.output or '(upstream)'} id={m.message_id} props={{{props}}}")
            _say("", f"  body: {summarize_body(m)}")
        self.seen_messages = len(messages)
        patches = self.rig.reported_patches()
        for patch in patches[self.seen_patches :]:
            text = json.dumps(patch, separators=(",", ":"), default=str)
            _say("reported", text if len(text) <= 400 else text[:400] + "...")
        self.seen_patches = len(patches)


def _run(args: argparse.Namespace, rig: EdgeHubRig, children: ChildProcesses) -> int:
    env = _module_env(rig, args.data_dir)
    _say("rig", f"edgeHub rig up on {rig.host}:{MQTTS_PORT} in {rig.start_seconds or 0:.2f}s; starting the module")
    module = children.start(
        "the module", [sys.executable, "-m", "edge_inference"], grace=MODULE_GRACE_SECONDS, cwd=REPO, env=env
    )
    reporter = _Reporter(rig)
    started = time.monotonic()
    deadline = None if args.seconds is None else started + args.seconds
    connected_at: float | None = None
    patched_at: float | None = None
    status_asked = False
    early_exit: int | None = None
    try:
        while deadline is None or time.monotonic() < deadline:
            if module.poll() is not None:
                early_exit = module.returncode
                _say("module", f"exited by itself with code {early_exit}")
                break
            if connected_at is None and rig.connected_clients() > 0:
                connected_at = time.monotonic()
                _say("module", f"connected to edgeHub after {connected_at - started:.1f}s")
                _start_dropper(children, args, args.data_dir / "input")
            reporter.poll()
            if connected_at is not None and patched_at is None:
                enough = len(rig.messages()) >= args.patch_after
                if enough or time.monotonic() - connected_at > 20:
                    version = rig.set_desired(args.patch)
                    patched_at = time.monotonic()
                    _say("desired", f"pushed {json.dumps(args.patch)} as $version {version}")
            if patched_at is not None and not status_asked and time.monotonic() - patched_at > 2:
                status_asked = True
                try:
                    status, payload = rig.invoke_method("getStatus", {}, timeout=10)
                    text = json.dumps(payload, default=str)
                    _say("method", f"getStatus -> {status} {text[:600]}")
                except TimeoutError as e:
                    _say("method", f"getStatus: {e}")
            time.sleep(0.2)
    except Stopped as stop:
        _say("stop", f"{stop}: stopping the dropper, the module and the rig")
    children.stop_all()  # the dropper, then the module (it drains what it took)
    reporter.poll()
    code = module.returncode
    _say("stop", f"module exit code {code}; {len(rig.messages())} message(s) captured; results in {args.data_dir}")
    return early_exit or 0


def main(argv: list[str] | None = None) -> int:
    stop_on_signals()  # from here on SIGINT, SIGTERM and SIGHUP unwind through every `with` below
    args = _parse(argv)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="edgehub-rig-") as tmp,
            EdgeHubRig(Path(tmp), host=args.host) as rig,
            ChildProcesses() as children,
        ):
            return _run(args, rig, children)
    except BrokerError as exc:
        if "already in use" not in str(exc):
            raise
        _say(
            "rig",
            f"port {MQTTS_PORT} on {args.host} (the edgeHub rig's MQTT port; the IoT SDK always uses {MQTTS_PORT}) is"
            " already in use: another make simulate or MQTT broker is running there; stop it, or run the rig on"
            " another loopback address: make simulate SIMULATE_ARGS='--host 127.0.0.2'",
        )
        return EXIT_USAGE
    except Stopped:
        return 0


if __name__ == "__main__":
    sys.exit(main())

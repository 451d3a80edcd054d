"""`make simulate-rollout`: a model rollout and a rollback against the local edgeHub rig, step by step.

Starts the rig (real mosquitto over TLS, hub emulator) and a loopback HTTPS model server with its own test CA
(tools/model_server.py; the module trusts it through MODEL_CA_FILE), runs `python -m edge_inference` on the demo
model with folders under data/simulate-rollout/, and drops demo frames all along. Then, as an operator would:

    1. sets the twin's desired `model` to the demo model re-versioned as 1.1.0-sim (a new file, a new sha256),
       served with a SAS-like query;
    2. waits for `model` to be acknowledged with ac 200 and shows the messages that name the new model;
    3. calls `getModels`, then `rollbackModel`, and shows the messages that name the demo model again.

Every reported-property change and every message is printed as it comes. Exit 0 when both the rollout and the
rollback were seen, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "modules" / "edge-inference", REPO):  # run as a script without PYTHONPATH
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tools.edgehub_rig import EdgeHubRig  # noqa: E402
from tools.model_server import ModelServer  # noqa: E402
from tools.module_process import module_process_env  # noqa: E402
from tools.simulate import summarize_body  # noqa: E402

DATA_DIR = REPO / "data" / "simulate-rollout"
DEMO_MODEL = REPO / "modules" / "edge-inference" / "models" / "demo-defects.onnx"
NEW_VERSION = "1.1.0-sim"


def say(kind: str, text: str) -> None:
    print(f"[rollout] {time.strftime('%H:%M:%S')} {kind:<9} {text}", flush=True)


def reversioned_demo_model(folder: Path) -> Path:
    """The demo model with its metadata version changed: the same weights in a new file (another sha256)."""
    import onnx

    model = onnx.load(str(DEMO_MODEL))
    for entry in model.metadata_props:
        if entry.key == "version":
            entry.value = NEW_VERSION
    path = folder / f"demo-defects-{NEW_VERSION}.onnx"
    onnx.save(model, str(path))
    return path


class Printer:
    """Prints what is new: captured messages (one line each) and reported patches."""

    def __init__(self, rig: EdgeHubRig) -> None:
        self.rig = rig
        self.messages = 0
        self.patches = 0

    def poll(self) -> None:
        messages = self.rig.messages()
        for m in messages[self.messages :]:
            model = (m.json() or {}).get("model") if m.output == "detections" else None
            named = f" model={model['name']} {model['version']} {model['sha256'][:12]}" if model else ""
            say("message", f"{m.output}{named} {summarize_body(m, 120)}")
        self.messages = len(messages)
        patches = self.rig.reported_patches()
        for patch in patches[self.patches :]:
            for key in ("model", "candidate"):
                if key in patch:
                    say("reported", f"{key}: {json.dumps(patch[key], default=str)[:300]}")
            rollout = ((patch.get("runtime") or {}).get("model") or {}).get("rollout")
            if rollout:
                shown = {k: v for k, v in rollout.items() if v is not None and k != "since"}
                say("reported", f"runtime.model.rollout: {json.dumps(shown, default=str)[:300]}")
        self.patches = len(patches)


def wait(what: str, check: Callable[[], bool], printer: Printer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        printer.poll()
        if check():
            return True
        time.sleep(0.2)
    say("timeout", f"{what}: not seen within {timeout:.0f} s")
    return False


def run(args: argparse.Namespace, rig: EdgeHubRig, server: ModelServer, workdir: Path) -> int:
    new_model = reversioned_demo_model(workdir)
    server.put(new_model.name, new_model.read_bytes())
    new_sha = hashlib.sha256(new_model.read_bytes()).hexdigest()
    folders = {}
    for name in ("input", "output", "state"):
        (args.data_dir / name).mkdir(parents=True, exist_ok=True)
        folders[f"{name.upper()}_DIR"] = str(args.data_dir / name)
    env = module_process_env(**rig.env(), **folders, MODEL_CA_FILE=str(server.ca_file), PYTHONUNBUFFERED="1")
    log = open(args.data_dir / "module.log", "wb")  # noqa: SIM115 - open for the module's whole life
    module = subprocess.Popen([sys.executable, "-m", "edge_inference"], cwd=REPO, env=env, stdout=log, stderr=log)
    drop = [sys.executable, str(REPO / "tools" / "drop_frames.py"), "--to", str(args.data_dir / "input")]
    dropper = subprocess.Popen(
        [*drop, "--count", "1000", "--interval", str(args.interval), "--delay", "3"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    printer = Printer(rig)
    seen = {"rollout": False, "rollback": False}
    try:
        say("module", f"started on the demo model; its log: {args.data_dir / 'module.log'}")
        if not wait("the first messages", lambda: len(rig.messages("detections")) >= 3, printer, 90):
            return 1
        value = {
            "name": "demo-defects",
            "version": NEW_VERSION,
            "url": server.url(new_model.name),
            "sha256": new_sha,
        }
        version = rig.set_desired({"model": value})
        say("desired", f"model -> demo-defects {NEW_VERSION} (sha256 {new_sha[:12]}...) as $version {version}")
        acked = lambda: (rig.reported.get("model") or {}).get("av") == version and rig.reported["model"]["ac"] != 202  # noqa: E731
        if not wait("the model's acknowledgement", acked, printer, 90):
            return 1
        seen["rollout"] = rig.reported["model"]["ac"] == 200
        count = len(rig.messages("detections"))
        wait("messages from the new model", lambda: len(rig.messages("detections")) >= count + 2, printer, 30)
        status, models = rig.invoke_method("getModels", {}, timeout=15)
        say("method", f"getModels -> {status} {json.dumps(models, default=str)[:600]}")
        status, body = rig.invoke_method("rollbackModel", {}, timeout=30)
        say("method", f"rollbackModel -> {status} {json.dumps(body, default=str)[:400]}")
        seen["rollback"] = status == 200
        count = len(rig.messages("detections"))
        wait("messages from the demo model again", lambda: len(rig.messages("detections")) >= count + 2, printer, 30)
    finally:
        for proc in (dropper, module):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        printer.poll()
    say(
        "done",
        f"rollout {'seen' if seen['rollout'] else 'NOT seen'}, rollback {'seen' if seen['rollback'] else 'NOT seen'}",
    )
    return 0 if all(seen.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulate_rollout", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address of the rig (127.0.0.1..127.0.0.20)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between dropped frames")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="input/, output/, state/ live here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rollout-sim-") as tmp:
        work = Path(tmp)
        with EdgeHubRig(work / "rig", host=args.host) as rig, ModelServer(work / "models") as server:
            return run(args, rig, server, work)


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`'s SMB case: drop-to-result latency of frames written by a line PC over SMB (tools/smb_rig.py).

The module (`python -m edge_inference`, the bundled demo model) watches the share through the FUSE SMB mount
(polled, attributes cached, so its settle window is the mount's attribute cache + 1 s) and archives to a local
output folder (cross-device). The camera writes 1080p JPEGs over its own SMB session, at a light rate, two ways:
upload under a temp name and rename (the recommended way), and in place in 48 KiB chunks with a Windows share
mode. Latency is from the camera's rename (or close) to the result file's first sighting on the output folder.

Goal: p95 <= POLL_INTERVAL_SECONDS + the settle window + 1 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.run_bench import DEMO_MODEL, ModuleProcess, ResultWatcher, latency_summary, load_average, make_frames
from edge_inference.share.mounts import settle_window
from tools.smb_rig import WINDOWS_SHARE_MODE, SmbRig

POLL_SECONDS = 1.0  # the module's default POLL_INTERVAL_SECONDS
INTERVAL_SECONDS = 1.5  # between frames: a light load, nothing queues


def run_smb_latency(workdir: Path, frames_per_kind: int, providers: str) -> dict[str, Any]:
    frames = make_frames(1920, 1080, 6)
    rig_dir, module_dir = workdir / "smb", workdir / "smb-module"
    with SmbRig(rig_dir) as rig:
        camera = rig.camera
        assert camera is not None
        settle, _trusted = settle_window(rig.input_dir, 0.0)
        module = ModuleProcess(
            DEMO_MODEL,
            module_dir,
            providers,
            disposition="archive",
            extra_env={"INPUT_DIR": str(rig.input_dir), "POLL_INTERVAL_SECONDS": str(POLL_SECONDS)},
        )
        module.start()
        out: dict[str, Any] = {"loadStart": load_average(), "settleSeconds": settle, "pollSeconds": POLL_SECONDS}
        try:
            with ResultWatcher(module.output_dir / "results" / "smb") as watcher:
                for kind in ("renamed", "inPlace"):
                    done_at: dict[str, float] = {}
                    for i in range(frames_per_kind):
                        name = f"{kind}-{i:03d}.jpg"
                        data = frames[i % len(frames)]
                        if kind == "renamed":
                            camera.write_renamed(f"smb/{name}", data)
                        else:
                            camera.write_in_place(f"smb/{name}", data, share_access=WINDOWS_SHARE_MODE, pause=0.02)
                        done_at[name] = time.time()
                        time.sleep(INTERVAL_SECONDS)
                    complete = watcher.wait_for(done_at, 60)
                    latencies = [(watcher.seen[n] - t) * 1000 for n, t in done_at.items() if n in watcher.seen]
                    out[kind] = {
                        "frames": frames_per_kind,
                        "complete": complete,
                        "latencyMs": latency_summary(latencies),
                    }
        finally:
            out["exitCode"] = module.stop()
    goal_ms = (POLL_SECONDS + settle + 1.0) * 1000
    worst = max((out[k]["latencyMs"]["p95"] or float("inf")) for k in ("renamed", "inPlace"))
    out["goal"] = {"p95BoundMs": goal_ms, "p95Ms": worst, "met": worst <= goal_ms}
    out["loadEnd"] = load_average()
    return out


def markdown(smb: dict[str, Any]) -> list[str]:
    g = smb["goal"]
    lines = [
        "",
        f"SMB share (smbd on loopback, smbnetfs FUSE mount, demo model, 1080p, one frame per {INTERVAL_SECONDS} s; "
        f"poll {smb['pollSeconds']} s, settle window {smb['settleSeconds']} s):",
        "",
        "| writer | frames | drop-to-result p50 / p95 / max ms |",
        "|---|---|---|",
    ]
    for kind, label in (("renamed", "temp name + rename"), ("inPlace", "in place, 48 KiB chunks, Windows share mode")):
        lat = smb[kind]["latencyMs"]
        lines.append(f"| {label} | {smb[kind]['frames']} | {lat['p50']} / {lat['p95']} / {lat['max']} |")
    lines.append(
        f"- SMB p95 <= poll + settle + 1 s: **{g['p95Ms']} ms** vs {g['p95BoundMs']:.0f} ms, "
        f"{'met' if g['met'] else 'MISSED'}"
    )
    return lines

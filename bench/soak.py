"""Soak run: hours of frames at a steady rate into the real module, with faults injected on a schedule.

    make soak                                   # 120 minutes, 5 frames/s, a fault every 5 minutes
    .venv/bin/python bench/soak.py --minutes 30 --rate 10 --fault-every 120

The module (`python -m edge_inference`, tiny constant ONNX model, CPU) runs against the edgeHub rig (mosquitto
+ hub emulator) with temp shares; as root the output share is a tmpfs so "output full" can be injected, and the
input share a bind mount that can be taken away. Faults cycle through: kill -9 (restart), SIGTERM (must exit 0;
restart), edgeHub down for 60 s, output share full for 30 s, input share unmounted for 20 s (the camera retries). Every 10 s a sample: frames done, delivered message ids, throughput, result latency (p50/p95 of the
frames finished since the last sample, from their `timingsMs.total`), the module's RSS and open file
descriptors. At the end the run waits for the backlog, audits every frame (one result, one delivered message
id, nothing failed, no temp files) and writes bench/results/soak-<time>.csv (samples) and .json (summary).
Not part of CI; exits 1 when the audit finds a problem.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "modules" / "edge-inference")]

from tests.faults.harness import (  # noqa: E402
    FrameDropper,
    ModuleProcess,
    Shares,
    audit,
    build_model,
    can_mount,
    delivered_ids,
    result_paths,
    wait_all_done,
)
from tools.edgehub_rig import EdgeHubRig  # noqa: E402

FAULTS = ("kill9", "sigterm", "broker", "output_full", "input_away")


def proc_stats(pid: int) -> tuple[int, int]:
    """(RSS bytes, open file descriptors) of a running process, (0, 0) when it is gone."""
    try:
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        return rss_kb * 1024, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return 0, 0


def latencies(output: Path, rels: list[str]) -> list[float]:
    out = []
    for rel in rels:
        try:
            body = json.loads((output / "results" / f"{rel}.json").read_bytes())
            out.append(float(body["timingsMs"]["total"]))
        except (OSError, ValueError, KeyError):
            continue
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def fill(folder: Path) -> Path:
    ballast = folder / "soak-ballast.bin"
    with open(ballast, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
        except OSError:
            pass
    return ballast


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=120.0, help="how long frames are dropped (default 120)")
    ap.add_argument("--rate", type=float, default=5.0, help="frames per second (default 5)")
    ap.add_argument("--fault-every", type=float, default=300.0, help="seconds between faults (0: none)")
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--keep", action="store_true", help="keep the temp shares and logs")
    args = ap.parse_args()
    if shutil.which("mosquitto") is None:
        print("soak: mosquitto is not installed (make apt-deps)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    shares = Shares.make(work / "shares")
    faults = list(FAULTS)
    total = int(args.minutes * 60 * args.rate)
    if can_mount():
        # room for every frame's result and archived original (a 4 KiB tmpfs page each, and folders), so that
        # only the injected "output full" fills it (a 256 MiB share filled up for real near 21,000 frames)
        shares.mount_tmpfs(shares.output, f"{64 + total * 12 // 1024}m")
        shares.detachable("input")
    else:
        faults.remove("output_full")
        faults.remove("input_away")
    model = build_model(work / "model.onnx")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = args.out / f"soak-{stamp}.csv", args.out / f"soak-{stamp}.json"
    names = [f"line{i % 3}/cam{i % 7}/{i // 1000:04d}/{i:08d}.jpg" for i in range(total)]
    events: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    rc = 0
    with EdgeHubRig.on_free_loopback(work / "rig") as rig:
        from tests.faults.harness import module_env

        env = module_env(model, shares, rig, MIN_FREE_MB=8, RESCAN_INTERVAL_SECONDS=5, SHUTDOWN_TIMEOUT_SECONDS=20)
        module = ModuleProcess(env, work / "module.log").start()
        module.wait_ready()
        dropper = FrameDropper(shares.input)
        began = time.monotonic()
        dropper.start(names, per_second=args.rate, retry_while_away=True)
        next_fault = began + args.fault_every if args.fault_every > 0 else float("inf")
        next_sample = began
        fault_i, seen = 0, set()
        broker_back_at = full_until = input_back_at = None
        ballast: Path | None = None
        end = began + args.minutes * 60
        print(
            f"soak: {total} frames over {args.minutes:g} min, faults {faults} every {args.fault_every:g}s -> {csv_path}"
        )
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                if not module.alive and broker_back_at is None:
                    events.append(
                        {"t": round(now - began, 1), "event": "unexpected exit", "rc": module.proc.returncode}
                    )
                    module.start()
                if broker_back_at is not None and now >= broker_back_at:
                    rig.start_broker()
                    broker_back_at = None
                    events.append({"t": round(now - began, 1), "event": "broker back"})
                if full_until is not None and now >= full_until and ballast is not None:
                    ballast.unlink()
                    full_until = ballast = None
                    events.append({"t": round(now - began, 1), "event": "output space back"})
                if input_back_at is not None and now >= input_back_at:
                    shares.attach("input")
                    input_back_at = None
                    events.append({"t": round(now - began, 1), "event": "input share back"})
                if now >= next_fault:
                    fault = faults[fault_i % len(faults)]
                    fault_i += 1
                    next_fault = now + args.fault_every
                    event: dict[str, Any] = {"t": round(now - began, 1), "event": fault}
                    if fault == "kill9":
                        module.kill()
                        module.start()
                    elif fault == "sigterm":
                        t0 = time.monotonic()
                        event["rc"] = module.terminate(120)
                        event["drainSeconds"] = round(time.monotonic() - t0, 2)
                        rc = rc or (1 if event["rc"] != 0 else 0)
                        module.start()
                    elif fault == "broker":
                        rig.stop_broker(graceful=False)
                        broker_back_at = now + 60
                    elif fault == "output_full":
                        ballast = fill(shares.output)
                        full_until = now + 30
                    elif fault == "input_away":
                        shares.detach("input")
                        input_back_at = now + 20
                    events.append(event)
                    print(f"soak: t={event['t']}s {fault}")
                if now >= next_sample:
                    next_sample += args.sample_every
                    done = result_paths(shares.output)
                    new = [r for r in done if r not in seen]
                    seen.update(new)
                    lat = latencies(shares.output, new[-500:])
                    rss, fds = proc_stats(module.proc.pid) if module.alive else (0, 0)
                    sample = {
                        "t": round(now - began, 1),
                        "dropped": len(dropper.dropped),
                        "done": len(done),
                        "delivered": len(delivered_ids(rig)),
                        "fps": round(len(new) / args.sample_every, 2),
                        "latencyP50Ms": pct(lat, 0.5),
                        "latencyP95Ms": pct(lat, 0.95),
                        "rssMB": round(rss / 2**20, 1),
                        "openFds": fds,
                        "starts": module.starts,
                    }
                    samples.append(sample)
                time.sleep(0.2)
            dropper.join(60)
            if broker_back_at is not None:
                rig.start_broker()
            if ballast is not None:
                ballast.unlink()
            if input_back_at is not None:
                shares.attach("input")
            final = wait_all_done(shares, dropper.dropped, rig, module, timeout=600)
            event_rc = module.terminate(120)
            rc = rc or (1 if event_rc != 0 else 0)
        except AssertionError as exc:
            print(f"soak: {exc}", file=sys.stderr)
            final = audit(shares, dropper.dropped, rig)
            rc = 1
        finally:
            dropper.stop()
            module.close()
    problems = final.problems()
    rss = [s["rssMB"] for s in samples if s["rssMB"]]
    fds = [s["openFds"] for s in samples if s["openFds"]]
    summary = {
        "minutes": args.minutes,
        "rate": args.rate,
        "faults": events,
        "audit": final.summary(),
        "problems": problems,
        "throughputFps": round(len(final.results) / max(1.0, samples[-1]["t"] if samples else 1.0), 2),
        "latencyP95Ms": pct([s["latencyP95Ms"] for s in samples if s["latencyP95Ms"] is not None], 0.95),
        "rssMB": {"first": rss[0] if rss else None, "last": rss[-1] if rss else None, "max": max(rss, default=None)},
        "openFds": {"first": fds[0] if fds else None, "last": fds[-1] if fds else None, "max": max(fds, default=None)},
        "rssMedianMB": statistics.median(rss) if rss else None,
    }
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(samples[0]) if samples else ["t"])
        writer.writeheader()
        writer.writerows(samples)
    json_path.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    print(json.dumps(summary, indent=1))
    if samples:
        from bench.figures import IMAGES, draw_soak

        print(f"soak: drew {draw_soak(samples, events, IMAGES / 'soak.png')} (RELIABILITY.md shows it)")
    shares.unmount_all()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"soak: kept {work}")
    return 1 if problems or rc else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())

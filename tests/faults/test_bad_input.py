"""Odd input from odd machines, against the running module: each has a clear outcome and the module keeps going.

Files: names with spaces, unicode, newlines and 255 bytes, 40-level trees, a symlink out of the share, a FIFO
and a device node, bursts of small files. Through the rig: twin patches with wrong types, out-of-range values,
unknown keys and a 32 KB document; direct-method payloads that are not JSON. HTTP: /predict bodies that lie
about their type or size, sent over a raw socket. (Decoding of bad image bytes is tests/test_decode.py's.)
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    FrameDropper,
    ModuleProcess,
    Shares,
    jpeg_blobs,
    module_env,
    result_paths,
    wait_until,
)
from tools.edgehub_rig.broker import free_port


def started(tmp_path: Path, model: Path, shares: Shares, rig: Any = None, **env: Any) -> ModuleProcess:
    module = ModuleProcess(module_env(model, shares, rig, **env), tmp_path / "module.log")
    module.start()
    module.wait_ready()
    return module


def result_of(shares: Shares, rel: str) -> dict[str, Any]:
    return json.loads((shares.output / "results" / f"{rel}.json").read_bytes())


def still_serves(module: ModuleProcess, shares: Shares, rel: str = "after/ok.jpg") -> None:
    """The module is alive and the next good frame gets its result."""
    assert module.alive, module.log_tail()
    FrameDropper(shares.input).drop(rel)
    wait_until(lambda: (shares.output / "results" / f"{rel}.json").exists(), 30, f"{rel} processed", module.log_tail)


LONG_NAME = "n" * (255 - len(".jpg")) + ".jpg"  # 255 bytes: the longest name Linux allows
ODD_NAMES = [
    "with space/frame one.jpg",
    "ünïcödé/カメラ-画像-ß.jpg",
    "new\nline/frame\nwith\nnewlines.jpg",
    'quotes/it\'s "quoted" & <tagged>.jpg',
    "/".join(f"d{i}" for i in range(40)) + "/deep.jpg",
]


@pytest.mark.timeout(120)
def test_odd_names_and_deep_trees_are_processed_under_the_same_relative_path(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    module = started(tmp_path, model, shares)
    try:
        # when frames with odd names and a 40-level tree arrive
        FrameDropper(shares.input).drop_all(ODD_NAMES)
        # then each has its result under the same relative path, with that path in the body
        wait_until(
            lambda: set(result_paths(shares.output)) >= set(ODD_NAMES), 60, "odd names", lambda: module.log_tail()
        )
        for rel in ODD_NAMES:
            body = result_of(shares, rel)
            assert body["frame"]["path"] == rel and body["count"] == 2
        still_serves(module, shares)
    finally:
        module.close()


@pytest.mark.timeout(60)
def test_a_255_byte_name_gets_its_result_and_does_not_block_intake(tmp_path: Path, model: Path, shares: Shares) -> None:
    from edge_inference.share.results import fit_name

    module = started(tmp_path, model, shares)
    try:
        # when a frame with the longest name Linux allows arrives (its `.json` cannot have that name + 5)
        rel = f"long/{LONG_NAME}"
        FrameDropper(shares.input).drop(rel)
        # then its result is written under the name cut to 255 bytes with a hash, carrying the full path
        fitted = shares.output / "results" / fit_name(rel, ".json")
        wait_until(fitted.exists, 30, "the long name's result", module.log_tail)
        assert len(fitted.name.encode()) == 255
        assert json.loads(fitted.read_bytes())["frame"]["path"] == rel
        assert (shares.output / "processed" / rel).is_file()
        # and intake was never blocked by it
        assert "intake paused" not in module.this_run_log()
        still_serves(module, shares)
    finally:
        module.close()


@pytest.mark.timeout(60)
def test_a_backslash_in_a_name_is_ignored_with_a_warning_and_does_not_stop_the_watcher(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    module = started(tmp_path, model, shares)
    try:
        # when a Linux/NFS client drops names with backslashes (Windows cannot make them; safe_join refuses them)
        FrameDropper(shares.input).drop_all(["back\\slash.jpg", "\\..\\x/b.jpg"])
        time.sleep(1.5)
        # then they are ignored with one warning each, and the watcher keeps working
        still_serves(module, shares)
        assert module.this_run_log().count("a backslash in a share path is not supported") == 2
    finally:
        module.close()


@pytest.mark.timeout(120)
def test_symlinks_fifos_and_device_nodes_are_refused_never_opened_or_followed(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    module = started(tmp_path, model, shares)
    try:
        outside = tmp_path / "secret" / "outside.jpg"
        outside.parent.mkdir()
        outside.write_bytes(jpeg_blobs(1)[0])
        before = outside.stat()
        special = {
            "special/link-out.jpg": lambda p: p.symlink_to(outside),
            "special/link-etc.jpg": lambda p: p.symlink_to("/etc/shadow"),
            "special/pipe.jpg": lambda p: os.mkfifo(p),
            "special/null.jpg": lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)),
            "special/zero.jpg": lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 5)),
        }
        (shares.input / "special").mkdir()
        # when a symlink out of the share, a FIFO and device nodes are dropped
        for rel, make in special.items():
            make(shares.input / rel)
        # then each is refused: a result with error not_a_file, an error file in failed/, nothing read
        wait_until(lambda: set(result_paths(shares.output)) >= set(special), 30, "refusals", lambda: module.log_tail())
        for rel in special:
            body = result_of(shares, rel)
            assert body["error"]["code"] == "not_a_regular_file", body
            assert body["frame"].get("sha256") is None  # never read
            assert (shares.output / "failed" / f"{rel}.error.json").is_file()
            assert (shares.input / rel).is_symlink() or (shares.input / rel).exists()  # left in place
        # and the file outside the share was neither read into a result nor moved
        assert outside.stat().st_mtime_ns == before.st_mtime_ns and outside.exists()
        assert (
            not list((shares.output / "processed").rglob("link-*")) if (shares.output / "processed").exists() else True
        )
        still_serves(module, shares)
        # and the refusals are not repeated by the periodic sweep
        time.sleep(2.5)
        assert module.this_run_log().count("special/pipe.jpg: not a regular file") == 1
    finally:
        module.close()


def burst(tmp_path: Path, model: Path, shares: Shares, count: int, timeout: float) -> None:
    module = started(tmp_path, model, shares, QUEUE_SIZE=64, BATCH_SIZE=8)
    try:
        names = [f"burst/{i % 20:02d}/{i:06d}.jpg" for i in range(count)]
        began = time.monotonic()
        FrameDropper(shares.input, jpeg_blobs(4, size=(32, 24))).drop_all(names)
        dropped = time.monotonic() - began
        wait_until(
            lambda: len(result_paths(shares.output)) >= count,
            timeout,
            f"{count} results",
            lambda: f"{len(result_paths(shares.output))} results\n{module.log_tail()}",
        )
        took = time.monotonic() - began
        assert sorted(result_paths(shares.output)) == sorted(names)
        assert not (shares.output / "failed").exists()
        print(f"\nburst of {count}: dropped in {dropped:.1f}s, all results after {took:.1f}s ({count / took:.0f}/s)")
        still_serves(module, shares)
    finally:
        module.close()


@pytest.mark.timeout(240)
def test_a_burst_of_1000_small_files_is_processed_completely(tmp_path: Path, model: Path, shares: Shares) -> None:
    burst(tmp_path, model, shares, 1000, 180)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_burst_of_10000_small_files_is_processed_completely(tmp_path: Path, model: Path, shares: Shares) -> None:
    burst(tmp_path, model, shares, 10_000, 1100)


# -- through the rig --------------------------------------------------------------------------------------------
def raw_method(rig: Any, name: str, payload: bytes, timeout: float = 15) -> tuple[int, Any] | None:
    """A direct method whose payload is raw bytes (the rig's invoke_method always sends JSON); None: no answer."""
    hub = rig._parts()[2]
    rid = format(next(hub._rids), "x")
    hub._publish(f"$iothub/methods/POST/{urllib.parse.quote(name, safe='')}/?$rid={rid}", payload, wait=timeout)
    with hub._cond:
        if not hub._cond.wait_for(lambda: rid in hub._method_replies, timeout):
            return None
        status, raw = hub._method_replies.pop(rid)
    return int(status), raw


BAD_PATCHES: list[tuple[str, dict[str, Any]]] = [
    ("wrong type", {"confidenceThreshold": "high"}),
    ("bool for a number", {"confidenceThreshold": True}),
    ("out of range", {"confidenceThreshold": 1.5}),
    ("negative count", {"maxDetections": -3}),
    ("classes not a list", {"classes": "scratch"}),
    ("telemetry mode", {"telemetry": {"mode": "everything", "summaryIntervalSeconds": "x"}}),
    ("unknown key", {"notASetting": {"deep": [1, 2, 3]}}),
    ("32 KB document", {"classes": ["c" * 100 for _ in range(330)]}),
]


@pytest.mark.timeout(180)
def test_bad_twin_patches_and_non_json_method_payloads_are_refused_and_the_module_keeps_going(
    tmp_path: Path, model: Path, shares: Shares, rig: Any
) -> None:
    module = started(tmp_path, model, shares, rig)
    try:
        rig.wait_reported(lambda r: "runtime" in r, timeout=30)
        good = rig.set_desired({"confidenceThreshold": 0.7})
        rig.wait_reported(lambda r: r["confidenceThreshold"]["av"] == good, timeout=20)
        # when bad patches arrive one after another
        for why, patch in BAD_PATCHES:
            assert len(json.dumps(patch)) < 40_000
            version = rig.set_desired(patch)
            key = next(iter(patch))
            rig.wait_reported(lambda r, k=key, v=version: r[k]["av"] == v, timeout=20)
            ack = rig.reported[key]
            # then each is acknowledged 400 with a reason, and the value in force is unchanged
            if why == "32 KB document":
                assert ack["ac"] in (200, 400), ack  # a long but valid list may be taken; it must be answered
            else:
                assert ack["ac"] == 400 and ack["ad"], (why, ack)
            assert rig.reported["confidenceThreshold"]["value"] == 0.7
        # when direct methods get payloads that are not JSON (IoT Hub itself only accepts JSON payloads, so
        # only a faulty gateway sends these): the SDK fails to parse them before the module sees them and
        # sends no answer (the caller times out) - the module must simply keep running
        for payload in (b"not json", b"\xff\xfe\x00garbage", b"{"):
            answer = raw_method(rig, "reprocess", payload, timeout=2)
            assert answer is None or answer[0] in (400, 500), answer
            assert module.alive, module.log_tail()
        # and JSON payloads of the wrong shape are refused with 400 by the module itself
        for bad in (123, [], "..", {"path": "../../etc/*"}, {"path": "/abs.jpg"}, {"path": {"x": 1}}, {"path": ""}):
            status, body = rig.invoke_method("reprocess", bad, timeout=15)
            assert status == 400, (bad, status, body)
        rig.invoke_method("resume", {}, timeout=15)
        status, body = rig.invoke_method("getStatus", {}, timeout=15)
        assert status == 200 and body["settings"]["confidenceThreshold"] == 0.7, body
        still_serves(module, shares)
    finally:
        module.close()


# -- /predict over a raw socket -----------------------------------------------------------------------------------
def _whole_response(data: bytes) -> bool:
    """The first response is all there (its head and the Content-Length it announces): a kept-alive connection
    is not waited on to close."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return length is not None and len(body) >= int(length.group(1))


def raw_http(port: int, head: str, body: bytes = b"", timeout: float = 10) -> tuple[int, bytes]:
    """Send exactly these bytes; return (status, response) - the server may close early on a lie. The sending side
    stays open (a half-closed connection reads as a closed one to the server: see RELIABILITY.md, known limits)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        try:
            while not _whole_response(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


@pytest.mark.timeout(120)
def test_predict_bodies_that_lie_about_type_or_size_get_4xx_and_the_server_keeps_serving(
    tmp_path: Path, model: Path, shares: Shares
) -> None:
    port = free_port("127.0.0.1")
    module = started(
        tmp_path, model, shares, HTTP_HOST="127.0.0.1", HTTP_PORT=port, HTTP_MAX_BODY_MB=1, HTTP_BODY_TIMEOUT_SECONDS=2
    )
    try:
        jpeg = jpeg_blobs(1)[0]
        cases = {
            # a JPEG Content-Type with text in it
            "text as jpeg": (
                "POST /predict HTTP/1.1\nHost: x\nContent-Type: image/jpeg\nContent-Length: 11\n",
                b"hello world",
                {400, 415},
            ),
            # Content-Length longer than the body (the client then closes)
            "short body": (
                f"POST /predict HTTP/1.1\nHost: x\nContent-Type: image/jpeg\nContent-Length: {len(jpeg) + 500}\n",
                jpeg,
                {400, 408, 0},
            ),
            # Content-Length shorter than the body: the rest is a bogus second request
            "long body": (
                "POST /predict HTTP/1.1\nHost: x\nContent-Type: image/jpeg\nContent-Length: 10\n",
                jpeg,
                {400},
            ),
            # a huge declared length: refused before reading
            "huge length": (
                "POST /predict HTTP/1.1\nHost: x\nContent-Type: image/jpeg\nContent-Length: 99999999999\n",
                b"",
                {413},
            ),
            "negative length": (
                "POST /predict HTTP/1.1\nHost: x\nContent-Type: image/jpeg\nContent-Length: -5\n",
                b"",
                {400, 411},
            ),
            "garbage length": (
                "POST /predict HTTP/1.1\nHost: x\nContent-Type: image/jpeg\nContent-Length: 12abc\n",
                b"",
                {400, 411},
            ),
            "multipart without boundary": (
                "POST /predict HTTP/1.1\nHost: x\nContent-Type: multipart/form-data\nContent-Length: 4\n",
                b"abcd",
                {400, 415},
            ),
            "an image as text/plain": (
                f"POST /predict HTTP/1.1\nHost: x\nContent-Type: text/plain\nContent-Length: {len(jpeg)}\n",
                jpeg,
                {415},
            ),
        }
        for name, (head, body, allowed) in cases.items():
            status, data = raw_http(port, head, body)
            assert status in allowed, (name, status, data[:300])
            assert module.alive, module.log_tail()
        # then a good request still works
        status, data = raw_http(
            port, f"POST /predict HTTP/1.1\nHost: x\nContent-Type: image/jpeg\nContent-Length: {len(jpeg)}\n", jpeg
        )
        assert status == 200, data[:300]
        payload = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert payload["count"] == 2
    finally:
        module.close()

"""Security properties of the running module: secrets never leave it, the HTTP API binds where it is told,
and the pinned dependencies have no known vulnerabilities (where an advisory database can be reached).

Non-root images and the read-only input mount are checked in tests/test_manifests.py (test_dockerfile_structure,
module/input-read-only); paths never leaving the shares in test_paths_property.py and test_bad_input.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import REPO, FrameDropper, ModuleProcess, Shares, files_under, module_env, wait_until
from tools.edgehub_rig.broker import free_port


def secrets_of(rig: Any) -> list[str]:
    env = rig.env()
    connection = next(v for k, v in env.items() if k == "EdgeHubConnectionString")
    return [rig.module_key, connection, "SharedAccessSignature", "sig=", "SharedAccessKey="]


@pytest.mark.timeout(180)
def test_connection_strings_and_sas_tokens_never_reach_logs_results_or_reported_properties(
    tmp_path: Path, model: Path, shares: Shares, rig: Any
) -> None:
    # given the module at DEBUG against edgeHub, through a broker restart (it re-authenticates with a new token)
    module = ModuleProcess(module_env(model, shares, rig, LOG_LEVEL="DEBUG"), tmp_path / "module.log")
    module.start()
    module.wait_ready()
    try:
        rig.wait_reported(lambda r: "runtime" in r, timeout=30)
        FrameDropper(shares.input).drop_all([f"cam/{i}.jpg" for i in range(5)])
        rig.wait_messages(5, output="detections", timeout=60)
        rig.set_desired({"confidenceThreshold": 0.6, "saveAnnotated": True})
        rig.wait_reported(lambda r: r["confidenceThreshold"]["ac"] == 200, timeout=20)
        rig.invoke_method("getStatus", {}, timeout=15)
        rig.invoke_method("selfTest", {}, timeout=30)
        rig.stop_broker(graceful=False)
        rig.start_broker()
        FrameDropper(shares.input).drop_all([f"cam/after-{i}.jpg" for i in range(3)])
        rig.wait_messages(8, output="detections", timeout=90)
        assert module.terminate() == 0
    finally:
        module.close()
    # then no secret is in stdout/stderr, in any file on the output share, or in the reported properties
    log_text = module.log_path.read_text(errors="replace")
    assert " DEBUG " in log_text  # the run really was at DEBUG
    places = {"log": log_text, "reported": json.dumps(rig.reported)}
    for rel in files_under(shares.output):
        places[f"output/{rel}"] = (shares.output / rel).read_bytes().decode(errors="replace")
    places["messages"] = "\n".join(m.text() for m in rig.messages())
    for secret in secrets_of(rig):
        for where, text in places.items():
            assert secret not in text, f"{secret[:24]}... found in {where}"


def can_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.timeout(120)
def test_the_http_api_binds_only_where_http_host_says(tmp_path: Path, model: Path, shares: Shares) -> None:
    port, metrics = free_port("127.0.0.5"), free_port("127.0.0.5")
    env = module_env(model, shares, HTTP_HOST="127.0.0.5", HTTP_PORT=port, METRICS_PORT=metrics)
    module = ModuleProcess(env, tmp_path / "module.log").start()
    try:
        module.wait_ready()
        wait_until(lambda: can_connect("127.0.0.5", port), 20, "the API on 127.0.0.5")
        assert can_connect("127.0.0.5", metrics)
        assert not can_connect("127.0.0.1", port) and not can_connect("127.0.0.1", metrics)
    finally:
        module.close()


@pytest.mark.timeout(180)
def test_pinned_dependencies_have_no_known_vulnerabilities() -> None:
    """pip-audit against the PyPI JSON API. Where the reachable index does not know the pinned versions (an
    offline mirror) or no advisory service answers, the test skips and says so rather than passing silently."""
    audit = Path(sys.executable).with_name("pip-audit")
    if not audit.exists():
        pytest.skip("pip-audit is not installed (requirements-dev.txt pins it)")
    requirements = REPO / "modules" / "edge-inference" / "requirements.txt"
    proc = subprocess.run(
        [
            str(audit),
            "-r",
            str(requirements),
            "--no-deps",
            "--disable-pip",
            "--format",
            "json",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.skip(f"pip-audit could not reach an advisory service: {proc.stderr.strip()[-300:]}")
    deps = report.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        pytest.skip(f"the reachable index knows none of the {len(deps)} pinned versions; nothing could be audited")
    vulnerable = {d["name"]: [v["id"] for v in d.get("vulns", [])] for d in audited if d.get("vulns")}
    assert not vulnerable, vulnerable

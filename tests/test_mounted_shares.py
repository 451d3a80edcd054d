"""REQUIRE_MOUNTED_SHARES on real mounts: the module refuses to start on a plain folder where a share was meant to be
mounted - the container that started before its host mounted the share sees a bind of the host's plain folder -
writing nothing into it, and runs on real mounts (a tmpfs here; network and FUSE mounts pass by type)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_inference.share.mounts import share_mount_problem
from tests.onnx_models import build_constant_model, yolov8_output
from tests.test_module_process import drop, module_env

pytestmark = pytest.mark.timeout(90)

MOUNTINFO = """\
22 1 8:1 / / rw,relatime - overlay overlay rw
40 22 0:40 / /app/input ro,relatime - cifs //nas/frames rw,vers=3.1.1
41 22 8:1 /srv/edge-inference/output /app/output rw,relatime - ext4 /dev/sda1 rw
42 22 0:42 /frames/line1 /app/line1 rw - nfs4 nas:/frames rw
43 22 0:43 / /app/disk rw - xfs /dev/sdb1 rw
44 22 0:44 / /app/fuse rw - fuse.smbnetfs smbnetfs rw
"""


def test_what_counts_as_a_mounted_share() -> None:
    assert share_mount_problem(Path("/app/input"), MOUNTINFO) == ""  # cifs
    assert share_mount_problem(Path("/app/input/line1/cam"), MOUNTINFO) == ""  # a folder of it
    assert share_mount_problem(Path("/app/line1"), MOUNTINFO) == ""  # a folder of an NFS export, bound in
    assert share_mount_problem(Path("/app/fuse"), MOUNTINFO) == ""  # FUSE (smbnetfs, blobfuse...)
    assert share_mount_problem(Path("/app/disk"), MOUNTINFO) == ""  # a file system of its own
    assert "root file system" in share_mount_problem(Path("/app/state"), MOUNTINFO)
    why = share_mount_problem(Path("/app/output"), MOUNTINFO)  # Docker's bind of the host's plain folder
    assert "local ext4 file system bound in from /srv/edge-inference/output" in why


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """input: a bind mount of a plain folder (a share the host had not mounted); output: a tmpfs of its own."""
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("mounting needs root")
    plain, inp, out, state = (tmp_path / n for n in ("host-folder", "input", "output", "state"))
    for folder in (plain, inp, out, state):
        folder.mkdir()
    subprocess.run(["mount", "--bind", str(plain), str(inp)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(out)], check=True)
    try:
        yield {"input": inp, "output": out, "state": state, "plain": plain}
    finally:
        for point in (inp, out):
            subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_constant_model(tmp_path / "tiny.onnx", yolov8_output([(20, 32, 10, 10)], [[0.9, 0.05]]))


def test_a_bind_mounted_plain_folder_is_refused_and_nothing_is_written(mounts: dict[str, Path], model: Path) -> None:
    # given a frame waiting in the plain folder, and the module asked to require mounted shares
    drop(mounts["plain"] / "waiting.jpg", 1)
    env = module_env(mounts, model, REQUIRE_MOUNTED_SHARES="true")
    proc = subprocess.run([sys.executable, "-m", "edge_inference"], env=env, capture_output=True, timeout=60)
    # then it exits 1 with one sentence naming the folder and the fix
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 1, out
    assert f"INPUT_DIR {mounts['input']}: it is a folder of the local" in out
    assert "set REQUIRE_MOUNTED_SHARES=false" in out and "Traceback" not in out
    # and it took nothing from the input folder and wrote nothing anywhere
    assert sorted(p.name for p in mounts["plain"].iterdir()) == ["waiting.jpg"]
    assert list(mounts["output"].iterdir()) == [] and list(mounts["state"].iterdir()) == []


def test_real_mounts_are_accepted_and_frames_flow(mounts: dict[str, Path], model: Path, tmp_path: Path) -> None:
    # given the input share mounted for real this time (a tmpfs over the bind, as a share mounted late)
    subprocess.run(["umount", "-l", str(mounts["input"])], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mounts["input"])], check=True)
    drop(mounts["input"] / "cam" / "f.jpg", 2)
    env = module_env(mounts, model, REQUIRE_MOUNTED_SHARES="true", MIN_FREE_MB="1")  # a 16 MB share
    log = tmp_path / "module.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_inference"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        result = mounts["output"] / "results" / "cam" / "f.jpg.json"
        deadline = time.monotonic() + 60
        while not result.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert result.exists(), log.read_text(errors="replace")[-2000:]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0

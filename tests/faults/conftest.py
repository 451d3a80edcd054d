"""Fault-suite fixtures; and the rule that `@pytest.mark.slow` tests run only when asked for.

`make test` (CI) runs every test that is not deselected; the long fault runs (20 kills of 500 frames, a
10-minute edgeHub outage, 10,000-file bursts) are marked slow and deselected here unless the command line
selects markers itself (`make test-faults` runs `pytest -m slow`). Only this folder's tests are affected.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import ModuleProcess, Shares, build_model


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr or config.option.keyword:
        return  # the caller chose (-m slow, -m "not slow", -k ...)
    here = Path(__file__).parent
    keep, drop = [], []
    for item in items:
        ours = here in Path(str(item.path)).parents
        (drop if ours and item.get_closest_marker("slow") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_model(tmp_path / "two-defects.onnx")


@pytest.fixture
def shares(tmp_path: Path) -> Iterator[Shares]:
    s = Shares.make(tmp_path)
    try:
        yield s
    finally:
        ModuleProcess.reap_all()  # a failed assertion skips the test's own terminate: no module outlives it
        s.unmount_all()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[object]:
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    from tools.edgehub_rig import EdgeHubRig

    with EdgeHubRig.on_free_loopback(tmp_path / "rig") as r:
        yield r

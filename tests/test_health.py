"""The operator's watches: free space on a real (tmpfs) file system, the GPU through an injected fake NVML
(the GPU is the one edge that cannot run here), and runs of failed frames; each raises its alarms in a real
alarm registry (ops/alarms.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from edge_inference.ops.alarms import GPU_LOST, GPU_OVER_TEMPERATURE, OUTPUT_SHARE_LOW, REPEATED_FAILURES, AlarmRegistry
from edge_inference.ops.health import DiskSpaceMonitor, FailureRunMonitor, GpuMonitor
from edge_inference.ops.metrics import MetricsRegistry
from tests.http_support import assert_no_new_threads
from tests.iot_fakes import ListSink

MiB = 1024 * 1024


class Alarms(AlarmRegistry):
    """The real alarm registry (messages into a list), recording every raise and clear it passes on;
    `wait_for` blocks until a given transition has been seen."""

    def __init__(self, metrics: MetricsRegistry | None = None) -> None:
        super().__init__(ListSink(), metrics or MetricsRegistry())
        self.calls: list[tuple[str, bool, dict[str, Any]]] = []
        self._cv = threading.Condition()
        self.subscribe(self._record)

    def _record(self, alarm: str, active: bool, details: dict[str, Any]) -> None:
        with self._cv:
            self.calls.append((alarm, active, details))
            self._cv.notify_all()

    def transitions(self) -> list[tuple[str, bool]]:
        return [(alarm, active) for alarm, active, _ in self.calls]

    def wait_for(self, alarm: str, active: bool, timeout: float = 5.0) -> dict[str, Any]:
        with self._cv:
            assert self._cv.wait_for(lambda: any(c[:2] == (alarm, active) for c in self.calls), timeout), self.calls
            return next(c[2] for c in reversed(self.calls) if c[:2] == (alarm, active))


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert_no_new_threads(before)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test: a real file system that the test can fill."""
    mount_point = tmp_path / "share"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())


def alarm_gauge(metrics: MetricsRegistry, alarm: str) -> float | None:
    return metrics.registry.get_sample_value("edge_inference_alarm_active", {"alarm": alarm})


# ---------------------------------------------------------------------------------------------- disk space


@pytest.mark.timeout(30)
def test_free_space_alarm_raises_below_threshold_and_clears_above_it_with_hysteresis(tmpfs: Path) -> None:
    # given a 2 MiB output share and a 1 MiB threshold (recovery at 1.2 MiB)
    metrics = MetricsRegistry()
    alarms = Alarms(metrics)
    monitor = DiskSpaceMonitor({"output": tmpfs}, 1 * MiB, metrics, alarms)
    assert monitor.check_now() is False
    assert metrics.registry.get_sample_value("edge_inference_free_bytes", {"volume": "output"}) == 2 * MiB
    assert alarms.calls == []

    # when the share fills to 0.5 MiB free
    fill(tmpfs / "frames.bin", int(1.5 * MiB))
    # then the alarm is raised once, naming the volume
    assert monitor.check_now() is True
    assert monitor.check_now() is True
    assert alarms.transitions() == [(OUTPUT_SHARE_LOW, True)]
    details = alarms.calls[0][2]
    assert details["volume"] == "output"
    assert details["freeBytes"] == int(0.5 * MiB)
    assert details["minFreeBytes"] == 1 * MiB
    assert details["lowVolumes"] == ["output"]
    assert alarm_gauge(metrics, OUTPUT_SHARE_LOW) == 1

    # when space comes back above the threshold but not above threshold x 1.2, it stays raised (no flapping)
    os.truncate(tmpfs / "frames.bin", int(0.9 * MiB))
    assert monitor.check_now() is True
    assert len(alarms.calls) == 1
    # and once it is above threshold x 1.2 it clears, once
    os.unlink(tmpfs / "frames.bin")
    assert monitor.check_now() is False
    assert monitor.check_now() is False
    assert alarms.transitions() == [(OUTPUT_SHARE_LOW, True), (OUTPUT_SHARE_LOW, False)]
    assert alarms.calls[1][2]["freeBytes"] == 2 * MiB
    assert alarm_gauge(metrics, OUTPUT_SHARE_LOW) == 0


@pytest.mark.timeout(30)
def test_free_space_watch_thread_sees_the_share_fill_and_drain(tmpfs: Path, tmp_path: Path) -> None:
    # given the watch running on the share and on a roomy state volume
    metrics = MetricsRegistry()
    alarms = Alarms(metrics)
    state = tmp_path / "state"
    state.mkdir()
    with DiskSpaceMonitor({"output": tmpfs, "state": state}, 1 * MiB, metrics, alarms, interval=0.05) as monitor:
        assert monitor.is_alive()
        # when a writer fills the share
        fill(tmpfs / "a.bin", int(1.8 * MiB))
        # then the alarm comes within a few intervals, and goes once the space is freed
        raised = alarms.wait_for(OUTPUT_SHARE_LOW, True)
        assert raised["volume"] == "output" and raised["lowVolumes"] == ["output"]
        os.unlink(tmpfs / "a.bin")
        alarms.wait_for(OUTPUT_SHARE_LOW, False)
    assert not monitor.is_alive()
    assert (metrics.registry.get_sample_value("edge_inference_free_bytes", {"volume": "state"}) or 0) > 1 * MiB


@pytest.mark.timeout(30)
def test_a_volume_that_cannot_be_read_is_logged_once_and_keeps_its_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = MetricsRegistry()
    alarms = Alarms(metrics)
    missing = tmp_path / "not-mounted"
    monitor = DiskSpaceMonitor({"output": missing}, 1 * MiB, metrics, alarms)
    with caplog.at_level(logging.WARNING, logger="edge_inference.ops.health"):
        assert monitor.check_now() is False
        assert monitor.check_now() is False
    assert sum("cannot read free space" in r.getMessage() for r in caplog.records) == 1
    assert alarms.calls == []
    # a threshold above what any volume has raises at once (no root needed for this one)
    roomy = DiskSpaceMonitor({"output": tmp_path}, 10**18, metrics, alarms)
    assert roomy.check_now() is True
    assert alarms.transitions() == [(OUTPUT_SHARE_LOW, True)]
    # and a zero threshold only measures
    assert DiskSpaceMonitor({"output": tmp_path}, 0, MetricsRegistry(), alarms).check_now() is False


@pytest.mark.timeout(30)
def test_a_failing_alarm_listener_does_not_stop_the_watch(tmpfs: Path) -> None:
    seen: list[bool] = []

    def broken(alarm: str, active: bool, details: dict[str, Any]) -> None:
        seen.append(active)
        raise RuntimeError("sink down")

    metrics = MetricsRegistry()
    alarms = AlarmRegistry(ListSink(), metrics)
    alarms.subscribe(broken)
    monitor = DiskSpaceMonitor({"output": tmpfs}, 1 * MiB, metrics, alarms, interval=0.05)
    with monitor:
        fill(tmpfs / "a.bin", int(1.5 * MiB))
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        os.unlink(tmpfs / "a.bin")
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert monitor.is_alive()
    assert seen == [True, False]


# ---------------------------------------------------------------------------------------------- GPU


class FakeNvml:
    """The slice of `pynvml` that GpuMonitor uses, with knobs; errors are real `pynvml.NVMLError`s."""

    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self) -> None:
        self.temperature = 60
        self.utilization = 37
        self.used = 3 * 1024**3
        self.total = 16 * 1024**3
        self.init_error: int | None = None
        self.read_error: int | None = None
        self.shutdowns = 0
        self.reads = 0
        self.handles: list[object] = []

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        if self.read_error is not None:
            raise pynvml.NVMLError(self.read_error)
        return ("handle", index)

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id: str) -> object:
        if self.read_error is not None:
            raise pynvml.NVMLError(self.read_error)
        return ("handle", bus_id)

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
        self.handles.append(handle)
        assert sensor == self.NVML_TEMPERATURE_GPU
        self.reads += 1
        return self.temperature

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(gpu=self.utilization, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(used=self.used, total=self.total, free=self.total - self.used)


def gpu_gauge(metrics: MetricsRegistry, name: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"device": "0"})


@pytest.mark.timeout(30)
def test_gpu_watch_without_nvml_logs_once_and_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    # given a host without the NVIDIA driver (the fake says so; the real pynvml case follows)
    nvml = FakeNvml()
    nvml.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    metrics = MetricsRegistry()
    alarms = Alarms(metrics)
    monitor = GpuMonitor(0, metrics, alarms, interval=0.01, nvml=nvml)
    with caplog.at_level(logging.INFO, logger="edge_inference.ops.health"):
        monitor.start()
        deadline = time.monotonic() + 5
        while monitor.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        # then the thread has ended by itself, and check_now stays a no-op
        assert not monitor.is_alive()
        monitor.check_now()
        monitor.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "edge_inference.ops.health"]
    assert len(messages) == 1 and "NVML unavailable" in messages[0]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "edge_inference.ops.health")
    assert alarms.calls == [] and not monitor.available
    assert gpu_gauge(metrics, "edge_inference_gpu_temperature_celsius") is None


@pytest.mark.timeout(30)
def test_gpu_watch_with_the_real_pynvml_on_a_host_without_a_driver(caplog: pytest.LogCaptureFixture) -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this host has an NVIDIA driver: covered by the fake-NVML tests")
    monitor = GpuMonitor(0, MetricsRegistry(), Alarms(), interval=0.01)
    with caplog.at_level(logging.INFO, logger="edge_inference.ops.health"):
        monitor.start()
        monitor.stop()
    assert not monitor.available
    assert any("NVML unavailable" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(30)
def test_gpu_readings_become_gauges_and_temperature_alarm_has_hysteresis() -> None:
    nvml = FakeNvml()
    metrics = MetricsRegistry()
    alarms = Alarms(metrics)
    monitor = GpuMonitor(0, metrics, alarms, temp_limit_c=85, nvml=nvml)

    monitor.check_now()
    assert monitor.available
    assert gpu_gauge(metrics, "edge_inference_gpu_temperature_celsius") == 60
    assert gpu_gauge(metrics, "edge_inference_gpu_utilization_ratio") == pytest.approx(0.37)
    assert gpu_gauge(metrics, "edge_inference_gpu_memory_used_bytes") == 3 * 1024**3
    assert gpu_gauge(metrics, "edge_inference_gpu_memory_total_bytes") == 16 * 1024**3
    assert alarms.calls == []

    nvml.temperature = 88
    monitor.check_now()
    monitor.check_now()
    assert alarms.transitions() == [(GPU_OVER_TEMPERATURE, True)]
    assert alarms.calls[0][2] == {"device": 0, "temperatureC": 88.0, "limitC": 85}
    assert alarm_gauge(metrics, GPU_OVER_TEMPERATURE) == 1
    nvml.temperature = 82  # below the limit, not 5 C below: still hot
    monitor.check_now()
    assert len(alarms.calls) == 1
    nvml.temperature = 79
    monitor.check_now()
    assert alarms.transitions() == [(GPU_OVER_TEMPERATURE, True), (GPU_OVER_TEMPERATURE, False)]
    assert alarm_gauge(metrics, GPU_OVER_TEMPERATURE) == 0
    monitor.stop()
    assert nvml.shutdowns == 1


@pytest.mark.timeout(30)
def test_gpu_lost_after_it_worked_raises_once_and_clears_when_it_answers_again() -> None:
    nvml = FakeNvml()
    metrics = MetricsRegistry()
    alarms = Alarms(metrics)
    with GpuMonitor(0, metrics, alarms, interval=0.02, nvml=nvml) as monitor:
        deadline = time.monotonic() + 5
        while gpu_gauge(metrics, "edge_inference_gpu_temperature_celsius") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gpu_gauge(metrics, "edge_inference_gpu_temperature_celsius") == 60
        # when the GPU falls off the bus
        nvml.read_error = pynvml.NVML_ERROR_GPU_IS_LOST
        lost = alarms.wait_for(GPU_LOST, True)
        assert lost["device"] == 0 and "GPU is lost" in lost["error"]
        reads = nvml.reads
        time.sleep(0.1)  # several more failed reads: still one alarm
        assert alarms.transitions() == [(GPU_LOST, True)]
        assert monitor.is_alive()
        # when it answers again
        nvml.read_error = None
        alarms.wait_for(GPU_LOST, False)
        assert nvml.reads > reads
    assert alarms.transitions() == [(GPU_LOST, True), (GPU_LOST, False)]
    assert nvml.shutdowns == 1


@pytest.mark.timeout(30)
def test_a_device_nvml_never_read_is_not_reported_lost(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml()
    nvml.read_error = pynvml.NVML_ERROR_NOT_SUPPORTED
    alarms = Alarms()
    monitor = GpuMonitor(0, MetricsRegistry(), alarms, interval=0.01, nvml=nvml)
    with caplog.at_level(logging.INFO, logger="edge_inference.ops.health"):
        monitor.start()
        deadline = time.monotonic() + 5
        while monitor.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        monitor.stop()
    assert alarms.calls == []
    assert not monitor.available


# ---------------------------------------------------------------------------------------------- failure runs


@pytest.mark.timeout(30)
def test_repeated_failures_alarm_after_n_in_a_row_cleared_by_the_next_success() -> None:
    metrics = MetricsRegistry()
    alarms = Alarms(metrics)
    monitor = FailureRunMonitor(3, alarms)
    for ok in (False, False, True, False, False):
        monitor.record(ok)
    assert alarms.calls == []  # a success in between resets the run
    monitor.record(False)
    monitor.record(False)
    assert alarms.transitions() == [(REPEATED_FAILURES, True)]
    assert alarms.calls[0][2] == {"consecutiveFailures": 3, "threshold": 3}
    assert monitor.active and monitor.consecutive_failures == 4
    assert alarm_gauge(metrics, REPEATED_FAILURES) == 1
    monitor.record(True)
    monitor.record(True)
    assert alarms.transitions() == [(REPEATED_FAILURES, True), (REPEATED_FAILURES, False)]
    assert alarms.calls[1][2] == {"consecutiveFailures": 4, "threshold": 3}
    assert alarm_gauge(metrics, REPEATED_FAILURES) == 0
    with pytest.raises(ValueError):
        FailureRunMonitor(0, alarms)


@pytest.mark.timeout(30)
def test_repeated_failures_from_many_threads_raise_exactly_once() -> None:
    alarms = Alarms()
    monitor = FailureRunMonitor(10, alarms)
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        for _ in range(100):
            monitor.record(False)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert alarms.transitions() == [(REPEATED_FAILURES, True)]
    assert monitor.consecutive_failures == 400


@pytest.mark.timeout(30)
def test_gpu_watch_finds_the_card_cuda_uses_by_its_pci_bus_id() -> None:
    # given CUDA device 0 is the card at 0000:3B:00.0 (NVML may number it differently on a two-GPU box)
    nvml = FakeNvml()
    monitor = GpuMonitor(0, MetricsRegistry(), lambda *a: None, nvml=nvml, pci_bus_id="00000000:3B:00.0")
    # when it reads the GPU
    monitor.check_now()
    # then NVML was asked for that card, not for index 0
    assert nvml.handles == [("handle", "00000000:3B:00.0")]
    monitor.stop()

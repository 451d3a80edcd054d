"""The operator's watches: free space on the volumes, the GPU, runs of failed frames.

Each watch raises and clears named alarms in the alarm registry (`ops/alarms.py`), only on transitions
(raised once, cleared once); the registry sends them on `alerts`, sets the gauge and tells the intake gate
(intake pauses while `outputShareLow` is active). The disk and GPU watches are `PeriodicWorker`s: a bad reading
is logged and the next one comes; `check_now()` takes one reading on the caller's thread.

Alarms raised here:
    outputShareLow     a watched volume has less free space than MIN_FREE_MB; cleared when every volume is back
                       above MIN_FREE_MB x 1.2 (hysteresis, so the pipeline does not flap at the threshold)
    gpuOverTemperature the GPU is at or above its temperature limit; cleared 5 C below it
    gpuLost            NVML stopped answering for a GPU that it read before; cleared when it answers again
    repeatedFailures   N frames failed in a row; cleared by the next frame that succeeds
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_inference.ops.alarms import GPU_LOST, GPU_OVER_TEMPERATURE, OUTPUT_SHARE_LOW, REPEATED_FAILURES, AlarmRegistry
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.workers import PeriodicWorker, Supervisor

log = logging.getLogger(__name__)

FREE_SPACE_RECOVERY_RATIO = 1.2
TEMPERATURE_HYSTERESIS_C = 5


class DiskSpaceMonitor(PeriodicWorker):
    """Free space of the output share and the state volume (`{"output": Path, "state": Path}`).

    Sets `edge_inference_free_bytes{volume}`; raises `outputShareLow` when any volume has less than
    `min_free_bytes` free (details: the volume, its free bytes, the threshold, every low volume) and clears
    it when all are back above `min_free_bytes * recovery_ratio`. `min_free_bytes <= 0` only measures.
    `check_now()` measures at once and says whether the alarm is active.
    """

    def __init__(
        self,
        volumes: dict[str, Path],
        min_free_bytes: int,
        metrics: MetricsRegistry,
        alarms: AlarmRegistry,
        interval: float = 5.0,
        *,
        recovery_ratio: float = FREE_SPACE_RECOVERY_RATIO,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__(
            "disk-space-monitor", interval, supervisor, first_tick_at_start=True, tolerant=True, daemon=True
        )
        if recovery_ratio < 1.0:
            raise ValueError(f"recovery_ratio must be >= 1, got {recovery_ratio}")
        self.volumes = dict(volumes)
        self.min_free_bytes = int(min_free_bytes)
        self.recover_free_bytes = int(self.min_free_bytes * recovery_ratio)
        self.metrics = metrics
        self.alarms = alarms
        self._lock = threading.RLock()
        self._low: dict[str, int] = {}  # volume -> free bytes when it went low
        self._unreadable: set[str] = set()

    @property
    def active(self) -> bool:
        with self._lock:
            return bool(self._low)

    def free_bytes(self, volume: str) -> int | None:
        """Bytes available to the module on `volume` now, or None when it cannot be read."""
        path = self.volumes[volume]
        try:
            st = os.statvfs(path)
        except OSError as exc:
            if volume not in self._unreadable:
                self._unreadable.add(volume)
                log.warning("cannot read free space of %s volume %s: %s", volume, path, exc)
            return None
        if volume in self._unreadable:
            self._unreadable.discard(volume)
            log.info("free space of %s volume %s readable again", volume, path)
        return int(st.f_bavail) * int(st.f_frsize)

    def check_now(self) -> bool:
        """Measure every volume, raise or clear the alarm; True while the alarm is active."""
        with self._lock:
            was_active = bool(self._low)
            changed: tuple[str, int] | None = None
            for volume in self.volumes:
                free = self.free_bytes(volume)
                if free is None:
                    continue  # unknown: keep its previous state
                self.metrics.free_bytes.labels(volume=volume).set(free)
                if self.min_free_bytes <= 0:
                    continue
                if volume not in self._low and free < self.min_free_bytes:
                    self._low[volume] = free
                    changed = changed or (volume, free)
                elif volume in self._low and free >= self.recover_free_bytes:
                    del self._low[volume]
                    changed = changed or (volume, free)
                elif volume in self._low:
                    self._low[volume] = free
            active = bool(self._low)
            if changed is not None and active != was_active:
                volume, free = changed
                details: dict[str, Any] = {
                    "volume": volume,
                    "path": str(self.volumes[volume]),
                    "freeBytes": free,
                    "minFreeBytes": self.min_free_bytes,
                    "lowVolumes": sorted(self._low),
                }
                if not active:
                    details["recoverFreeBytes"] = self.recover_free_bytes
                self.alarms.set(OUTPUT_SHARE_LOW, active, details)
            return active

    def tick(self) -> None:
        self.check_now()


class GpuMonitor(PeriodicWorker):
    """The GPU through NVML (`pynvml`, from nvidia-ml-py): temperature, utilisation and memory as gauges,
    alarms `gpuOverTemperature` and `gpuLost`. The card is found by `pci_bus_id` (from the CUDA driver) when
    given, else by `device_index`.

    Without NVML (no NVIDIA driver, a CPU-only host) it logs once at INFO and its thread ends: nothing to
    watch. `nvml` replaces the `pynvml` module (tests inject a fake; the GPU is the one edge that cannot run
    here). `check_now()` takes one reading synchronously (after `start()` has initialised NVML, or alone).
    """

    def __init__(
        self,
        device_index: int,
        metrics: MetricsRegistry,
        alarms: AlarmRegistry,
        interval: float = 10.0,
        temp_limit_c: float = 85,
        *,
        nvml: ModuleType | Any | None = None,
        pci_bus_id: str | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        super().__init__("gpu-monitor", interval, supervisor, first_tick_at_start=True, tolerant=True, daemon=True)
        self.device_index = device_index
        self.pci_bus_id = pci_bus_id
        self.metrics = metrics
        self.alarms = alarms
        self.temp_limit_c = temp_limit_c
        self._nvml = nvml
        self._label = str(device_index)
        self._lock = threading.RLock()
        self._initialised = False
        self._available: bool | None = None  # None: not tried yet
        self._worked = False
        self._hot = False
        self._lost = False

    @property
    def available(self) -> bool:
        """True once NVML answered for the device."""
        return bool(self._available)

    def setup(self) -> bool:
        return self._init()

    def stop(self, timeout: float = 5.0) -> bool:
        if not self.started:
            self.request_stop()
            self.teardown()  # used through check_now() alone
            return True
        return super().stop(timeout)

    def teardown(self) -> None:
        with self._lock:
            if self._initialised and self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    log.debug("nvmlShutdown failed", exc_info=True)
                self._initialised = False

    def _init(self) -> bool:
        with self._lock:
            if self._initialised:
                return True
            if self._available is False:
                return False
            try:
                if self._nvml is None:
                    import pynvml

                    self._nvml = pynvml
                self._nvml.nvmlInit()
                self._handle()
            except Exception as exc:  # ImportError, NVMLError_LibraryNotFound / DriverNotLoaded / InvalidArgument
                self._available = False
                log.info("GPU watch off: NVML unavailable for device %d (%s)", self.device_index, exc)
                return False
            self._initialised = True
            self._available = True
            return True

    def _handle(self) -> Any:
        """The NVML handle of the card CUDA runs on: by PCI bus id when known (NVML numbers cards in PCI order,
        CUDA fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, and CUDA_VISIBLE_DEVICES renumbers them)."""
        assert self._nvml is not None
        if self.pci_bus_id:
            return self._nvml.nvmlDeviceGetHandleByPciBusId_v2(self.pci_bus_id)
        return self._nvml.nvmlDeviceGetHandleByIndex(self.device_index)

    def check_now(self) -> None:
        """Read the device once and raise or clear the alarms."""
        with self._lock:
            if not self._init():
                return
            nvml = self._nvml
            assert nvml is not None
            try:
                handle = self._handle()
                temperature = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
                utilization = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu) / 100.0
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                used, total = int(memory.used), int(memory.total)
            except Exception as exc:
                self._read_failed(exc)
                return
            self._worked = True
            m = self.metrics
            m.gpu_temperature.labels(device=self._label).set(temperature)
            m.gpu_utilization.labels(device=self._label).set(utilization)
            m.gpu_memory_used.labels(device=self._label).set(used)
            m.gpu_memory_total.labels(device=self._label).set(total)
            if self._lost:
                self._lost = False
                self.alarms.clear(GPU_LOST, {"device": self.device_index})
            details = {"device": self.device_index, "temperatureC": temperature, "limitC": self.temp_limit_c}
            if not self._hot and temperature >= self.temp_limit_c:
                self._hot = True
                self.alarms.raise_alarm(GPU_OVER_TEMPERATURE, details)
            elif self._hot and temperature <= self.temp_limit_c - TEMPERATURE_HYSTERESIS_C:
                self._hot = False
                self.alarms.clear(GPU_OVER_TEMPERATURE, details)

    def _read_failed(self, exc: Exception) -> None:
        if not self._worked:
            # Never read successfully: a device NVML cannot query (e.g. some vGPU/MIG setups). Not "lost".
            if self._available is not False:
                log.info("GPU watch off: NVML cannot read device %d (%s)", self.device_index, exc)
            self._available = False
            self.request_stop()  # nothing to watch: the worker ends, as asked
            return
        if not self._lost:
            self._lost = True
            self.alarms.raise_alarm(GPU_LOST, {"device": self.device_index, "error": str(exc)})
        else:
            log.debug("GPU %d still unreadable: %s", self.device_index, exc)

    def tick(self) -> None:
        self.check_now()


class FailureRunMonitor:
    """Counts consecutive failed frames: `repeatedFailures` after `threshold` in a row, cleared by the next
    success. The dispatcher calls `record(ok)` once per frame."""

    def __init__(self, threshold: int, alarms: AlarmRegistry) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold}")
        self.threshold = threshold
        self.alarms = alarms
        self._lock = threading.Lock()
        self._run = 0
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    @property
    def consecutive_failures(self) -> int:
        return self._run

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                failures, self._run = self._run, 0
                if self._active:
                    self._active = False
                    self.alarms.clear(REPEATED_FAILURES, {"consecutiveFailures": failures, "threshold": self.threshold})
                return
            self._run += 1
            if not self._active and self._run >= self.threshold:
                self._active = True
                self.alarms.raise_alarm(
                    REPEATED_FAILURES, {"consecutiveFailures": self._run, "threshold": self.threshold}
                )

"""How many CPUs this process may really use: the affinity mask, capped by the container's cgroup CPU quota.

`os.sched_getaffinity` sees every core of the node, but a container limited to 4 CPUs on a 40-core Azure Stack
Edge node gets 4 CPUs' worth of time per period: 40 decode and ONNX Runtime threads would spend most of it
throttled. The quota is read from the cgroup the process is in, and from every parent up to the cgroup root
(a limit set on a parent caps its children too):

- cgroup v2: `cpu.max` (`<quota> <period>`, or `max <period>` for no limit);
- cgroup v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us` under the `cpu` controller (`-1` for no limit).

The usable count is the quota rounded down (at least 1), the way Go's automaxprocs sizes GOMAXPROCS: a thread
more than the quota only adds throttling. `cgroup_root` and `self_cgroup` are parameters so that a test can
point them at a folder of its own.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    """`cpus` usable by this process; `quota` the cgroup limit in CPUs (None: none) and where it was read."""

    cpus: int
    affinity: int
    quota: float | None = None
    source: str = ""


def _affinity() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_paths(self_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup path in the v2 hierarchy and in the v1 `cpu` hierarchy, from /proc/self/cgroup."""
    v2: str | None = None
    v1: str | None = None
    for line in (_read(self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(base: Path, path: str | None) -> list[Path]:
    """`base/path`, its parents up to `base` (the folder itself first). Inside a container the cgroup namespace
    makes `path` "/"; without one the host path may not exist under the mount, and then only `base` is read."""
    folders: list[Path] = []
    if path and path != "/":
        here = base / path.strip("/")
        if here.is_dir():
            while here != base and base in here.parents:
                folders.append(here)
                here = here.parent
    folders.append(base)
    return folders


def _v2_quota(folder: Path) -> float | None:
    text = _read(folder / "cpu.max")
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: Path) -> float | None:
    quota_text, period_text = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if not quota_text or not period_text:
        return None
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_budget(cgroup_root: Path | None = None, self_cgroup: Path | None = None) -> CpuBudget:
    """The CPUs this process may use: min(affinity, the tightest cgroup quota on its path), at least 1."""
    root = CGROUP_ROOT if cgroup_root is None else cgroup_root
    v2_path, v1_path = _own_paths(SELF_CGROUP if self_cgroup is None else self_cgroup)
    affinity = _affinity()
    limits: list[tuple[float, str]] = []
    if (root / "cgroup.controllers").exists():  # the unified (v2) hierarchy is mounted at the root
        limits += [(q, str(f / "cpu.max")) for f in _ancestors(root, v2_path) if (q := _v2_quota(f)) is not None]
    else:
        for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            base = root / name
            if base.is_dir():
                for folder in _ancestors(base, v1_path):
                    quota = _v1_quota(folder)
                    if quota is not None:
                        limits.append((quota, str(folder / "cpu.cfs_quota_us")))
                break
    if not limits:
        return CpuBudget(affinity, affinity)
    quota, source = min(limits)
    return CpuBudget(max(1, min(affinity, math.floor(quota))), affinity, round(quota, 3), source)

"""Thread counts follow the container's CPU quota: cgroup v2 cpu.max and v1 cfs quota, in a faked cgroup tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_inference import cpu_quota
from edge_inference.cpu_quota import cpu_budget
from edge_inference.settings import Settings

pytestmark = pytest.mark.timeout(10)
AFFINITY = len(os.sched_getaffinity(0))


def v2_tree(root: Path, own: str, limits: dict[str, str]) -> Path:
    """A cgroup v2 mount at `root`, this process in `own`, cpu.max per folder; returns /proc/self/cgroup."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for folder, text in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text + "\n")
    (root / own.strip("/")).mkdir(parents=True, exist_ok=True)
    self_cgroup = root.parent / "self-cgroup"
    self_cgroup.write_text(f"0::{own}\n")
    return self_cgroup


def test_v2_quota_caps_the_cpus(tmp_path: Path) -> None:
    # given a container limited to 1.5 CPUs (cpu.max 150000 100000) seen through its cgroup namespace
    self_cgroup = v2_tree(tmp_path / "cg", "/", {".": "150000 100000"})
    budget = cpu_budget(tmp_path / "cg", self_cgroup)
    # then one thread, never more than the affinity allows, and the source is named
    assert budget.cpus == 1 and budget.quota == 1.5
    assert budget.source.endswith("cpu.max")


def test_v2_without_a_limit_keeps_the_affinity(tmp_path: Path) -> None:
    self_cgroup = v2_tree(tmp_path / "cg", "/", {".": "max 100000"})
    assert cpu_budget(tmp_path / "cg", self_cgroup).cpus == AFFINITY


def test_v2_the_tightest_limit_on_the_path_wins(tmp_path: Path) -> None:
    # given the pod's parent limited to 1 CPU and the container itself to 64
    self_cgroup = v2_tree(
        tmp_path / "cg", "/kubepods/pod1/ctr", {"kubepods/pod1": "100000 100000", "kubepods/pod1/ctr": "6400000 100000"}
    )
    budget = cpu_budget(tmp_path / "cg", self_cgroup)
    assert budget.cpus == 1 and budget.source == str(tmp_path / "cg" / "kubepods" / "pod1" / "cpu.max")


def test_v1_cfs_quota_caps_the_cpus(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    cpu = root / "cpu,cpuacct"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("100000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    budget = cpu_budget(root, self_cgroup)
    assert budget.cpus == 1 and budget.quota == 1.0
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert cpu_budget(root, self_cgroup).cpus == AFFINITY


def test_no_cgroup_files_means_the_affinity(tmp_path: Path) -> None:
    assert cpu_budget(tmp_path / "absent", tmp_path / "absent-self").cpus == AFFINITY


def test_thread_counts_follow_a_faked_cpu_max(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given the module's cgroup root pointed at a container limited to 1 CPU
    self_cgroup = v2_tree(tmp_path / "cg", "/", {".": "100000 100000"})
    monkeypatch.setattr(cpu_quota, "CGROUP_ROOT", tmp_path / "cg")
    monkeypatch.setattr(cpu_quota, "SELF_CGROUP", self_cgroup)
    s = Settings()
    # then ONNX Runtime and the decode pool are sized to 1 CPU, whatever the node has
    assert s.cpu_count == 1
    assert s.effective_inference_threads == 1
    assert s.effective_decode_workers() == 1
    # and explicit settings still win
    assert Settings(inference_threads=3, decode_workers=2).effective_inference_threads == 3

"""For the tests of the local launchers (`make run`, `make demo`, `make simulate`): the process tree under a pid,
read from /proc, and whether any of it is still running."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # start time in clock ticks since boot: a pid reused later is another process
    cmdline: str


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return int(fields[1]), int(fields[19]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> list[Proc]:
    """Every process under `root` now (children in sessions of their own included)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents.setdefault(stat[0], []).append(int(entry))
    found: list[Proc] = []
    todo = list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is not None:
            found.append(Proc(pid, stat[1], _cmdline(pid)))
            todo.extend(parents.get(pid, []))
    return found


def running(procs: list[Proc]) -> list[Proc]:
    """Those of `procs` still running (the same process, not a zombie)."""
    alive = []
    for proc in procs:
        stat = _stat(proc.pid)
        if stat is not None and stat[1] == proc.start and stat[2] != "Z":
            alive.append(proc)
    return alive


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The log's content once `text` is in it; fails (with the log's tail) after `timeout` or when `proc` ends."""
    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        assert proc.poll() is None, f"exited with {proc.returncode} before {text!r}:\n{content[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{content[-3000:]}"
        time.sleep(0.1)


def make(target: str, log: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """`make <target> args...` in the repository, leading a process group of its own as a shell job does (the
    terminal's SIGINT and SIGHUP go to that group); `install` is taken as done (the suite runs in that venv)."""
    return subprocess.Popen(
        ["make", "--no-print-directory", "-o", "install", target, *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

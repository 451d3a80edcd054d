"""Child processes of the local launchers (`make demo`, `make simulate`) that never outlive them.

How the signals reach everything:
- `stop_on_signals()`: SIGINT (Ctrl-C), SIGTERM (what `make` passes on to its child when it is terminated) and
  SIGHUP (the terminal closed, the ssh session dropped) raise `Stopped` in the launcher's main thread, so every
  `finally` and `with` block runs: children stopped, the edgeHub rig's mosquitto and hub emulator stopped, temp
  folders removed. A signal while that clean-up runs only hurries it (children killed instead of waited for).
  A SIGHUP the launcher was started with ignored (`nohup make simulate`) stays ignored; SIGINT is taken even when
  a shell started the launcher in the background with it ignored.
- `ChildProcesses` starts each child in a session of its own, so that a terminal's signal reaches the launcher
  alone and the children stop in order: on leaving the `with` block, in reverse start order, SIGTERM to the child's
  process group (its own children included), its grace period, then SIGKILL.

    stop_on_signals()
    with ChildProcesses() as children:
        module = children.start("the module", [sys.executable, "-m", "edge_inference"], grace=30)
        ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_stopping = threading.Event()  # a stop is under way: a signal now only hurries it
_hurry = threading.Event()


class Stopped(BaseException):
    """The launcher was asked to stop by a signal (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _stopping.is_set():
        _hurry.set()
        return
    _stopping.set()
    raise Stopped(signum)


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise `Stopped` in the main thread from now on (an ignored SIGHUP stays so)."""
    _stopping.clear()
    _hurry.clear()
    for signum in STOP_SIGNALS:
        if signum != signal.SIGHUP or signal.getsignal(signum) is not signal.SIG_IGN:  # `nohup`: SIGHUP ignored
            signal.signal(signum, _on_signal)


def stopping() -> None:
    """Say that the launcher is stopping of its own accord: a signal from now on hurries the clean-up."""
    _stopping.set()


class ChildProcesses:
    """The launcher's children, each in a session of its own; all stopped, in reverse order, on `__exit__`."""

    def __init__(self) -> None:
        self._children: list[tuple[str, subprocess.Popen[Any], float]] = []

    def start(self, name: str, cmd: Sequence[str], *, grace: float = 5.0, **popen: Any) -> subprocess.Popen[Any]:
        """Start `cmd` in a new session; `grace` is how long `stop` waits after SIGTERM before SIGKILL."""
        proc: subprocess.Popen[Any] = subprocess.Popen(list(cmd), start_new_session=True, **popen)
        self._children.append((name, proc, grace))
        return proc

    def stop(self, proc: subprocess.Popen[Any]) -> int:
        """SIGTERM to `proc`'s process group, up to its grace period (less once hurried), then SIGKILL; its code."""
        name, grace = next(((n, g) for n, p, g in self._children if p is proc), ("a child", 5.0))
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while proc.poll() is None and time.monotonic() < deadline and not _hurry.is_set():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.1)
            if proc.poll() is None:
                if not _hurry.is_set():
                    print(f"{name} did not stop within {grace:.0f} s; killing it", flush=True)
                _signal_group(proc, signal.SIGKILL)
        return proc.wait()

    def stop_all(self) -> None:
        """Stop every child, the last started first (a signal from now on only hurries this)."""
        stopping()
        for _name, proc, _grace in reversed(self._children):
            self.stop(proc)

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


def _signal_group(proc: subprocess.Popen[Any], signum: int) -> None:
    """`signum` to the process group the child leads (it and whatever it started), or to it alone."""
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:  # not the leader of its group after all
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

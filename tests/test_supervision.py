"""Supervision: every long-lived thread of a running module is watched; when one dies the module stops and exits
with code 1, so that IoT Edge restarts it.

Each test runs the whole module in-process (app.Module: real shares in temp dirs, real ONNX Runtime, real HTTP and
metrics servers on free ports; the IoT owner thread against the mosquitto edgeHub rig), kills one thread from the
outside by raising an exception in it (CPython's PyThreadState_SetAsyncExc: the thread dies wherever it is, as
from a bug), and checks `Module.wait()` - what `python -m edge_inference` returns - gives exit code 1 and that
the module shut down without leaving a thread behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge_inference.app import EXIT_FATAL, EXIT_OK, Module
from tests.http_support import assert_no_new_threads, in_process_settings
from tests.onnx_models import build_constant_model, yolov8_output

HOSTS = ("127.0.0.12", "127.0.0.13", "127.0.0.14")


class Killed(SystemExit):
    """What a killed thread dies of: like SystemExit, nothing in the module catches it as an error, and event loops
    (asyncio, Tornado) let it through instead of logging it as a failed callback."""


def kill(thread: threading.Thread) -> None:
    """Raise `Killed` inside `thread` at its next Python instruction."""
    assert thread.ident is not None and thread.is_alive(), thread
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Killed))
    assert hit == 1, f"no thread {thread.name} to kill"


def named(name: str) -> threading.Thread:
    found = [t for t in threading.enumerate() if t.name == name]
    assert len(found) == 1, f"threads named {name}: {found} (all: {[t.name for t in threading.enumerate()]})"
    return found[0]


@pytest.fixture
def make_module(tmp_path: Path) -> Iterator[Callable[..., Module]]:
    before = set(threading.enumerate())
    model = build_constant_model(
        tmp_path / "tiny.onnx", yolov8_output([(20, 32, 10, 10)], [[0.9, 0.05]]), names="{0: 'scratch', 1: 'dent'}"
    )
    modules: list[Module] = []

    def make(env: dict[str, str] | None = None, **overrides: Any) -> Module:
        settings = in_process_settings(
            tmp_path,
            model,
            rescan_interval_seconds=0.5,
            progress_interval_seconds=1,  # every loop wakes often: an injected exception lands soon
            decode_workers=1,
            shutdown_timeout_seconds=5,
            iot_timeout_seconds=5,
            **overrides,
        )
        module = Module(settings, env={} if env is None else env)
        modules.append(module)
        module.start()
        return module

    yield make
    for module in modules:
        module.shutdown()  # once: a module whose wait() returned is already stopped
    # the IoT SDK keeps two executors for the life of the process once it has been used: not the module's
    sdk_executors = {t for t in threading.enumerate() if t.name in ("pipeline", "callback")}
    assert_no_new_threads(before | sdk_executors, grace=10.0)


def poke(module: Module) -> None:
    """A request to each server: an idle event loop sleeps in select() and only runs Python (where an injected
    exception lands) when something happens, as it would on the first request after a fault."""
    for server in (module.http, module.metrics_server):
        if server is not None:
            with contextlib.suppress(requests.RequestException):
                requests.get(f"http://127.0.0.1:{server.port}/health", timeout=2)


def exit_code_after(module: Module, timeout: float = 20.0) -> int:
    """`Module.wait()` on a helper thread (it blocks until the module has stopped)."""
    codes: list[int] = []
    waiter = threading.Thread(target=lambda: codes.append(module.wait()), name="test-wait")
    waiter.start()
    waiter.join(timeout)
    assert not waiter.is_alive(), "the module did not stop after a thread died"
    return codes[0]


PIPELINE_AND_FRONT_END_THREADS = [
    "decode-0",
    "inference",
    "dispatch",
    "housekeeping",
    "watcher-settle",
    "watcher-scan",
    "http-api",
    "metrics-server",
    "disk-space-monitor",
    "progress-monitor",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("thread_name", PIPELINE_AND_FRONT_END_THREADS)
def test_a_killed_thread_stops_the_module_with_exit_code_1(
    make_module: Callable[..., Module], thread_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # given a running module, ready
    module = make_module()
    assert module.commands.readiness() == (True, "ready")
    # when one of its threads dies
    kill(named(thread_name))
    poke(module)
    # then the module stops with exit code 1, saying which thread died and of what
    assert exit_code_after(module) == EXIT_FATAL
    assert f"stopping: {thread_name} died: Killed" in caplog.text


@pytest.mark.timeout(60)
def test_a_killed_local_twin_watch_stops_the_module_with_exit_code_1(
    make_module: Callable[..., Module], tmp_path: Path
) -> None:
    # outside IoT Edge the local twin file's watch takes the IoT client's place: watched the same way
    module = make_module(local_twin_path=tmp_path / "twin.json")
    assert module.local_twin is not None
    kill(named("local-twin"))
    assert exit_code_after(module) == EXIT_FATAL
    assert module.supervisor.describe_death().startswith("local-twin died: Killed")


@pytest.mark.timeout(60)
def test_a_dead_file_system_observer_stops_the_module_with_exit_code_1(make_module: Callable[..., Module]) -> None:
    # the watchdog observer is watchdog's own thread: the watcher's settle worker checks it is alive
    module = make_module()
    observer = module.watcher._observer
    assert observer is not None
    kill(observer)
    assert exit_code_after(module) == EXIT_FATAL
    assert "observer" in module.supervisor.describe_death()


@pytest.mark.timeout(60)
def test_a_module_asked_to_stop_exits_0_and_a_readiness_probe_sees_a_dead_stage(
    make_module: Callable[..., Module],
) -> None:
    module = make_module()
    # a dead stage is seen by /ready at once, before the module has stopped
    kill(named("inference"))
    deadline = time.monotonic() + 5
    while module.commands.readiness()[0] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert module.commands.readiness()[1].startswith("a pipeline stage died: inference: ")
    assert exit_code_after(module) == EXIT_FATAL
    # and a module only asked to stop exits 0
    calm = make_module()
    calm.request_stop()
    assert exit_code_after(calm) == EXIT_OK


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from tools.edgehub_rig import EdgeHubRig, pick_loopback_host

    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    with EdgeHubRig(tmp_path / "rig", host=pick_loopback_host(HOSTS)) as r:
        for name, value in r.env().items():
            monkeypatch.setenv(name, value)
        yield r


@pytest.mark.timeout(90)
def test_a_killed_iot_owner_thread_stops_the_module_with_exit_code_1(
    rig: Any, make_module: Callable[..., Module]
) -> None:
    module = make_module(env=rig.env())
    assert module.iot is not None
    kill(named("iot-edge-client"))
    assert exit_code_after(module, timeout=40) == EXIT_FATAL
    assert module.supervisor.describe_death().startswith("iot-edge-client died: Killed")

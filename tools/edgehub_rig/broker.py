"""A real mosquitto broker for the edgeHub rig, run as a subprocess.

Two listeners on the rig's host: TLS on 8883 (the port the IoT SDK always uses) for the module, and plain MQTT on a
free port for the hub emulator. Persistence is on, so sessions (subscriptions, queued QoS 1 messages) survive a
stop/start: the SDK does not resubscribe after a broker restart that lost its session.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from tools.edgehub_rig.ca import LOOPBACK_HOSTS, RigPki

log = logging.getLogger(__name__)

MQTTS_PORT = 8883
MAX_PACKET_SIZE = 1024 * 1024  # IoT Hub messages are at most 256 KB; leave room for topics and twins

_CONNECTED = re.compile(r"New client connected from \S+ as (?P<id>\S+) \(.*?(?:u'(?P<user>[^']*)')?\)\.?$")
_GONE = re.compile(
    r"(?:Client (?P<a>\S+) (?:disconnected|closed its connection|has exceeded timeout)"
    r"|Socket error on client (?P<b>\S+), disconnecting)"
)


class BrokerError(RuntimeError):
    """mosquitto is missing, did not start, or could not bind its ports."""


@dataclass(frozen=True)
class ClientConnection:
    """One CONNECT seen by the broker (from its log)."""

    client_id: str
    username: str | None
    at: float


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_loopback_host(candidates: tuple[str, ...] = LOOPBACK_HOSTS[1:]) -> str:
    """First loopback address whose port 8883 is free (default 127.0.0.2..20; 127.0.0.1 is left to `make simulate`).

    Under pytest-xdist each worker starts its search at a different address (gw0 -> the first, gw1 -> the second...)
    so that parallel workers do not race for the same one.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    offset = int(worker) % len(candidates) if worker.isdigit() else 0
    for host in candidates[offset:] + candidates[:offset]:
        if port_is_free(host, MQTTS_PORT):
            return host
    raise BrokerError(f"port {MQTTS_PORT} is taken on every candidate loopback address")


def _wait_port(host: str, port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


_RUNNING: weakref.WeakSet[MosquittoBroker] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """Last resort: never leave a broker behind when the interpreter exits without closing its rig."""
    for broker in list(_RUNNING):
        broker.stop(graceful=False, timeout=2)


class MosquittoBroker:
    """mosquitto with a TLS listener for the module and a plain one for the hub emulator."""

    def __init__(self, workdir: Path, host: str, pki: RigPki, persistence: bool = True) -> None:
        self.workdir = workdir
        self.host = host
        self.pki = pki
        self.persistence = persistence
        self.plain_port = free_port(host)
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.connections: list[ClientConnection] = []
        self._connected: set[str] = set()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._up = threading.Event()

    def _config(self) -> str:
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            f"max_packet_size {MAX_PACKET_SIZE}",
            "max_queued_messages 10000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            "autosave_interval 1",
            "",
            f"listener {MQTTS_PORT} {self.host}",
            f"cafile {self.pki.ca_cert}",
            f"certfile {self.pki.server_cert}",
            f"keyfile {self.pki.server_key}",
            "tls_version tlsv1.2",
            "",
            f"listener {self.plain_port} {self.host}",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else mosquitto drops to `mosquitto`, which cannot write the workdir
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        if not port_is_free(self.host, MQTTS_PORT):
            raise BrokerError(f"{self.host}:{MQTTS_PORT} is already in use (another rig or broker on this address?)")
        self.config_path.write_text(self._config())
        try:
            self._proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as e:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto, or `make apt-deps`)") from e
        _RUNNING.add(self)
        self._up.clear()
        self._reader = threading.Thread(target=self._read_log, args=(self._proc,), name="mosquitto-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        # "mosquitto version X running" is logged once every listener is bound; a port that accepts could be
        # another broker's (two rigs racing for one address), so the log line is what counts
        while not self._up.wait(0.02):
            if not self.running or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop(graceful=False)
                if "Address already in use" in tail:
                    raise BrokerError(f"{self.host}:{MQTTS_PORT} is already in use; log:\n{tail}")
                raise BrokerError(f"mosquitto did not start on {self.host}; log:\n{tail}")
        for port in (MQTTS_PORT, self.plain_port):
            if not _wait_port(self.host, port, deadline) or not self.running:
                self.stop()
                raise BrokerError(f"mosquitto did not listen on {self.host}:{port}; log:\n{self.log_tail()}")
        log.debug("mosquitto up on %s:%d (TLS) and :%d (plain)", self.host, MQTTS_PORT, self.plain_port)

    def stop(self, graceful: bool = True, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        _RUNNING.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        with self._lock:
            self._connected.clear()

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with self.log_path.open("ab") as sink:
            for raw in proc.stderr:
                sink.write(raw)
                sink.flush()
                self._note(raw.decode(errors="replace").rstrip())

    def _note(self, line: str) -> None:
        text = line.split(": ", 1)[1] if re.match(r"^\d+: ", line) else line
        if text.startswith("mosquitto version") and text.endswith(" running"):
            self._up.set()
        elif m := _CONNECTED.search(text):
            with self._lock:
                self.connections.append(ClientConnection(m["id"], m["user"], time.time()))
                self._connected.add(m["id"])
        elif m := _GONE.search(text):
            with self._lock:
                self._connected.discard(m["a"] or m["b"])

    def connected_client_ids(self) -> set[str]:
        with self._lock:
            return set(self._connected)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

"""edgeHub test rig without Docker: a real mosquitto broker (TLS), a hub emulator and a fake workload API.

The module under test uses the real `azure-iot-device` SDK against it, either through the local-dev variables
(`rig.env()`: EdgeHubConnectionString + EdgeModuleCACertificateFile) or the production path (`rig.workload_env()`:
the seven IOTEDGE_* variables and a workload socket that serves the trust bundle and signs SAS tokens).

    with EdgeHubRig(tmp_path, host="127.0.0.2") as rig:
        client = IoTHubModuleClient.create_from_edge_environment()   # with rig.env() in os.environ
        ...
        rig.set_desired({"confidenceThreshold": 0.7})
        rig.wait_reported(lambda r: r.get("confidenceThreshold", {}).get("ac") == 200)
        rig.wait_messages(1, output="detections")

The SDK always connects to port 8883, so parallel rigs need their own loopback address (`pick_loopback_host()`);
the test certificate names 127.0.0.1..127.0.0.20 and `localhost`.
"""

from __future__ import annotations

import base64
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from tools.edgehub_rig.broker import MQTTS_PORT, BrokerError, ClientConnection, MosquittoBroker, pick_loopback_host
from tools.edgehub_rig.ca import LOOPBACK_HOSTS, RigPki, create_test_pki
from tools.edgehub_rig.hub import CapturedMessage, HubEmulator
from tools.edgehub_rig.workload import FakeWorkloadApi, WorkloadRequest

__all__ = [
    "LOOPBACK_HOSTS",
    "MQTTS_PORT",
    "BrokerError",
    "CapturedMessage",
    "ClientConnection",
    "EdgeHubRig",
    "WorkloadRequest",
    "pick_loopback_host",
]

log = logging.getLogger(__name__)

IOTHUB_HOSTNAME = "edgehub-rig.azure-devices.net"
WORKLOAD_API_VERSION = "2019-01-30"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes


class EdgeHubRig:
    """Context manager: broker + hub emulator up on enter, everything stopped (and mosquitto killed) on exit."""

    def __init__(
        self,
        workdir: Path,
        host: str = "127.0.0.1",
        device_id: str = "edge-device",
        module_id: str = "edge-inference",
        persistence: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.device_id = device_id
        self.module_id = module_id
        self.persistence = persistence
        self.module_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.generation_id = "rig-" + secrets.token_hex(4)
        self.iothub_hostname = IOTHUB_HOSTNAME
        self.pki: RigPki | None = None
        self.broker: MosquittoBroker | None = None
        self.hub: HubEmulator | None = None
        self.workload: FakeWorkloadApi | None = None
        self._socket_dir: Path | None = None
        self.start_seconds: float | None = None
        self._started = False

    # ---- life cycle -------------------------------------------------------------------------------------------
    @classmethod
    def on_free_loopback(cls, workdir: Path, attempts: int = 5, **kwargs: Any) -> EdgeHubRig:
        """A started rig on the first free 127.0.0.2..20 address, retrying when a parallel run takes it first.

        Use it like the constructor: `with EdgeHubRig.on_free_loopback(tmp_path) as rig:`.
        """
        for attempt in range(1, attempts + 1):
            rig = cls(Path(workdir), host=pick_loopback_host(), **kwargs)
            try:
                return rig.start()
            except BrokerError as e:
                if "already in use" not in str(e) or attempt == attempts:
                    raise
                log.info("%s:%d taken by a parallel run; trying another address", rig.host, MQTTS_PORT)
                time.sleep(0.1 * attempt)
        raise AssertionError("unreachable")

    def start(self) -> EdgeHubRig:
        """Start the broker and the hub emulator (a no-op on a started rig)."""
        if self._started:
            return self
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.pki = create_test_pki(self.workdir, self.host)
            self.broker = MosquittoBroker(self.workdir, self.host, self.pki, persistence=self.persistence)
            self.broker.start()
            self.hub = HubEmulator(self.host, self.broker.plain_port, self.device_id, self.module_id)
            self.hub.start()
        except BaseException:
            self.close()
            raise
        self._started = True
        self.start_seconds = time.monotonic() - began
        log.info(
            "edgeHub rig up on %s:%d in %.2fs (workdir %s)", self.host, MQTTS_PORT, self.start_seconds, self.workdir
        )
        return self

    def close(self) -> None:
        """Stop everything this rig started; safe to call twice and after a failed start."""
        self._started = False
        if self.hub is not None:
            self.hub.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.workload is not None:
            self.workload.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def __enter__(self) -> EdgeHubRig:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _parts(self) -> tuple[RigPki, MosquittoBroker, HubEmulator]:
        if self.pki is None or self.broker is None or self.hub is None:
            raise RuntimeError("the rig is not started (use it as a context manager)")
        return self.pki, self.broker, self.hub

    # ---- what the module gets -----------------------------------------------------------------------------------
    @property
    def connection_string(self) -> str:
        return (
            f"HostName={self.iothub_hostname};DeviceId={self.device_id};ModuleId={self.module_id};"
            f"SharedAccessKey={self.module_key};GatewayHostName={self.host}"
        )

    def env(self) -> dict[str, str]:
        """Local-dev variables for `create_from_edge_environment()`; contains the module key (do not log)."""
        pki, _, _ = self._parts()
        return {"EdgeHubConnectionString": self.connection_string, "EdgeModuleCACertificateFile": str(pki.ca_cert)}

    def workload_env(self) -> dict[str, str]:
        """The seven IOTEDGE_* variables, backed by the fake workload API (started on the first call)."""
        pki, _, _ = self._parts()
        if self.workload is None:
            socket_path = self.workdir / "workload.sock"
            if len(str(socket_path)) > _MAX_SOCKET_PATH:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="ehrig-"))
                socket_path = self._socket_dir / "workload.sock"
            self.workload = FakeWorkloadApi(
                socket_path, self.module_id, self.generation_id, self.module_key, pki.ca_pem()
            )
            self.workload.start()
        return {
            "IOTEDGE_WORKLOADURI": self.workload.uri,
            "IOTEDGE_DEVICEID": self.device_id,
            "IOTEDGE_MODULEID": self.module_id,
            "IOTEDGE_MODULEGENERATIONID": self.generation_id,
            "IOTEDGE_IOTHUBHOSTNAME": self.iothub_hostname,
            "IOTEDGE_GATEWAYHOSTNAME": self.host,
            "IOTEDGE_APIVERSION": WORKLOAD_API_VERSION,
        }

    def workload_requests(self) -> list[WorkloadRequest]:
        return [] if self.workload is None else list(self.workload.requests)

    # ---- twin ---------------------------------------------------------------------------------------------------
    @property
    def desired(self) -> dict[str, Any]:
        return self._parts()[2].desired

    @property
    def reported(self) -> dict[str, Any]:
        return self._parts()[2].reported

    def reported_patches(self) -> list[dict[str, Any]]:
        """Every reported patch the module sent, each with the `$version` it produced."""
        return self._parts()[2].reported_patches()

    def set_desired(self, patch: dict[str, Any]) -> int:
        return self._parts()[2].set_desired(patch)

    def wait_reported(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        return self._parts()[2].wait_reported(predicate, timeout)

    # ---- methods and messages -----------------------------------------------------------------------------------
    def invoke_method(self, name: str, payload: Any, timeout: float = 10) -> tuple[int, Any]:
        return self._parts()[2].invoke_method(name, payload, timeout)

    def send_input(
        self,
        input_name: str,
        body: bytes | str | dict[str, Any] | list[Any],
        properties: dict[str, str] | None = None,
    ) -> None:
        self._parts()[2].send_input(input_name, body, properties)

    def messages(self, output: str | None = None) -> list[CapturedMessage]:
        return self._parts()[2].messages(output)

    def wait_messages(
        self,
        count: int,
        output: str | None = None,
        timeout: float = 10,
        predicate: Callable[[CapturedMessage], bool] | None = None,
    ) -> list[CapturedMessage]:
        return self._parts()[2].wait_messages(count, output, timeout, predicate)

    def clear_messages(self) -> None:
        self._parts()[2].clear_messages()

    # ---- outages --------------------------------------------------------------------------------------------------
    def stop_broker(self, graceful: bool = True) -> None:
        """Take the broker down (SIGTERM saves the sessions; graceful=False is a SIGKILL crash)."""
        self._parts()[1].stop(graceful=graceful)

    def start_broker(self, wait_hub: float = 10.0) -> None:
        """Bring the broker back on the same ports; returns once the hub emulator has reconnected."""
        _, broker, hub = self._parts()
        broker.start()
        hub.wait_ready(wait_hub)

    @property
    def broker_running(self) -> bool:
        return self._parts()[1].running

    def connected_clients(self) -> int:
        """Clients connected to the broker now, not counting the hub emulator."""
        return len(self.connected_client_ids())

    def connected_client_ids(self) -> set[str]:
        return {c for c in self._parts()[1].connected_client_ids() if not c.startswith("edgehub-rig-hub/")}

    def connections(self) -> list[ClientConnection]:
        """Every CONNECT the broker logged (client id, username), the hub emulator's excluded."""
        return [c for c in self._parts()[1].connections if not c.client_id.startswith("edgehub-rig-hub/")]

    def wait_connected(self, client_id: str | None = None, timeout: float = 30.0) -> None:
        """Until the module (client id `<device>/<module>` by default) is connected to the broker."""
        wanted = client_id or f"{self.device_id}/{self.module_id}"
        deadline = time.monotonic() + timeout
        while wanted not in self.connected_client_ids():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{wanted} did not connect within {timeout}s")
            time.sleep(0.05)

"""Fake IoT Edge workload API: what `create_from_edge_environment()` talks to inside a real IoT Edge module.

An HTTP server on a unix socket (IOTEDGE_WORKLOADURI=unix://<workdir>/workload.sock) with the two calls the SDK makes
(azure/iot/device/iothub/edge_hsm.py): `GET /trust-bundle` -> {"certificate": <CA PEM>} and
`POST /modules/<module>/genid/<genid>/sign` {"keyId", "algo", "data"} -> {"digest": base64 HMAC-SHA256 with the key}.
Every request is recorded so a test can assert that the module fetched the bundle and signed with its key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import socketserver
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SIGN_PATH = re.compile(r"^/modules/(?P<module>[^/]+)/genid/(?P<genid>[^/]+)/sign$")


@dataclass(frozen=True)
class WorkloadRequest:
    """One request the fake workload API answered (`data` is the decoded string that was signed, if any)."""

    method: str
    path: str
    api_version: str | None
    status: int
    module_id: str | None = None
    generation_id: str | None = None
    key_id: str | None = None
    algo: str | None = None
    data: str | None = None


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    api: FakeWorkloadApi


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("workload api: %s", format % args)

    def address_string(self) -> str:
        return "workload.sock"

    def _reply(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        api_version = urllib.parse.parse_qs(url.query).get("api-version", [None])[0]
        if url.path == "/trust-bundle":
            self.server.api.record(WorkloadRequest("GET", url.path, api_version, 200))
            self._reply(200, {"certificate": self.server.api.trust_bundle})
        else:
            self.server.api.record(WorkloadRequest("GET", url.path, api_version, 404))
            self._reply(404, {"message": f"no such resource {url.path}"})

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        api_version = urllib.parse.parse_qs(url.query).get("api-version", [None])[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        api = self.server.api
        m = _SIGN_PATH.match(url.path)
        if m is None:
            api.record(WorkloadRequest("POST", url.path, api_version, 404))
            self._reply(404, {"message": f"no such resource {url.path}"})
            return
        module_id = urllib.parse.unquote(m["module"])
        genid = urllib.parse.unquote(m["genid"])
        try:
            req = json.loads(raw)
            key_id, algo, data = req["keyId"], req["algo"], base64.b64decode(req["data"], validate=True)
        except (ValueError, KeyError, TypeError):
            api.record(WorkloadRequest("POST", url.path, api_version, 400, module_id, genid))
            self._reply(400, {"message": "body must be {keyId, algo, data(base64)}"})
            return
        status = 200
        if module_id != api.module_id or genid != api.generation_id:
            status = 404
        elif algo != "HMACSHA256" or key_id != "primary":
            status = 400
        api.record(
            WorkloadRequest(
                "POST", url.path, api_version, status, module_id, genid, key_id, algo, data.decode(errors="replace")
            )
        )
        if status != 200:
            self._reply(status, {"message": "unknown module/generation or unsupported key/algorithm"})
            return
        digest = hmac.new(base64.b64decode(api.module_key), data, hashlib.sha256).digest()
        self._reply(200, {"digest": base64.b64encode(digest).decode()})


class FakeWorkloadApi:
    """The workload socket for one module; `requests` lists what it was asked."""

    def __init__(self, socket_path: Path, module_id: str, generation_id: str, module_key: str, trust_bundle: str):
        self.socket_path = socket_path
        self.module_id = module_id
        self.generation_id = generation_id
        self.module_key = module_key
        self.trust_bundle = trust_bundle
        self.requests: list[WorkloadRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"unix://{self.socket_path}"

    def record(self, request: WorkloadRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def sign_requests(self) -> list[WorkloadRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def start(self) -> None:
        if self._server is not None:
            return
        if self.socket_path.exists():
            self.socket_path.unlink()
        server = _Server(str(self.socket_path), _Handler)
        server.api = self
        os.chmod(self.socket_path, 0o666)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.name = "fake-workload-api"
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self.socket_path.unlink(missing_ok=True)

"""A model file server on loopback for the rollout tests and `make simulate-rollout`: HTTPS with the edgeHub rig's
test CA (tools/edgehub_rig/ca.py), or plain HTTP, with the faults a field download meets, switched per file.

    with ModelServer(workdir) as server:            # server.ca_file: the CA to trust (MODEL_CA_FILE)
        server.put("d7.onnx", data)
        url = server.url("d7.onnx")                 # https://127.0.0.1:<port>/models/d7.onnx?sv=...&sig=<secret>
        server.cut_once["d7.onnx"] = 5000           # the first answer stops after 5000 bytes of the body
        server.cut["d7.onnx"] = 5000                # every answer does
        server.stall["d7.onnx"] = 1000              # every answer stops after 1000 bytes and hangs
        server.status["d7.onnx"] = 404              # every answer is this status
        server.ignore_range.add("d7.onnx")          # Range is ignored: the whole body, 200
        server.requests                             # what was asked: path, query, Range header, status

Range requests (`bytes=<n>-`) are answered with 206 and Content-Range, as Azure Blob Storage does.
"""

from __future__ import annotations

import http.server
import re
import secrets
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tools.edgehub_rig.ca import create_test_pki

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass(frozen=True)
class Request:
    path: str
    query: str
    range: str | None
    status: int


class ModelServer:
    """Context manager: a threaded HTTP(S) server on 127.0.0.1 and an ephemeral port."""

    def __init__(self, workdir: Path, *, tls: bool = True, host: str = "127.0.0.1") -> None:
        self.workdir = Path(workdir)
        self.tls = tls
        self.host = host
        self.files: dict[str, bytes] = {}
        self.cut_once: dict[str, int] = {}
        self.cut: dict[str, int] = {}
        self.stall: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.redirect: dict[str, str] = {}
        self.ignore_range: set[str] = set()
        self.requests: list[Request] = []
        self.sas = f"sv=2024-11-04&se=2030-01-01&sr=b&sp=r&sig={secrets.token_urlsafe(24)}"
        self.ca_file: Path | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def put(self, name: str, data: bytes) -> None:
        self.files[name] = data

    def url(self, name: str, *, sas: bool = True) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        port = self._server.server_address[1]
        return f"{scheme}://{self.host}:{port}/models/{name}" + (f"?{self.sas}" if sas else "")

    def asked(self, name: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == f"/models/{name}"]

    def __enter__(self) -> ModelServer:
        handler = _handler(self)
        server = http.server.ThreadingHTTPServer((self.host, 0), handler)
        server.daemon_threads = True
        if self.tls:
            pki = create_test_pki(self.workdir / "pki", self.host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(pki.server_cert, pki.server_key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            self.ca_file = pki.ca_cert
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="model-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._release.set()  # stalled answers end
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


def _handler(owner: ModelServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read `requests`
            return

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            name = parts.path.removeprefix("/models/")
            wanted = self.headers.get("Range")
            status = owner.status.get(name) or (200 if name in owner.files else 404)
            if name in owner.redirect:
                status = 302
            data = owner.files.get(name, b"")
            start = 0
            match = _RANGE.match(wanted or "")
            if status == 200 and match and name not in owner.ignore_range:
                start = int(match.group(1))
                status = 206 if start < len(data) else 416
            owner._record(Request(parts.path, parts.query, wanted, status))
            if status == 302:
                self.send_response(302)
                self.send_header("Location", owner.redirect[name])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if status not in (200, 206):
                body = f"status {status}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if name in owner.stall:
                self.wfile.write(body[: owner.stall[name]])
                self.wfile.flush()
                owner._release.wait(120)
                self.close_connection = True
                return
            cut = owner.cut_once.pop(name, None) or owner.cut.get(name)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler

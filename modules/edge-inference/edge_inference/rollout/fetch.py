"""Model downloads: HTTPS (urllib3) verified against the system CA store plus MODEL_CA_FILE, resumed, capped.

    ModelDownloader.download(url, part, ...)   the body into `<sha256>.onnx.part` (appended to: a part left by a
                                               cut connection or a restart is resumed with `Range: bytes=<n>-`),
                                               then the file's SHA-256 checked, and only then renamed to
                                               `<sha256>.onnx`
    ModelDownloader.fetch_small(url, ...)      a labels file (at most 1 MB), with the same rules
    copy_confined(root, rel, part, ...)        a model from MODELS_DIR into the cache the same way: the path
                                               walked folder by folder without following a symlink
                                               (share/share_fs.py), so it cannot leave MODELS_DIR

Rules: `https` only (plain `http` when MODEL_ALLOW_HTTP=true), redirects followed at most `max_redirects` times
and each target checked by the same rule; a connect and a read timeout (a server that stalls is a failed
attempt); a body larger than MODEL_MAX_MB (announced or streamed) or different from `sizeBytes` is refused;
`Accept-Encoding: identity` (the bytes on disk are the bytes hashed). Transient failures (timeouts, refused or
reset connections, a body cut short, HTTP 408/429/5xx) are retried `attempts` times with doubling back-off while
the model in force keeps serving; anything else fails at once.

Errors are `RolloutError`s whose text is built here and scrubbed of the URL's secrets (`spec.Scrubber`): no query
string, SAS signature or user info reaches a log line, an acknowledgement or getStatus. `ac` is 400 when the
value cannot work (HTTP 4xx, too large, the wrong size or hash) and 500 when the fetch failed (network, TLS,
no space).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import ssl
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as NetTimeout

from edge_inference.errors import RolloutError, SettingsError
from edge_inference.rollout.spec import BadSpec, Scrubber, SpecRules, check_url, redact_url
from edge_inference.share import share_fs
from edge_inference.vision.model_spec import file_sha256

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_LABELS_BYTES = 1024 * 1024
SPACE_MARGIN_BYTES = 64 * 1024 * 1024  # left free on the state volume after a download
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

Progress = Callable[[int, int | None], None]
Wait = Callable[[float], bool]  # sleep up to n seconds; True when the caller should give up (stop, superseded)


class FetchCancelled(Exception):
    """The download was given up: the module stops, or a newer request replaced this one. The part stays."""


class _Transient(Exception):
    """An attempt failed in a way the next attempt may not."""


@dataclass(frozen=True)
class FetchPolicy:
    attempts: int = 5
    backoff_s: float = 2.0  # doubled after each failed attempt
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # no byte for this long: the server stalls
    max_redirects: int = 5


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system CA store, plus MODEL_CA_FILE when set (SettingsError when it cannot be loaded)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
            raise SettingsError(f"MODEL_CA_FILE={ca_file} cannot be loaded as PEM certificates: {reason}") from None
    return context


class ModelDownloader:
    """Fetches model files and labels; one per module, used by the rollout worker's thread."""

    def __init__(self, rules: SpecRules, ca_file: Path | None, policy: FetchPolicy | None = None) -> None:
        self.rules = rules
        self.policy = p = policy or FetchPolicy()
        self._pool = urllib3.PoolManager(
            ssl_context=tls_context(ca_file),
            retries=False,
            timeout=urllib3.Timeout(connect=p.connect_timeout_s, read=p.read_timeout_s),
        )

    # -- what the rollout asks --------------------------------------------------------------------------------
    def download(
        self,
        url: str,
        part: Path,
        *,
        sha256: str,
        size_bytes: int | None,
        scrub: Scrubber,
        progress: Progress,
        wait: Wait,
    ) -> Path:
        """Fetch `url` into `part` (resuming what it holds), check its SHA-256, rename it to `part` without
        `.part`, and return that path."""
        final = part.with_name(part.name.removesuffix(".part"))
        resumed: list[int] = []  # where attempts resumed: a part from before may not belong to this file
        fetch = lambda: self._download_once(url, part, size_bytes, scrub, progress, wait, resumed)  # noqa: E731
        self._with_retries(fetch, url, scrub, wait)
        got, size = file_sha256(part), part.stat().st_size
        if got != sha256 and resumed:
            log.warning(
                "model download from %s: the resumed file does not match its sha256; again from the start",
                redact_url(url),
            )
            part.unlink()
            resumed.clear()
            self._with_retries(fetch, url, scrub, wait)
            got, size = file_sha256(part), part.stat().st_size
        if got != sha256:
            part.unlink(missing_ok=True)
            raise RolloutError(
                f"sha256 mismatch: the download ({size} bytes) hashes to {got}, the twin says {sha256}", 400
            )
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, final)
        return final

    def fetch_small(self, url: str, *, scrub: Scrubber, wait: Wait, limit: int = MAX_LABELS_BYTES) -> bytes:
        """A small file (labels) in memory, with the same rules and retries."""
        body: list[bytes] = []

        def once() -> None:
            body.clear()
            response = self._open(url, {}, scrub)
            try:
                self._check_status(response.status, scrub, url)
                size = 0
                for chunk in _chunks(response):
                    size += len(chunk)
                    if size > limit:
                        raise RolloutError(f"{redact_url(url)}: over {limit // 1024} KB", 400)
                    body.append(chunk)
            finally:
                _done(response)

        self._with_retries(once, url, scrub, wait)
        return b"".join(body)

    # -- attempts ---------------------------------------------------------------------------------------------
    def _with_retries(self, attempt: Callable[[], None], url: str, scrub: Scrubber, wait: Wait) -> None:
        p = self.policy
        delay = p.backoff_s
        for n in range(1, p.attempts + 1):
            try:
                attempt()
                return
            except _Transient as exc:
                reason = scrub(str(exc))
                if n == p.attempts:
                    raise RolloutError(f"download failed {n} times; last: {reason}", 500) from None
                log.warning(
                    "model download from %s: %s; attempt %d of %d in %.1f s",
                    redact_url(url),
                    reason,
                    n + 1,
                    p.attempts,
                    delay,
                )
            if wait(delay):
                raise FetchCancelled()
            delay = min(p.backoff_max_s, delay * 2)

    def _download_once(
        self,
        url: str,
        part: Path,
        size_bytes: int | None,
        scrub: Scrubber,
        progress: Progress,
        wait: Wait,
        resumed: list[int],
    ) -> None:
        have = part.stat().st_size if part.exists() else 0
        if size_bytes is not None and have > size_bytes:
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        response = self._open(url, headers, scrub)
        try:
            if response.status == 416 and have:
                return  # nothing left to send: the part is whole (the hash decides)
            self._check_status(response.status, scrub, url)
            start = self._start_of(response, have)
            if start:
                resumed.append(start)
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            self._check_size(total, size_bytes, part)
            mode = "ab" if start else "wb"
            with open(part, mode) as out:
                if start:
                    out.truncate(start)
                got = start
                for chunk in _chunks(response):
                    out.write(chunk)
                    out.flush()  # on disk as it comes: a kill keeps it for the resume
                    got += len(chunk)
                    if got > self.rules.max_bytes:
                        raise RolloutError(f"the download passed MODEL_MAX_MB ({self._mb(self.rules.max_bytes)})", 400)
                    progress(got, total)
                    if wait(0):
                        raise FetchCancelled()
                out.flush()
                os.fsync(out.fileno())
            if total is not None and got < total:
                raise _Transient(f"the connection ended after {got} of {total} bytes")
        except (ProtocolError, NetTimeout, OSError, HTTPError) as exc:
            raise _Transient(self._describe(exc)) from None
        finally:
            _done(response)

    def _open(self, url: str, headers: dict[str, str], scrub: Scrubber) -> Any:
        """The response for `url` (streamed), redirects followed by the https rule."""
        target = url
        for _ in range(self.policy.max_redirects + 1):
            try:
                response = self._pool.request(
                    "GET",
                    target,
                    headers={**headers, "Accept-Encoding": "identity"},
                    redirect=False,
                    preload_content=False,
                    decode_content=False,
                )
            except SSLError as exc:
                reason = scrub(self._describe(exc))
                hint = (
                    " (is the server's CA in the system store or MODEL_CA_FILE?)" if "VERIFY" in reason.upper() else ""
                )
                raise RolloutError(f"TLS with {redact_url(target)} failed: {reason}{hint}", 500) from None
            except (NetTimeout, NewConnectionError, ProtocolError, OSError, HTTPError) as exc:
                raise _Transient(self._describe(exc)) from None
            if response.status not in _REDIRECTS:
                return response
            location = response.headers.get("Location", "")
            _done(response)
            try:
                target = check_url(urljoin(target, location), "a redirect", self.rules)
            except BadSpec as exc:
                raise RolloutError(scrub(str(exc)), 400) from None
        raise RolloutError(f"more than {self.policy.max_redirects} redirects from {redact_url(url)}", 400)

    @staticmethod
    def _check_status(status: int, scrub: Scrubber, url: str) -> None:
        if status in (200, 206):
            return
        text = f"{redact_url(url)} answered HTTP {status}"
        if status in _TRANSIENT_STATUS:
            raise _Transient(text)
        raise RolloutError(scrub(text), 400)

    @staticmethod
    def _start_of(response: Any, have: int) -> int:
        """Where the body starts in the file: `have` for a 206 that resumes there, 0 for a whole body."""
        if response.status != 206:
            return 0
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != have:
            raise _Transient(f"the server resumed at the wrong place ({response.headers.get('Content-Range')!r})")
        return have

    def _check_size(self, total: int | None, size_bytes: int | None, part: Path) -> None:
        if total is None:
            return
        if total > self.rules.max_bytes:
            raise RolloutError(
                f"the model is {self._mb(total)}: over MODEL_MAX_MB ({self._mb(self.rules.max_bytes)})", 400
            )
        if size_bytes is not None and total != size_bytes:
            raise RolloutError(f"the server sends {total} bytes; the twin's sizeBytes says {size_bytes}", 400)
        have = part.stat().st_size if part.exists() else 0
        free = _free_bytes(part.parent)
        if free is not None and free < total - have + SPACE_MARGIN_BYTES:
            raise RolloutError(f"not enough space in STATE_DIR for {self._mb(total)} ({self._mb(free)} free)", 500)

    @staticmethod
    def _mb(n: int) -> str:
        return f"{n / 1048576:.1f} MB"

    @staticmethod
    def _describe(exc: BaseException) -> str:
        """A short reason for a network error, without the URL (urllib3 quotes its path and query)."""
        if isinstance(exc, NetTimeout):
            return "no answer within the timeout (the server stalls)"
        if isinstance(exc, NewConnectionError):
            return "cannot connect"
        if isinstance(exc, ProtocolError):
            return "the connection broke off"
        if isinstance(exc, SSLError):
            reason = getattr(exc.__context__, "reason", None) or str(exc)
            return f"TLS: {str(reason)[:160]}"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror
        return type(exc).__name__


def copy_confined(root: Path, rel: str, part: Path, *, sha256: str, max_bytes: int) -> Path:
    """Copy `root/rel` (never through a symlink) into `part`, check its SHA-256, rename it without `.part`."""
    try:
        with share_fs.readable_path(root, rel) as path:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except share_fs.OutsideShare:
        raise RolloutError(f"path {rel!r} leads out of MODELS_DIR (a symlinked folder): refused", 400) from None
    except FileNotFoundError:
        raise RolloutError(f"path {rel!r}: no such file in MODELS_DIR", 400) from None
    except ValueError as exc:
        raise RolloutError(f"path {rel!r}: {exc}", 400) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RolloutError(f"path {rel!r} is a symlink: not followed out of MODELS_DIR", 400) from None
        raise RolloutError(f"path {rel!r} in MODELS_DIR cannot be read: {exc.strerror}", 500) from None
    digest = hashlib.sha256()
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise RolloutError(f"path {rel!r} is not a regular file", 400)
    with os.fdopen(fd, "rb") as src:
        if st.st_size > max_bytes:
            raise RolloutError(f"path {rel!r} is {st.st_size / 1048576:.1f} MB: over MODEL_MAX_MB", 400)
        with open(part, "wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    if digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise RolloutError(f"sha256 mismatch: {rel!r} hashes to {digest.hexdigest()}, the twin says {sha256}", 400)
    final = part.with_name(part.name.removesuffix(".part"))
    os.replace(part, final)
    return final


def _done(response: Any) -> None:
    """Close the connection (never reused: a body left unread, cut or stalled must not meet the next request)."""
    response.close()
    response.release_conn()


def _chunks(response: Any) -> Iterator[bytes]:
    """The body as it arrives (each read returns what one receive got): what came before a stall is kept."""
    while chunk := response.read1(CHUNK, decode_content=False):
        yield chunk


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize

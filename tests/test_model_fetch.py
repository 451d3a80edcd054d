"""Model downloads over real HTTPS on loopback (tools/model_server.py, the rig's test CA): trust, resume with
Range, retries, timeouts, the size cap, the hash, redirects, and the SAS token kept out of every error and log
line; copies from MODELS_DIR that never leave it."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from edge_inference.errors import RolloutError, SettingsError
from edge_inference.rollout.fetch import FetchCancelled, FetchPolicy, ModelDownloader, copy_confined, tls_context
from edge_inference.rollout.spec import Scrubber, SpecRules
from tools.model_server import ModelServer

pytestmark = pytest.mark.timeout(60)

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
FAST = FetchPolicy(attempts=3, backoff_s=0.05, backoff_max_s=0.1, connect_timeout_s=2, read_timeout_s=0.8)


@pytest.fixture
def server(tmp_path: Path) -> ModelServer:
    with ModelServer(tmp_path / "server") as srv:
        srv.put("m.onnx", DATA)
        yield srv  # type: ignore[misc]


def fetch(server: ModelServer, tmp_path: Path, name: str = "m.onnx", *, ca: bool = True, **kw: object) -> Path:
    rules = kw.pop("rules", SpecRules())
    downloader = ModelDownloader(rules, server.ca_file if ca else None, FAST)  # type: ignore[arg-type]
    url = str(kw.pop("url", server.url(name)))
    return downloader.download(
        url,
        tmp_path / f"{SHA}.onnx.part",
        sha256=str(kw.pop("sha256", SHA)),
        size_bytes=kw.pop("size_bytes", None),  # type: ignore[arg-type]
        scrub=Scrubber([url]),
        progress=lambda got, total: None,
        wait=lambda seconds: False,
    )


def test_a_download_lands_under_its_hash_only_once_it_matches(server: ModelServer, tmp_path: Path) -> None:
    final = fetch(server, tmp_path)
    assert final == tmp_path / f"{SHA}.onnx" and final.read_bytes() == DATA
    assert not (tmp_path / f"{SHA}.onnx.part").exists()
    assert server.requests[0].query == server.sas  # the SAS reached the server, and only the server


def test_a_server_outside_the_trusted_cas_is_refused(server: ModelServer, tmp_path: Path) -> None:
    with pytest.raises(RolloutError) as refused:
        fetch(server, tmp_path, ca=False)
    assert refused.value.ac == 500 and "MODEL_CA_FILE" in str(refused.value)


def test_a_bad_ca_file_is_a_settings_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(SettingsError, match="MODEL_CA_FILE"):
        tls_context(tmp_path / "ca.pem")


def test_a_cut_connection_resumes_where_it_stopped(server: ModelServer, tmp_path: Path) -> None:
    server.cut_once["m.onnx"] = 100_000
    assert fetch(server, tmp_path).read_bytes() == DATA
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), ("bytes=100000-", 206)]


def test_a_server_that_ignores_range_is_read_from_the_start(server: ModelServer, tmp_path: Path) -> None:
    (tmp_path / f"{SHA}.onnx.part").write_bytes(DATA[:1000])
    server.ignore_range.add("m.onnx")  # answers 200 with the whole body, whatever the Range says
    assert fetch(server, tmp_path).read_bytes() == DATA
    assert [(r.range, r.status) for r in server.requests] == [("bytes=1000-", 200)]


def test_a_resumed_part_that_does_not_match_is_fetched_again_from_the_start(
    server: ModelServer, tmp_path: Path
) -> None:
    (tmp_path / f"{SHA}.onnx.part").write_bytes(b"x" * 1000)  # left by something else, or damaged
    assert fetch(server, tmp_path).read_bytes() == DATA
    assert [(r.range, r.status) for r in server.requests] == [("bytes=1000-", 206), (None, 200)]


@pytest.mark.parametrize(("status", "ac"), [(404, 400), (403, 400), (503, 500)])
def test_http_errors(server: ModelServer, tmp_path: Path, status: int, ac: int) -> None:
    server.status["m.onnx"] = status
    with pytest.raises(RolloutError) as refused:
        fetch(server, tmp_path)
    assert refused.value.ac == ac and f"HTTP {status}" in str(refused.value)
    assert len(server.requests) == (1 if ac == 400 else FAST.attempts)  # 4xx at once, 5xx retried


def test_a_stalling_server_times_out_and_keeps_what_came(server: ModelServer, tmp_path: Path) -> None:
    server.stall["m.onnx"] = 1000
    with pytest.raises(RolloutError, match="stalls") as refused:
        fetch(server, tmp_path)
    assert refused.value.ac == 500
    assert (tmp_path / f"{SHA}.onnx.part").stat().st_size == 3000  # each attempt resumed after the last


def test_too_large_announced_or_streamed(server: ModelServer, tmp_path: Path) -> None:
    small = SpecRules(max_bytes=200_000)
    with pytest.raises(RolloutError, match="over MODEL_MAX_MB") as refused:
        fetch(server, tmp_path, rules=small)
    assert refused.value.ac == 400
    with pytest.raises(RolloutError, match="sizeBytes says 5"):
        fetch(server, tmp_path, size_bytes=5)


def test_a_wrong_hash_is_refused_and_the_download_dropped(server: ModelServer, tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="sha256 mismatch") as refused:
        fetch(server, tmp_path, sha256="0" * 64)
    assert refused.value.ac == 400 and not list(tmp_path.glob("*.onnx*"))


def test_redirects_are_followed_to_https_only(server: ModelServer, tmp_path: Path) -> None:
    server.redirect["old.onnx"] = server.url("m.onnx")
    assert fetch(server, tmp_path, "old.onnx").read_bytes() == DATA
    server.redirect["bad.onnx"] = server.url("m.onnx").replace("https:", "http:")
    with pytest.raises(RolloutError, match="only https"):
        fetch(server, tmp_path, "bad.onnx")


def test_plain_http_with_model_allow_http(tmp_path: Path) -> None:
    with ModelServer(tmp_path / "plain", tls=False) as plain:
        plain.put("m.onnx", DATA)
        assert fetch(plain, tmp_path, rules=SpecRules(allow_http=True), ca=False).read_bytes() == DATA


def test_a_cancelled_download_keeps_its_part(server: ModelServer, tmp_path: Path) -> None:
    server.stall["m.onnx"] = 5000
    downloader = ModelDownloader(SpecRules(), server.ca_file, FAST)
    part = tmp_path / f"{SHA}.onnx.part"
    with pytest.raises(FetchCancelled):
        downloader.download(
            server.url("m.onnx"),
            part,
            sha256=SHA,
            size_bytes=None,
            scrub=Scrubber([]),
            progress=lambda g, t: None,
            wait=lambda seconds: seconds > 0,  # asked to stop at the first back-off
        )
    assert part.stat().st_size == 5000


def test_the_sas_token_never_reaches_an_error_or_a_log_line(
    server: ModelServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = server.sas.split("sig=")[1]
    for name, trouble in (("a", "status"), ("b", "stall"), ("c", "cut")):
        server.put(name, DATA)
        getattr(server, trouble)[name] = 503 if trouble == "status" else 10
        with pytest.raises(RolloutError) as refused:
            fetch(server, tmp_path, name)
        assert secret not in str(refused.value) and "sig=" not in str(refused.value)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("edge_inference"))
    assert secret not in ours and "?<redacted>" in ours  # (urllib3's own debug lines: log.py keeps it at WARNING)


def test_labels_are_fetched_small(server: ModelServer) -> None:
    server.put("labels.txt", b"crack\nchip\n")
    downloader = ModelDownloader(SpecRules(), server.ca_file, FAST)
    assert (
        downloader.fetch_small(server.url("labels.txt"), scrub=Scrubber([]), wait=lambda s: False) == b"crack\nchip\n"
    )
    server.put("huge.txt", b"x" * 2000)
    with pytest.raises(RolloutError, match="over 1 KB"):
        downloader.fetch_small(server.url("huge.txt"), scrub=Scrubber([]), wait=lambda s: False, limit=1024)


def test_copies_from_models_dir_never_leave_it(tmp_path: Path) -> None:
    root, outside = tmp_path / "models", tmp_path / "outside"
    (root / "v7").mkdir(parents=True)
    outside.mkdir()
    (root / "v7" / "m.onnx").write_bytes(DATA)
    (outside / "m.onnx").write_bytes(DATA)
    (root / "link.onnx").symlink_to(outside / "m.onnx")
    (root / "dir").symlink_to(outside)
    cache = tmp_path / "cache"
    cache.mkdir()
    part = cache / f"{SHA}.onnx.part"
    assert copy_confined(root, "v7/m.onnx", part, sha256=SHA, max_bytes=10**6).read_bytes() == DATA
    for rel, reason in (
        ("link.onnx", "is a symlink"),
        ("dir/m.onnx", "leads out of MODELS_DIR"),
        ("v7/absent.onnx", "no such file"),
        ("../outside/m.onnx", "escapes"),
        ("v7", "not a regular file"),
    ):
        with pytest.raises(RolloutError, match=reason) as refused:
            copy_confined(root, rel, part, sha256=SHA, max_bytes=10**6)
        assert refused.value.ac == 400
    with pytest.raises(RolloutError, match="sha256 mismatch"):
        copy_confined(root, "v7/m.onnx", part, sha256="1" * 64, max_bytes=10**6)
    with pytest.raises(RolloutError, match="over MODEL_MAX_MB"):
        copy_confined(root, "v7/m.onnx", part, sha256=SHA, max_bytes=1000)

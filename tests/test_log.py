"""Log lines: the IoT Edge format (syslog severity first) per level, the text format, and one line per event.

Given the module's logging set-up, when a record of each level is logged, then the `iotedge` line starts with
the severity IoT Edge's log tools filter by (`<7>` debug ... `<2>` critical) and the UTC time in their layout;
whatever a message holds (CR, LF, ANSI escapes, U+2028/U+2029, NUL, C1 controls), it stays one line in both
formats, so a hostile file name or twin value cannot forge a log line.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_inference.log import escape_controls, setup_logging
from edge_inference.settings import read_settings
from tests.iot_fakes import IOT_EDGE_ENV

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
# The layout IoT Edge's agent parses module logs with: `<level> yyyy-MM-dd HH:mm:ss.fff zzz text`.
IOTEDGE_LINE = re.compile(
    r"^<(?P<severity>[0-7])> (?P<stamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} [+-]\d{2}:\d{2}) (?P<text>.*)$"
)
TEXT_LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (?P<level>[A-Z]+) (?P<logger>\S+) \[(?P<thread>[^]]+)\] "
)


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("level", "severity"),
    [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3), (logging.CRITICAL, 2)],
)
def test_iotedge_format_starts_with_the_syslog_severity_of_each_level(
    level: int, severity: int, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("DEBUG", "iotedge")
    logging.getLogger("edge_inference.test").log(level, "frame %s done", "a.jpg")
    (line,) = _lines(capsys)
    match = IOTEDGE_LINE.match(line)
    assert match, line
    assert int(match["severity"]) == severity
    assert match["stamp"].endswith(" +00:00")
    assert match["text"] == f"{logging.getLevelName(level)} edge_inference.test [MainThread] frame a.jpg done"


def test_iotedge_timestamp_is_utc_with_milliseconds(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "iotedge")
    record = logging.LogRecord("edge_inference", logging.INFO, __file__, 1, "x", None, None)
    record.created, record.msecs = 1796032800.123, 123.0  # 2026-11-30 10:00:00.123 UTC
    logging.getLogger().handle(record)
    assert _lines(capsys) == ["<6> 2026-11-30 10:00:00.123 +00:00 INFO edge_inference [MainThread] x"]


def test_text_format_is_kept_for_local_runs(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "text")
    logging.getLogger("edge_inference.app").warning("share gone")
    (line,) = _lines(capsys)
    match = TEXT_LINE.match(line)
    assert match and match["level"] == "WARNING" and match["logger"] == "edge_inference.app", line
    assert not line.startswith("<")


def test_log_format_setting_auto_follows_the_iot_edge_environment() -> None:
    assert read_settings({}).effective_log_format(in_iot_edge=True) == "iotedge"
    assert read_settings({}).effective_log_format(in_iot_edge=False) == "text"
    assert read_settings({"LOG_FORMAT": "TEXT"}).effective_log_format(in_iot_edge=True) == "text"
    assert read_settings({"LOG_FORMAT": "iotedge"}).effective_log_format(in_iot_edge=False) == "iotedge"


FORGERIES = [
    "a.jpg\n2026-11-30 10:00:00,000 INFO edge_inference.app [MainThread] all frames deleted",
    "a.jpg\r<3> 2026-11-30 10:00:00.000 +00:00 ERROR edge_inference.app [MainThread] forged",
    "a.jpg\x1b[2K\x1b[1G<6> 2026-11-30 10:00:00.000 +00:00 INFO forged",  # erase the line, back to column 1
    "a.jpg\u2028<6> forged\u2029<6> forged again",
    "a.jpg\x85<6> forged after NEL\x00\x07\x7f\x9b31m",
    "a.jpg\x0b\x0c\x1c\x1d\x1e<6> forged",
]


@pytest.mark.parametrize("log_format", ["iotedge", "text"])
@pytest.mark.parametrize("name", FORGERIES, ids=[f"forgery{i}" for i in range(len(FORGERIES))])
def test_a_hostile_name_cannot_forge_a_line_in_either_format(
    log_format: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("INFO", log_format)  # type: ignore[arg-type]
    logging.getLogger("edge_inference.share.watcher").warning("cannot claim %s", name)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n")  # exactly one line
    line = out[:-1]
    assert all(ch.isprintable() for ch in line), repr(line)  # no control or separator character left
    assert line.splitlines() == [line]  # str.splitlines knows every Unicode line boundary
    assert escape_controls(name) in line


def test_exceptions_stay_on_one_line_and_secrets_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "iotedge")
    try:
        raise ValueError("bad\nvalue SharedAccessKey=abc123==")
    except ValueError:
        logging.getLogger("edge_inference").exception("failed")
    (line,) = _lines(capsys)
    assert line.startswith("<3> ") and "Traceback" in line and "\\n" in line
    assert "abc123" not in line and "SharedAccessKey=<redacted>" in line


def test_escapes_are_readable() -> None:
    assert escape_controls("a\tb\r\nc\x1b[0m\u2028\x9b") == "a\\tb\\r\\nc\\x1b[0m\\u2028\\x9b"
    assert escape_controls("café/日本.jpg \\dir\\x.jpg") == "café/日本.jpg \\dir\\x.jpg"  # text and backslashes kept


@pytest.mark.timeout(60)
def test_the_module_logs_in_the_iot_edge_format_inside_iot_edge() -> None:
    # Given the IoT Edge environment and a bad setting, when the module starts, then its one error line
    # has the error severity first (it exits 2 before touching the model or edgeHub).
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{ROOT / 'modules' / 'edge-inference'}:{ROOT}",
        **IOT_EDGE_ENV,
        "CONFIDENCE_THRESHOLD": "high",
    }
    done = subprocess.run([sys.executable, "-m", "edge_inference"], env=env, capture_output=True, text=True, timeout=50)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stdout.splitlines()
    match = IOTEDGE_LINE.match(line)
    assert match and match["severity"] == "3", line
    assert "CONFIDENCE_THRESHOLD='high' is invalid" in line

"""Azure Stack Edge `fileEvents`: relative POSIX paths out, escapes and non-images refused, never raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_inference.iot.file_events import parse_file_events


def event(path: str, change: str = "Created") -> dict[str, str]:
    return {"ChangeType": change, "ShareRelativeFilePath": path, "ShareName": "input"}


@pytest.mark.timeout(10)
def test_ase_event_list_becomes_relative_posix_paths() -> None:
    body = json.dumps([event("\\line1\\cam2\\0001.jpg"), event("\\line1\\cam2\\0002.PNG", "Modified")]).encode()
    assert parse_file_events(body) == ["line1/cam2/0001.jpg", "line1/cam2/0002.PNG"]


@pytest.mark.timeout(10)
def test_single_object_text_and_parsed_bodies() -> None:
    assert parse_file_events(json.dumps(event("a.jpg"))) == ["a.jpg"]
    assert parse_file_events([event("/b/c.jpeg")]) == ["b/c.jpeg"]
    assert parse_file_events(b"\xef\xbb\xbf" + json.dumps(event("d.tif")).encode()) == ["d.tif"]


@pytest.mark.timeout(10)
def test_only_created_and_modified_like_changes() -> None:
    body = [event("a.jpg", "Deleted"), event("b.jpg", "created"), event("c.jpg", "Renamed"), event("d.jpg", "x")]
    assert parse_file_events(body) == ["b.jpg", "c.jpg"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "path",
    [
        "..\\secret.jpg",
        "\\a\\..\\..\\b.jpg",
        "C:\\x.jpg",
        "c:x.jpg",
        "\\\\server\\share\\x.jpg",
        "a\0.jpg",
        "a\n.jpg",
        "",
        "\\",
        "notes.txt",
        "archive.jpg.zip",
        "noext",
        "x" * 5000 + ".jpg",
    ],
)
def test_escaping_or_non_image_paths_refused(path: str) -> None:
    assert parse_file_events([event(path)]) == []


@pytest.mark.timeout(10)
def test_percent_names_are_not_decoded_and_duplicates_collapse() -> None:
    assert parse_file_events([event("\\a%20b.jpg"), event("a%20b.jpg")]) == ["a%20b.jpg"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        "[",
        42,
        None,
        {"ChangeType": "Created"},
        [1, "x", None],
        {"ChangeType": "Created", "ShareRelativeFilePath": 5},
    ],
)
def test_garbage_is_ignored(body: Any) -> None:
    assert parse_file_events(body) == []


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["ChangeType", "ShareRelativeFilePath", "x"]),
            st.text(max_size=30) | st.none() | st.integers(),
            max_size=3,
        ),
        max_size=5,
    )
)
def test_random_events_never_raise_and_never_escape(events: list[dict[str, Any]]) -> None:
    for rel in parse_file_events(events):
        assert not rel.startswith("/") and "\\" not in rel and "\0" not in rel
        assert ".." not in rel.split("/")


@pytest.mark.timeout(10)
def test_a_component_over_255_bytes_skips_only_its_own_entry() -> None:
    # given a message whose first entry has a 300-byte folder name (enqueuing it raised ENAMETOOLONG, and the rest
    # of the message was lost), then two good entries
    long_dir = "d" * 300
    body = [event(f"\\{long_dir}\\a.jpg"), event("\\cam\\b.jpg"), event("\\" + "é" * 128 + ".jpg")]
    # then only the long one is refused (a 2-byte character counts twice: 128 x 2 + 4 bytes is over 255 too)
    assert parse_file_events(body) == ["cam/b.jpg"]
    assert parse_file_events([event("\\" + "n" * 251 + ".jpg")]) == ["n" * 251 + ".jpg"]  # 255 bytes: allowed

"""Property tests for path handling: whatever text arrives as a path (a file name on the share, an ASE file
event, a reprocess pattern), what the module touches stays inside the share.

`parse_file_events` already has its random-event property in tests/test_file_events.py and twin validation
its random-patch property in tests/test_twin.py; these add the building blocks under them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge_inference.iot.file_events import parse_file_events
from edge_inference.log import WarnOnce
from edge_inference.share.claims import safe_join
from edge_inference.share.results import NAME_MAX, fit_name
from edge_inference.share.watcher import FrameWatcher, is_frame_name

ROOT = Path("/srv/share/input")
# Names as the file system gives them: any bytes, surrogate-escaped by os.fsdecode (a Latin-1 `caf\xe9.jpg`).
fs_names = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b).map(os.fsdecode)
segment = st.one_of(
    st.sampled_from(["..", ".", "", "~", "...", "a", "b.jpg", "..jpg", ".hidden.jpg", "\\..\\x", "a\0b"]),
    st.text(min_size=1, max_size=20),
    fs_names,
    fs_names.map(lambda n: n + ".jpg"),
)
rel_paths = st.one_of(
    st.lists(segment, min_size=1, max_size=6).map("/".join),
    st.lists(segment, min_size=1, max_size=6).map(lambda p: "/" + "/".join(p)),
    st.text(max_size=80),
)


def inside(root: Path, path: Path) -> bool:
    norm = os.path.normpath(path)
    return norm == str(root) or norm.startswith(str(root) + os.sep)


@pytest.mark.timeout(60)
@settings(max_examples=1000, deadline=None)
@given(rel_paths)
def test_safe_join_either_refuses_or_stays_inside(rel: str) -> None:
    try:
        joined = safe_join(ROOT, rel)
    except ValueError:
        return
    assert inside(ROOT, joined), (rel, joined)
    assert os.path.normpath(joined) != str(ROOT)  # never the share itself
    assert "\0" not in str(joined)


@pytest.mark.timeout(60)
@settings(max_examples=500, deadline=None)
@given(rel_paths)
def test_watcher_relative_of_any_path_is_inside_and_round_trips(rel: str) -> None:
    watcher = FrameWatcher.__new__(FrameWatcher)  # relative() needs only these fields
    watcher.input_dir = ROOT
    watcher.exclude_dirs = (".edge-inference",)
    watcher._warn_once = WarnOnce(logging.getLogger(__name__))
    assume("\0" not in rel)
    got = watcher.relative(os.path.join(str(ROOT), rel))
    if got is None:
        return
    assert is_frame_name(got.rsplit("/", 1)[-1])
    assert not got.startswith((".edge-inference/", "../", "/"))
    assert inside(ROOT, safe_join(ROOT, got))


@pytest.mark.timeout(60)
@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_frame_names_are_never_hidden_temporary_or_foreign(name: str) -> None:
    if is_frame_name(name):
        assert not name.startswith((".", "~$"))
        assert not name.lower().endswith((".tmp", ".part", ".partial", ".crdownload"))
        assert os.path.splitext(name.lower())[1] in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@pytest.mark.timeout(60)
@settings(max_examples=500, deadline=None)
@given(st.lists(st.fixed_dictionaries({"ChangeType": st.just("Created"), "ShareRelativeFilePath": rel_paths})))
def test_file_event_paths_are_always_joinable_inside_the_share(events: list[dict[str, str]]) -> None:
    for rel in parse_file_events(events):
        assert inside(ROOT, safe_join(ROOT, rel))


@pytest.mark.timeout(60)
@settings(max_examples=500, deadline=None)
@given(
    # names as the file system gives them: valid text, or any bytes surrogate-escaped by os.fsdecode
    st.lists(
        st.one_of(
            st.text(
                alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                min_size=1,
                max_size=90,
            ),
            st.binary(min_size=1, max_size=300).filter(lambda b: b"/" not in b and b"\0" not in b).map(os.fsdecode),
        ),
        min_size=1,
    ),
    st.sampled_from(["", ".json", ".error.json"]),
)
def test_output_names_always_fit_the_file_system_and_stay_distinct(parts: list[str], suffix: str) -> None:
    assume(all(p not in (".", "..") for p in parts))
    rel = "/".join(parts)
    fitted = fit_name(rel, suffix)
    assert len(os.fsencode(fitted.rsplit("/", 1)[-1])) <= NAME_MAX
    assert fitted.rsplit("/", 1)[0] == rel.rsplit("/", 1)[0] or "/" not in rel
    assert fitted.endswith(suffix)
    other = rel + "x"
    assert fit_name(other, suffix) != fitted

"""What the README promises, checked against the code where a test can check it: the /predict status table against
the whole module answering real requests, the module twin table and its patch semantics against the validation,
the frame extensions against the watcher, and the local twin file's example line. (Timings are measured, in
`make bench` and by hand; they are written down, not tested.)"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from edge_inference.app import Module
from edge_inference.control.http_api import _FRAME_ERROR_STATUS
from edge_inference.iot.local_twin import parse_twin_file
from edge_inference.iot.twin import validate_desired
from edge_inference.ops.live_settings import TWIN_PROPERTIES, TwinSettings
from edge_inference.rollout.spec import MODEL_PROPERTIES
from edge_inference.settings import DEFAULT_MODEL_PATH, Settings
from edge_inference.vision.decode import IMAGE_EXTENSIONS
from tests.http_support import JPEG, assert_no_new_threads, in_process_settings
from tests.process_support import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after the line that starts with `heading`."""
    lines = README[README.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip().startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def status_table() -> dict[int, set[str]]:
    """/predict status -> the `error.code`s the README gives for it."""
    return {int(row[0]): set(re.findall(r"`([a-z_]+)`", row[2])) for row in table_after("  | status | when |")}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The whole module in-process on the bundled demo model; its REST API's URL."""
    before = set(threading.enumerate())
    root = tmp_path_factory.mktemp("readme-claims")
    module = Module(in_process_settings(root, DEFAULT_MODEL_PATH, http_max_body_mb=1.0), env={})
    module.start()
    assert module.http is not None
    try:
        yield f"http://127.0.0.1:{module.http.port}"
    finally:
        module.request_stop()
        module.shutdown()
        assert_no_new_threads(before, grace=5.0)


def _multipart_without_image(url: str) -> requests.Response:
    return requests.post(url, files={"note": (None, "no image here")}, timeout=30)


REQUESTS: dict[str, Any] = {
    "an empty POST (no body, no type)": lambda u: requests.post(u, timeout=30),
    "a JPEG as the raw body": lambda u: requests.post(u, data=JPEG, headers={"Content-Type": "image/jpeg"}, timeout=30),
    "a JPEG as multipart field image": lambda u: requests.post(u, files={"image": ("f.jpg", JPEG)}, timeout=30),
    "an empty raw image body": lambda u: requests.post(u, data=b"", headers={"Content-Type": "image/jpeg"}, timeout=30),
    "a multipart body without an image field": _multipart_without_image,
    "bytes that are not an image": lambda u: requests.post(
        u, data=b"hello, not an image", headers={"Content-Type": "image/jpeg"}, timeout=30
    ),
    "a truncated JPEG": lambda u: requests.post(
        u, data=JPEG[: len(JPEG) // 2], headers={"Content-Type": "image/jpeg"}, timeout=30
    ),
    "a bad confidence": lambda u: requests.post(
        u + "?confidence=2", data=JPEG, headers={"Content-Type": "image/jpeg"}, timeout=30
    ),
    "a body over HTTP_MAX_BODY_MB": lambda u: requests.post(
        u, data=b"\xff" * (2 * 1024 * 1024), headers={"Content-Type": "image/jpeg"}, timeout=30
    ),
    "text/plain": lambda u: requests.post(u, data=JPEG, headers={"Content-Type": "text/plain"}, timeout=30),
    "a GET": lambda u: requests.get(u, timeout=30),
    "another path": lambda u: requests.post(u.replace("/predict", "/predictions"), data=JPEG, timeout=30),
}


@pytest.mark.timeout(120)
def test_every_predict_answer_is_in_the_readme_status_table(api: str) -> None:
    table = status_table()
    seen: dict[str, tuple[int, str]] = {}
    for name, send in REQUESTS.items():
        response = send(f"{api}/predict")
        code = "" if response.status_code == 200 else response.json()["error"]["code"]
        seen[name] = (response.status_code, code)
        assert response.status_code in table, f"{name}: {response.status_code} is not in the README's table"
        assert response.status_code == 200 or code in table[response.status_code], (name, response.status_code, code)
    # the claims the issue found wrong: an empty POST is a 415, and the README says so in that row
    assert seen["an empty POST (no body, no type)"] == (415, "unsupported_media_type")
    assert "an empty `POST /predict` (no body, no type) is a 415" in README
    assert seen["a JPEG as the raw body"][0] == seen["a JPEG as multipart field image"][0] == 200


def test_every_frame_error_status_of_the_api_is_in_the_readme_table() -> None:
    table = status_table()
    for code, status in _FRAME_ERROR_STATUS.items():
        assert code in table.get(status, set()), f"{code} -> {status} is not in the README's /predict table"


def _range(text: str) -> tuple[float, float]:
    lo, hi = re.search(r"(\d+(?:\.\d+)?)\.\.(\d+(?:\.\d+)?)", text).groups()  # type: ignore[union-attr]
    return float(lo), float(hi)


def _refused(prop: str, value: Any) -> bool:
    _new, acks = validate_desired({prop: value, "$version": 2}, TwinSettings())
    return acks[prop]["ac"] == 400


def test_the_module_twin_table_is_what_the_validation_takes() -> None:
    rows = table_after("| desired property |")
    props = {row[0].strip("`"): row for row in rows}
    # the live settings, and the model rollout's `model` and `candidate` (checked in test_model_spec)
    expected = {*TWIN_PROPERTIES, *MODEL_PROPERTIES}
    assert set(props) == expected, "the README's twin table and the twin's properties differ"
    boot = TwinSettings.from_boot(Settings()).as_twin()
    for prop, (_name, kind, default, _meaning) in props.items():
        if kind.startswith("number"):
            lo, hi = _range(kind)
            assert not _refused(prop, lo) and not _refused(prop, hi)
            assert _refused(prop, hi + 0.01) and _refused(prop, lo - 0.01) and _refused(prop, "0.5")
        elif kind.startswith("integer"):
            lo, hi = _range(kind)
            assert not _refused(prop, int(lo)) and not _refused(prop, int(hi))
            assert _refused(prop, int(hi) + 1) and _refused(prop, int(lo) - 1) and _refused(prop, 1.5)
        elif kind == "bool":
            assert not _refused(prop, True) and _refused(prop, "yes")
        elif kind == "list of class names":
            assert not _refused(prop, ["dent"]) and _refused(prop, "dent")
        shown_default = re.search(r"\(([^)]+)\)$", default)  # `CONFIDENCE_THRESHOLD` (0.5): the boot setting's
        if shown_default and kind.startswith(("number", "integer")):
            assert float(shown_default.group(1)) == boot[prop], prop
        elif default.startswith("`") and not default.startswith("`{") and "_" not in default:
            assert default.split("`")[1] == json.dumps(boot[prop]), prop


def test_the_patch_semantics_are_as_the_readme_says() -> None:
    assert (
        "the valid properties of a patch are\napplied (`ac: 200`) while an invalid one is refused (`ac: 400`, with the"
        " reason) and its previous value stays in\nforce; a property the patch does not name keeps its value"
    ) in README
    current = TwinSettings(max_detections=300, save_annotated=True)
    new, acks = validate_desired({"confidenceThreshold": 2, "maxDetections": 10, "$version": 5}, current)
    assert new.max_detections == 10 and acks["maxDetections"] == {"value": 10, "ac": 200, "av": 5, "ad": "applied"}
    assert new.confidence_threshold == current.confidence_threshold and acks["confidenceThreshold"]["ac"] == 400
    assert new.save_annotated is True and "saveAnnotated" not in acks  # not named: kept, not acknowledged
    _new, acks = validate_desired({"colour": "red", "$version": 6}, current)
    assert acks["colour"]["ad"] == "unknown property"


def test_the_frame_extensions_the_readme_lists_are_the_ones_taken() -> None:
    sentence = README[README.index("Frames are files ending in") :].split(";", 1)[0]
    assert set(re.findall(r"`(\.[a-z]+)`", sentence)) == IMAGE_EXTENSIONS


def test_the_local_twin_example_line_is_what_the_module_says() -> None:
    problem, _doc = parse_twin_file(b'{"saveAnnotated": true "confidenceThreshold": 0.7}')
    line = f"local twin data/twin.json {problem}; the settings in force stay"
    assert line in README.replace("\n", " ")

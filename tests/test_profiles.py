"""Camera profiles: which profile judges a frame (order, globs, Windows-style names), what the twin refuses, and a
twin patch of `profiles` changing the next frame of the matching folder and no other (the real pipeline)."""

# ruff: noqa: F811 (the pipeline fixtures of test_pipeline.py are imported, then named as test arguments)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_inference.iot.profile_rules import ServedModel
from edge_inference.iot.twin import TwinState, validate_desired
from edge_inference.ops.live_settings import TwinSettings
from edge_inference.ops.profiles import first_match
from edge_inference.settings import read_settings
from edge_inference.vision import roi as regions
from edge_inference.vision.model import OnnxModel
from tests.onnx_models import build_constant_model, yolov8_output
from tests.test_pipeline import frame, model_path, results_of, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)

SERVED = ServedModel("demo-defects", ("scratch", "dent", "spot"))


def applied(profiles: list[dict[str, Any]], current: TwinSettings | None = None) -> tuple[TwinSettings, dict[str, Any]]:
    new, acks = validate_desired({"profiles": profiles, "$version": 3}, current or TwinSettings(), SERVED)
    return new, acks["profiles"]


def test_the_first_matching_profile_wins_by_glob_on_the_relative_path() -> None:
    live, ack = applied(
        [
            {"name": "cam2-night", "match": "line1/cam2/night/**"},
            {"name": "cam2", "match": "line1/cam2/**"},
            {"name": "tops", "match": "line*/top/*.png"},
            {"name": "any-png", "match": "**/*.png"},
        ]
    )
    assert ack["ac"] == 200
    named = {
        path: getattr(first_match(live.profiles, path), "name", None)
        for path in (
            "line1/cam2/night/a/b/0001.jpg",  # nested folders below the glob
            "line1/cam2/0001.jpg",
            "line1/cam20/0001.jpg",  # a folder that only starts like cam2
            "line3/top/0001.png",
            "line3/top/deeper/0001.png",  # * stops at a folder
            "x.png",  # ** matches no folder at all too
            "line1/cam3/0001.jpg",
        )
    }
    assert named == {
        "line1/cam2/night/a/b/0001.jpg": "cam2-night",
        "line1/cam2/0001.jpg": "cam2",
        "line1/cam20/0001.jpg": None,
        "line3/top/0001.png": "tops",
        "line3/top/deeper/0001.png": "any-png",
        "x.png": "any-png",
        "line1/cam3/0001.jpg": None,
    }


def test_windows_style_names_and_globs_match_as_on_the_smb_share() -> None:
    live, ack = applied([{"name": "cam 2", "match": "Line1\\Cam (2)\\**"}, {"name": "brackets", "match": "l[0-9]/*"}])
    assert ack["ac"] == 200
    # ASE file events and Windows line PCs write backslashes and mixed case; the share compares names without case
    assert first_match(live.profiles, "line1/cam (2)/IMG_0001.JPG").name == "cam 2"  # type: ignore[union-attr]
    assert first_match(live.profiles, "LINE1\\CAM (2)\\sub\\x.jpg").name == "cam 2"  # type: ignore[union-attr]
    assert first_match(live.profiles, "l7/x.jpg").name == "brackets"  # type: ignore[union-attr]
    assert first_match(live.profiles, "lx/x.jpg") is None


def test_a_profile_lays_its_fields_and_class_thresholds_over_the_global_ones() -> None:
    base = TwinSettings(confidence_threshold=0.5, class_thresholds=(("dent", 0.7), ("spot", 0.6)))
    live, ack = applied(
        [
            {
                "name": "cam2",
                "match": "cam2/**",
                "confidenceThreshold": 0.3,
                "classThresholds": {"spot": 0.2},
                "alertClasses": ["scratch"],
                "saveAnnotated": True,
            }
        ],
        base,
    )
    assert ack["ac"] == 200 and ack["value"][0]["classThresholds"] == {"spot": 0.2}
    judged = live.for_frame("cam2/1.jpg")
    assert judged.profile is not None and judged.profile.name == "cam2"
    assert judged.confidence_threshold == 0.3 and judged.alert_classes == ("scratch",) and judged.save_annotated
    assert dict(judged.class_thresholds) == {"dent": 0.7, "spot": 0.2}  # the profile's own over the global ones
    other = live.for_frame("cam3/1.jpg")
    assert other.profile is None and other.confidence_threshold == 0.5 and dict(other.class_thresholds)["spot"] == 0.6


@pytest.mark.parametrize(
    ("profile", "reason"),
    [
        ({"name": "a", "match": "a/[b"}, "a [ without its ]"),
        ({"name": "a", "match": "/abs/**"}, "absolute"),
        ({"name": "a", "match": "../up/**"}, "climbs out"),
        ({"name": "a", "match": "a/b**/c"}, "whole folder name"),
        ({"name": "a", "match": "a/**", "roi": {"polygons": [[[0, 0], [1, 1]]]}}, "3 to 256"),
        ({"name": "a", "match": "a/**", "roi": {"polygons": [[[0, 0], [1.2, 0], [1, 1]]]}}, "within 0..1"),
        ({"name": "a", "match": "a/**", "roi": {"polygons": [[[0, 0], [0.5, 0.5], [1, 1]]]}}, "no area"),
        ({"name": "a", "match": "a/**", "roi": {"mode": "crop"}}, "exclusion zones"),
        ({"name": "a", "match": "a/**", "classes": ["scratch", "crack"]}, "unknown class 'crack'"),
        ({"name": "a", "match": "a/**", "classThresholds": {"crack": 0.3}}, "unknown class 'crack'"),
        ({"name": "a", "match": "a/**", "model": "other-model"}, "not the model in service"),
        ({"name": "a", "match": "a/**", "tiling": {"mode": "always", "tileSize": 16}}, "from 32 to 8192"),
        ({"name": "a", "match": "a/**", "tiling": {"mode": "sometimes"}}, "off, auto, always"),
        ({"name": "a", "match": "a/**", "colour": "red"}, "unknown field colour"),
        ({"match": "a/**"}, "name"),
        ({"name": "a"}, "match"),
    ],
)
def test_bad_profiles_are_refused_with_the_reason_and_the_old_ones_stay(profile: dict[str, Any], reason: str) -> None:
    old, _ = applied([{"name": "kept", "match": "line1/**"}])
    new, ack = applied([{"name": "fine", "match": "x/**"}, profile], old)
    assert ack["ac"] == 400 and reason in ack["ad"] and "profiles[1]" in ack["ad"], ack
    assert new.profiles == old.profiles and [p["name"] for p in ack["value"]] == ["kept"]


def test_overlapping_rules_and_globs_that_match_nothing_yet_are_accepted() -> None:
    live, ack = applied(
        [
            {"name": "all", "match": "**"},
            {"name": "shadowed", "match": "line1/**"},
            {"name": "new", "match": "line9/**"},
        ]
    )
    assert ack["ac"] == 200 and [p.name for p in live.profiles] == ["all", "shadowed", "new"]
    _, twice = applied([{"name": "a", "match": "x/**"}, {"name": "a", "match": "y/**"}])
    assert twice["ac"] == 400 and "given twice" in twice["ad"]


def test_a_twin_patch_of_profiles_changes_the_next_frame_of_the_matching_folder_and_no_other(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    module = run.module
    twin = TwinState(module.live, module.metrics, module.reported, served=module.served_model)
    frame(shares["input"] / "line1" / "cam2" / "0001.jpg", 640, 480)
    frame(shares["input"] / "line1" / "cam3" / "0001.jpg", 640, 480, seed=1)
    before = run.collector.wait_for(2)
    assert all(len(r.detections) == 2 and r.profile is None for r in before)
    twin.apply(
        {"profiles": [{"name": "cam2", "match": "line1/cam2/**", "classThresholds": {"dent": 0.7}}], "$version": 5},
        full=False,
    )
    assert twin.take_reported()["profiles"]["ac"] == 200
    frame(shares["input"] / "line1" / "cam2" / "0002.jpg", 640, 480, seed=2)
    frame(shares["input"] / "line1" / "cam3" / "0002.jpg", 640, 480, seed=3)
    after = {r.rel_path: r for r in run.collector.wait_for(4)[2:]}
    cam2, cam3 = after["line1/cam2/0002.jpg"], after["line1/cam3/0002.jpg"]
    assert cam2.profile == "cam2" and [d.label for d in cam2.detections] == ["scratch"]  # dent 0.6 < its 0.7
    assert cam3.profile is None and [d.label for d in cam3.detections] == ["scratch", "dent"]
    body = results_of(shares["output"])["line1/cam2/0002.jpg"]
    assert body["profile"] == "cam2"

    # and after a rollout swaps in a model with other class names, profiles are checked against that model
    relabelled = build_constant_model(
        shares["output"].parent / "relabelled.onnx", yolov8_output([(20, 20, 8, 8)], [[0.9]]), names="{0: 'crack'}"
    )
    new = OnnxModel(read_settings({"MODEL_PATH": str(relabelled), "STATE_DIR": str(shares["output"].parent)}))
    module.slot.swap(new)
    assert module.served_model() == ServedModel(new.name, ("crack",))
    twin.apply(
        {"profiles": [{"name": "cam2", "match": "line1/cam2/**", "classes": ["dent"]}], "$version": 6}, full=False
    )
    refused = twin.take_reported()["profiles"]
    assert refused["ac"] == 400 and "dent" in refused["ad"], refused
    twin.apply(
        {"profiles": [{"name": "cam2", "match": "line1/cam2/**", "classes": ["crack"]}], "$version": 7}, full=False
    )
    assert twin.take_reported()["profiles"]["ac"] == 200


def test_a_crop_roi_maps_boxes_back_to_the_frame_exactly(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    run.module.live.update(
        profiles=validate_desired(
            {
                "profiles": [
                    {
                        "name": "crop",
                        "match": "cam/**",
                        "roi": {
                            "polygons": [[[100, 80], [420, 80], [420, 400], [100, 400]]],
                            "units": "pixels",
                            "mode": "crop",
                        },
                    }
                ]
            },
            TwinSettings(),
        )[0].profiles
    )
    frame(shares["input"] / "cam" / "0001.jpg", 640, 480)
    (result,) = run.collector.wait_for(1)
    # the 320x320 crop at (100, 80) into the 64x64 input: scale 0.2, no padding; the model's boxes 15..25 x 27..37
    # and 39..49 x 27..37 are 75..125 x 135..185 and 195..245 x 135..185 in the crop, + (100, 80) in the frame
    assert [d.box for d in result.detections] == [(175.0, 215.0, 225.0, 265.0), (295.0, 215.0, 345.0, 265.0)]
    assert (result.width, result.height) == (640, 480) and result.profile == "crop"


def test_the_readme_example_of_a_line_with_three_cameras_is_accepted_and_judges_as_it_says() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- profiles-example -->")[1].split("<!-- /profiles-example -->")[0]
    desired = json.loads(block.strip().removeprefix("```json").removesuffix("```"))
    live, acks = validate_desired(desired, TwinSettings(), SERVED)
    assert {key: ack["ac"] for key, ack in acks.items()} == dict.fromkeys(desired, 200)
    cam1, cam2, cam3, other = (
        live.for_frame(f"{cam}/2026/0001.jpg") for cam in ("line1/cam1", "line1/cam2", "Line1/Cam3", "line2/cam1")
    )
    assert cam1.classes == ("scratch",) and dict(cam1.class_thresholds) == {"spot": 0.6, "scratch": 0.35}
    assert cam1.profile is not None and cam1.profile.roi is not None and cam1.profile.roi.exclude
    assert cam2.confidence_threshold == 0.4 and dict(cam2.class_thresholds) == {"spot": 0.6}
    assert cam2.profile is not None and cam2.profile.tiling is not None and cam2.profile.tiling.mode == "auto"
    assert cam3.save_annotated and cam3.alert_classes == ("dent",)
    assert cam3.profile is not None and regions.crop_rect(cam3.profile.roi, 1920, 1080) == (400, 300, 1500, 900)
    assert other.profile is None and other.confidence_threshold == 0.5

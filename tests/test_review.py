"""Review copies for retraining (pipeline/review.py, share/review.py): which frames are chosen (classes, confidence
band, sample rate), the hourly cap, the YOLO label files and crops, names that stay one-to-one, and the whole
module copying what the twin's `review` asks for - a band below the confidence threshold included."""

# ruff: noqa: F811 (the pipeline fixtures of test_pipeline.py are imported, then named as test arguments)

from __future__ import annotations

import dataclasses
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import cv2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_inference.entities import Classification, ClassScore, Detection, FrameJob
from edge_inference.ops.live_settings import ReviewSettings, TwinSettings
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.pipeline.envelopes import Failed, Finished
from edge_inference.pipeline.review import ReviewSelector, reasons, sampled
from edge_inference.share.catalog import OutputCatalog
from edge_inference.share.claims import ClaimArea
from edge_inference.share.output_layout import review_paths
from edge_inference.share.review import ReviewWriter, crop_box, yolo_labels
from edge_inference.share.watcher import is_frame_name
from tests.iot_fakes import make_result
from tests.test_pipeline import eventually, frame, model_path, results_of, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)


def frame_id(i: int) -> str:
    return hashlib.sha256(f"frame-{i}".encode()).hexdigest()[:32]


def test_frames_are_chosen_for_their_classes_their_uncertainty_or_by_sample() -> None:
    result = make_result(frame_id(1), [("scratch", 0.92), ("dent", 0.55)])
    assert reasons(result, False, ReviewSettings()) == []  # review off by default
    assert reasons(result, False, ReviewSettings(classes=("dent",))) == ["class"]
    assert reasons(result, False, ReviewSettings(classes=("spot",))) == []
    assert reasons(result, False, ReviewSettings(band=(0.5, 0.6))) == ["band"]  # dent 0.55 is uncertain
    assert reasons(result, False, ReviewSettings(band=(0.3, 0.5))) == []
    assert reasons(result, True, ReviewSettings(band=(0.3, 0.5))) == ["band"]  # one below the threshold was
    assert reasons(result, False, ReviewSettings(sample_rate=1.0)) == ["sample"]
    both = ReviewSettings(classes=("scratch",), band=(0.5, 0.6))
    assert reasons(result, False, both) == ["class", "band"]
    failed = make_result(frame_id(2), error={"code": "corrupt_image", "message": "x"})
    assert reasons(failed, True, ReviewSettings(sample_rate=1.0, band=(0.0, 1.0))) == []
    assert reasons(result, False, ReviewSettings(classes=("dent",), max_per_hour=0)) == []  # a cap of 0: off


def test_a_classifier_is_chosen_by_its_top_class_and_its_top_confidence_and_gets_an_empty_label_file() -> None:
    top = ClassScore("dent", 1, 0.55)
    result = dataclasses.replace(
        make_result(frame_id(2), []), classification=Classification(top, (top, ClassScore("spot", 2, 0.3)))
    )
    assert reasons(result, False, ReviewSettings(classes=("dent",))) == ["class"]  # 0.55 over the threshold
    assert reasons(result, False, ReviewSettings(classes=("spot",))) == []  # not its top class
    assert reasons(result, False, ReviewSettings(band=(0.5, 0.6))) == ["band"]
    assert reasons(result, False, ReviewSettings(band=(0.6, 0.9))) == []
    assert yolo_labels(result.detections, 640, 480) == ""  # no boxes: "no objects" for the annotation tools


def test_the_sample_takes_its_share_of_frames_and_always_the_same_ones() -> None:
    ids = [frame_id(i) for i in range(4000)]
    chosen = [i for i in ids if sampled(i, 0.1)]
    assert 320 <= len(chosen) <= 480  # 400 expected; +-4 standard deviations
    assert chosen == [i for i in ids if sampled(i, 0.1)]  # deterministic: replicas and reprocessing agree
    assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)


def test_yolo_labels_are_class_and_normalised_centre_and_size() -> None:
    dets = (
        Detection("scratch", 0, 0.9, (100.0, 50.0, 300.0, 150.0)),
        Detection("dent", 2, 0.6, (-20.0, 900.0, 40.0, 1200.0)),  # partly outside: clipped to the frame
    )
    text = yolo_labels(dets, 1000, 1000)
    assert text == "0 0.200000 0.100000 0.200000 0.100000\n2 0.020000 0.950000 0.040000 0.100000\n"
    assert yolo_labels((), 1000, 1000) == ""  # no objects: an empty label file
    assert yolo_labels(dets, 0, 0) == ""  # no frame size (a failed frame): nothing to normalise against


def test_crop_boxes_get_their_padding_and_stay_in_the_frame() -> None:
    assert crop_box((100.0, 100.0, 200.0, 150.0), 0.1, 640, 480) == (90, 95, 210, 155)
    assert crop_box((0.0, 0.0, 50.0, 50.0), 0.5, 640, 480) == (0, 0, 75, 75)
    assert crop_box((630.0, 470.0, 640.0, 480.0), 1.0, 640, 480) == (620, 460, 640, 480)
    assert crop_box((10.0, 10.0, 10.0, 10.0), 0.0, 640, 480) is None


names = st.text(alphabet="ab.", min_size=1, max_size=6).map(lambda s: s.strip(".") or "a") | st.sampled_from(
    ["x.jpg", "x.png", "x.png.jpg", "x.JPG", "x.jpeg", "x.tif", "x.png.png"]
)


@settings(max_examples=300, deadline=None)
@given(st.sets(st.tuples(names, st.sampled_from([".jpg", ".png", ".JPG", ".jpeg", ".webp", ""])), max_size=8))
def test_review_copies_and_labels_of_one_folder_never_share_a_name(items: set[tuple[str, str]]) -> None:
    frames = {stem + ext for stem, ext in items if is_frame_name(stem + ext)}  # what the watcher takes
    images = [review_paths("2026-11-30", f"cam/{name}")[0] for name in frames]
    labels = [review_paths("2026-11-30", f"cam/{name}")[1] for name in frames]
    assert len(set(images)) == len(frames) and len(set(labels)) == len(frames)
    for image, label in zip(images, labels, strict=True):  # an annotation tool pairs them by stem
        assert os.path.splitext(image)[0] == os.path.splitext(label)[0] and label.endswith(".txt")


def _finished(inp: Path, rel: str, i: int, live: TwinSettings) -> Finished:
    frame(inp / rel, 160, 120, seed=i)
    st_ = (inp / rel).stat()
    job = FrameJob(rel, inp / rel, st_.st_size, st_.st_mtime_ns, "scan", 0.0)
    result = make_result(frame_id(i), [("scratch", 0.9)], rel_path=rel)
    return Finished(job, Failed(job, None, {}), result, live)  # type: ignore[arg-type]


def test_the_hourly_cap_holds_across_a_restart_and_opens_at_the_next_hour(tmp_path: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    out.mkdir()
    catalog = OutputCatalog(tmp_path / "state" / "outputs.sqlite")
    claims = ClaimArea(inp, out, "r1", "keep", 300)
    live = TwinSettings(review=ReviewSettings(classes=("scratch",), max_per_hour=3))
    now = [datetime(2026, 11, 30, 10, 15, tzinfo=UTC).timestamp()]
    metrics = MetricsRegistry()

    def selector() -> ReviewSelector:
        return ReviewSelector(ReviewWriter(out, catalog, lambda: ["scratch"]), claims, catalog, metrics, lambda: now[0])

    first = selector()
    copied = [first.consider(_finished(inp, f"cam/{i}.jpg", i, live)) for i in range(2)]
    restarted = selector()  # the module restarts within the hour: the two copies count
    copied += [restarted.consider(_finished(inp, f"cam/{i}.jpg", i, live)) for i in range(2, 5)]
    assert copied == [True, True, True, False, False]
    assert metrics.review_skipped.labels(reason="hourlyCap")._value.get() == 2
    now[0] += 3600  # the next hour
    assert restarted.consider(_finished(inp, "cam/9.jpg", 9, live))
    day = "2026-11-30"
    assert sorted(p.name for p in (out / "review" / day / "cam").iterdir()) == [
        "0.jpg", "0.txt", "1.jpg", "1.txt", "2.jpg", "2.txt", "9.jpg", "9.txt",
    ]  # fmt: skip
    assert (out / "review" / day / "cam" / "0.jpg").read_bytes() == (inp / "cam" / "0.jpg").read_bytes()


def test_the_module_copies_chosen_frames_with_labels_and_crops(start, shares) -> None:  # type: ignore[no-untyped-def]
    # given the module and the twin's review asking for "dent" frames with their crops
    run = start(INPUT_DISPOSITION="archive")
    run.module.live.update(review=ReviewSettings(classes=("dent",), crops=True, padding=0.0))
    frame(shares["input"] / "line1" / "0001.jpg", 640, 480, seed=3)
    assert eventually(lambda: "line1/0001.jpg" in results_of(shares["output"]), 20)
    # then the original (as it was, before its archive) is in review/<date>/ with the module's predictions
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    review = shares["output"] / "review"
    copy, label = review / day / "line1" / "0001.jpg", review / day / "line1" / "0001.txt"
    archived = shares["output"] / "processed" / "line1" / "0001.jpg"
    assert eventually(lambda: label.exists() and archived.exists(), 5)
    assert copy.read_bytes() == archived.read_bytes()
    result = results_of(shares["output"])["line1/0001.jpg"]
    lines = label.read_text().splitlines()
    assert len(lines) == len(result["detections"]) == 2
    for line, det in zip(lines, result["detections"], strict=True):
        cls, cx, cy, w, h = line.split()
        x1, y1, x2, y2 = det["box"]
        assert int(cls) == det["classId"]
        assert float(cx) == pytest.approx((x1 + x2) / 2 / 640, abs=1e-3)
        assert float(cy) == pytest.approx((y1 + y2) / 2 / 480, abs=1e-3)
        assert float(w) == pytest.approx((x2 - x1) / 640, abs=1e-3)
        assert float(h) == pytest.approx((y2 - y1) / 480, abs=1e-3)
    assert (review / "classes.txt").read_text() == "scratch\ndent\n"
    crops = sorted(p.relative_to(review / "crops" / day).as_posix() for p in (review / "crops" / day).rglob("*.jpg"))
    assert crops == ["0_scratch/line1/0001_0.jpg", "1_dent/line1/0001_1.jpg"]
    x1, y1, x2, y2 = result["detections"][1]["box"]
    crop = cv2.imread(str(review / "crops" / day / crops[1]))
    assert crop is not None and abs(crop.shape[1] - (x2 - x1)) <= 2 and abs(crop.shape[0] - (y2 - y1)) <= 2
    # and every review file is the module's, for the retention
    assert run.module.catalog.totals()["review"][1] == 4


def test_a_band_below_the_threshold_chooses_frames_whose_result_does_not_show_the_detection(start, shares) -> None:  # type: ignore[no-untyped-def]
    # the tiny model sees "scratch" at 0.9 and "dent" at 0.6; the threshold is 0.7, the band 0.55..0.65
    run = start(CONFIDENCE_THRESHOLD="0.7")
    run.module.live.update(review=ReviewSettings(band=(0.55, 0.65)))
    frame(shares["input"] / "a.jpg", 320, 240, seed=1)
    assert eventually(lambda: "a.jpg" in results_of(shares["output"]), 20)
    result = results_of(shares["output"])["a.jpg"]
    assert [d["label"] for d in result["detections"]] == ["scratch"]  # the result is as at the threshold
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    label = shares["output"] / "review" / day / "a.txt"
    assert eventually(label.exists, 5)
    assert [line.split()[0] for line in label.read_text().splitlines()] == ["0"]  # the module's predictions
    assert run.module.metrics.review_copies.labels(reason="band")._value.get() == 1


def test_a_review_copy_that_fails_never_fails_its_frame(start, shares) -> None:  # type: ignore[no-untyped-def]
    run = start()
    run.module.live.update(review=ReviewSettings(sample_rate=1.0))
    (shares["output"] / "review").write_text("a file where the review folder would be")
    frame(shares["input"] / "b.jpg", 320, 240, seed=2)
    assert eventually(lambda: "b.jpg" in results_of(shares["output"]), 20)
    assert "error" not in results_of(shares["output"])["b.jpg"]
    assert eventually(lambda: run.module.metrics.review_skipped.labels(reason="failed")._value.get() == 1, 5)
    assert run.collector.results[0].ok and run.pipeline.stage_death() == ""


def test_a_band_below_a_camera_profiles_class_threshold_chooses_its_frames(start, shares) -> None:  # type: ignore[no-untyped-def]
    # the tiny model sees "scratch" at 0.9 and "dent" at 0.6; the global threshold 0.5 keeps both, while cam2's
    # profile raises dent's own threshold to 0.7; the band is 0.55..0.65
    from edge_inference.ops.profiles import Profile

    run = start(CONFIDENCE_THRESHOLD="0.5")
    cam2 = Profile("cam2", "cam2/**", class_thresholds=(("dent", 0.7),))
    run.module.live.update(review=ReviewSettings(band=(0.55, 0.65)), profiles=(cam2,))
    frame(shares["input"] / "cam2" / "a.jpg", 320, 240, seed=1)
    frame(shares["input"] / "cam3" / "a.jpg", 320, 240, seed=1)
    assert eventually(lambda: {"cam2/a.jpg", "cam3/a.jpg"} <= set(results_of(shares["output"])), 20)
    results = results_of(shares["output"])
    # then cam2's result is as at its class threshold, and its dent under it lies in the band: a review copy
    # (the decode went down to the band's low end for dent's own threshold too, not only the global one)
    assert [d["label"] for d in results["cam2/a.jpg"]["detections"]] == ["scratch"]
    assert [d["label"] for d in results["cam3/a.jpg"]["detections"]] == ["scratch", "dent"]
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    review = shares["output"] / "review" / day
    assert eventually((review / "cam2" / "a.txt").exists, 5)
    # (cam3's dent is kept, over 0.5, and lies in the band too: chosen for what its result shows)
    assert eventually((review / "cam3" / "a.txt").exists, 5)
    assert run.module.metrics.review_copies.labels(reason="band")._value.get() == 2

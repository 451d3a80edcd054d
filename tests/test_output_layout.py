"""The output share's names: one per frame and tree, and never a file where another frame needs a folder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_inference.share import output_layout as layout

pytestmark = pytest.mark.timeout(60)

TREES = {
    "results": (layout.result_path,),
    "annotated": (layout.annotated_path, layout.annotated_mask_path),
    "failed": (layout.failed_path, layout.failed_error_path),
    "processed": (layout.processed_path,),
}


def test_the_clashes_seen_on_real_shares_map_apart() -> None:
    assert layout.result_path("x.jpg") == "results/x.jpg.json"
    assert layout.result_path("x.jpg.json/y.jpg") == "results/x.jpg.json~dir/y.jpg.json"
    assert layout.processed_path("p.jpg/w.jpg") == "processed/p.jpg~dir/w.jpg"
    assert layout.processed_path("p.jpg") == "processed/p.jpg"
    assert layout.annotated_path("x.jpg") == "annotated/x.jpg"
    assert layout.annotated_path("x.png") == "annotated/x.png.jpg"
    assert layout.annotated_path("x.png.jpg") == "annotated/x.png.jpg.jpg"
    assert layout.annotated_mask_path("x.jpg") == "annotated/x.jpg.mask.png"  # a segmentation model's masks
    assert layout.annotated_mask_path("x.png/y.jpg") == "annotated/x.png~dir/y.jpg.mask.png"
    assert layout.failed_error_path("a~dir/b.jpg") == "failed/a~dir~dir/b.jpg.error.json"
    assert layout.result_path("line1/cam2/0001.jpg") == "results/line1/cam2/0001.jpg.json"  # the usual, unchanged


_part = st.sampled_from(
    ["x", "x.jpg", "x.png", "x.jpg.json", "x.json", "x~dir", "x.jpg~dir", "X.JPG", "y.tif", "x.jpg.mask.png"]
)
_frame = st.sampled_from(
    ["a.jpg", "x.jpg", "x.png", "x.png.jpg", "X.JPG", "x.jpeg", "x.jpg.jpg", "b.tiff", "x~dir.jpg", "x.jpg.mask.png"]
)
_rel = st.builds(lambda folders, name: "/".join([*folders, name]), st.lists(_part, max_size=3), _frame)


@settings(max_examples=400, deadline=None)
@given(st.lists(_rel, min_size=2, max_size=12, unique=True))
def test_no_two_frames_share_an_output_and_no_output_file_is_another_ones_folder(rels: list[str]) -> None:
    for tree, places in TREES.items():
        files = [place(rel) for rel in rels for place in places]
        assert len(set(files)) == len(files), tree
        folders = {"/".join(f.split("/")[:i]) for f in files for i in range(2, f.count("/") + 1)}
        assert not folders & set(files), tree

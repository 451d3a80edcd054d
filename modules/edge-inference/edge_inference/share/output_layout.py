"""Where a frame's outputs go on the output share: one deterministic, collision-free name per frame and tree.

    results/<path>.json   annotated/<path>.jpg (+ <path>.mask.png)   failed/<path> + <path>.error.json   processed/<path>
    review/<date>/<path> + its YOLO label file      review/crops/<date>/<classId>_<label>/<path stem>_<i>.jpg

Two input paths never map to one output path, and an output file never lands where another frame's outputs need
a folder (a file `x.jpg` and a folder `x.jpg.json/` on the input share, or `p.jpg` and `p.jpg/w.jpg`):
- a folder whose name ends like a file of that tree (`.json` in results/, `.jpg` in annotated/, an image
  extension or `.json` in failed/ and processed/), or ends with `~dir`, gets `~dir` added: `x.jpg.json/y.jpg`
  -> `results/x.jpg.json~dir/y.jpg.json`. The rule is one-to-one (a name ending in `~dir` always gets another);
- annotated/: a `.jpg` frame keeps its name unless the part before `.jpg` is itself an image name; every other
  frame gets `.jpg` added (`x.png` -> `x.png.jpg`, `x.JPG` -> `x.JPG.jpg`), so `x.png` and `x.jpg` differ;
- review/: an annotation tool pairs an image with the label file of the same stem (`x.jpg` and `x.txt`), so the
  stem must be one-to-one: a `.jpg` frame whose stem is not an image name keeps its name (`x.jpg` + `x.txt`);
  every other frame keeps its whole name as the stem (`x.png` -> `x.png.png` + `x.png.txt`);
- a name over NAME_MAX bytes is cut and tagged with its hash (`fit_name`); the result body keeps the full path.
"""

from __future__ import annotations

import hashlib
import os

from edge_inference.share.share_fs import split
from edge_inference.vision.decode import IMAGE_EXTENSIONS

NAME_MAX = 255  # bytes in one file name on Linux file systems (ext4, xfs, tmpfs; cifs and nfs agree)
FOLDER_MARK = "~dir"
_IMAGE_SUFFIXES = tuple(sorted(IMAGE_EXTENSIONS))
_FILE_ENDINGS = {
    "results": (".json",),
    "annotated": (".jpg", ".png"),
    "failed": (*_IMAGE_SUFFIXES, ".json"),
    "processed": _IMAGE_SUFFIXES,
    "review": (*_IMAGE_SUFFIXES, ".txt"),
}
_SUFFIX_ROOM = "." + "x" * 5  # room kept for any review suffix (.jpeg, .tiff, .webp, .txt) when a stem is cut


def result_path(rel_path: str) -> str:
    return _place("results", rel_path, ".json")


def annotated_path(rel_path: str) -> str:
    name = rel_path.rpartition("/")[2]
    stem, ext = os.path.splitext(name)
    keeps = ext == ".jpg" and os.path.splitext(stem)[1].lower() not in IMAGE_EXTENSIONS
    return _place("annotated", rel_path, "" if keeps else ".jpg")


def annotated_mask_path(rel_path: str) -> str:
    """A segmentation model's masks of the frame (a PNG): never an annotated .jpg's name, nor another mask's."""
    return _place("annotated", rel_path, ".mask.png")


def failed_path(rel_path: str) -> str:
    return _place("failed", rel_path, "")


def failed_error_path(rel_path: str) -> str:
    return _place("failed", rel_path, ".error.json")


def processed_path(rel_path: str) -> str:
    return _place("processed", rel_path, "")


def review_paths(day: str, rel_path: str) -> tuple[str, str]:
    """(the review copy, its YOLO label file) of a frame copied on `day` (YYYY-MM-DD)."""
    folders, stem, ext = _review_parts(rel_path)
    return "/".join(["review", day, *folders, stem + ext]), "/".join(["review", day, *folders, stem + ".txt"])


def review_crop_path(day: str, class_id: int, label: str, rel_path: str, index: int) -> str:
    """The `index`-th detection crop of a frame: one folder per class (ImageFolder layout), the frame's folders
    below it so that names stay apart."""
    folders, stem, _ext = _review_parts(rel_path)
    safe = "".join(c if c.isalnum() or c in "-_ " else "_" for c in label)[:100] or "_"
    return "/".join(["review", "crops", day, f"{class_id}_{safe}", *folders, fit_name(f"{stem}_{index}", ".jpg")])


def _review_parts(rel_path: str) -> tuple[list[str], str, str]:
    parts = split(rel_path)
    name = parts[-1]
    stem, ext = os.path.splitext(name)
    keeps = ext == ".jpg" and os.path.splitext(stem)[1].lower() not in IMAGE_EXTENSIONS
    base = stem if keeps else name
    room = fit_name(base, _SUFFIX_ROOM)[: -len(_SUFFIX_ROOM)]  # one cut for the copy and its label alike
    return [_folder(p, _FILE_ENDINGS["review"]) for p in parts[:-1]], room, ext


def _place(tree: str, rel_path: str, suffix: str) -> str:
    """`<tree>/<folders, escaped>/<name + suffix, fitted>`, relative to the output share."""
    parts = split(rel_path)
    endings = _FILE_ENDINGS[tree]
    folders = [_folder(p, endings) for p in parts[:-1]]
    return "/".join([tree, *folders, fit_name(parts[-1], suffix)])


def _folder(name: str, endings: tuple[str, ...]) -> str:
    lower = name.lower()
    if lower.endswith(endings) or name.endswith(FOLDER_MARK):
        return fit_name(name, FOLDER_MARK)
    return name


def fit_name(rel_path: str, suffix: str = "") -> str:
    """`rel_path + suffix`, unless its last name would pass NAME_MAX bytes (a 251..255-byte frame name gets
    `.json` added): then the name is cut at a character boundary and `~<12 hex of its sha256>` keeps it unique.
    The result body still carries the full path; without this such a frame could never be written."""
    head, _, name = rel_path.rpartition("/")
    full = name + suffix
    if len(os.fsencode(full)) <= NAME_MAX:
        return rel_path + suffix
    tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    room = NAME_MAX - len(os.fsencode(tag + suffix))
    cut = os.fsdecode(os.fsencode(name)[:room])  # a cut multi-byte character stays as its raw bytes
    return f"{head}/{cut}{tag}{suffix}" if head else f"{cut}{tag}{suffix}"

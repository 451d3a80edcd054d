"""Where a frame's outputs go on the output share: one deterministic, collision-free name per frame and tree.

    results/<path>.json   annotated/<path>.jpg (+ <path>.mask.png)   failed/<path> + <path>.error.json   processed/<path>

Two input paths never map to one output path, and an output file never lands where another frame's outputs need
a folder (a file `x.jpg` and a folder `x.jpg.json/` on the input share, or `p.jpg` and `p.jpg/w.jpg`):
- a folder whose name ends like a file of that tree (`.json` in results/, `.jpg` in annotated/, an image
  extension or `.json` in failed/ and processed/), or ends with `~dir`, gets `~dir` added: `x.jpg.json/y.jpg`
  -> `results/x.jpg.json~dir/y.jpg.json`. The rule is one-to-one (a name ending in `~dir` always gets another);
- annotated/: a `.jpg` frame keeps its name unless the part before `.jpg` is itself an image name; every other
  frame gets `.jpg` added (`x.png` -> `x.png.jpg`, `x.JPG` -> `x.JPG.jpg`), so `x.png` and `x.jpg` differ;
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
}


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

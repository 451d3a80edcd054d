#!/usr/bin/env python3
"""Make the module's selfTest frame: `models/selftest.jpg` and its truth `models/selftest.json`.

One synthetic frame (tools/synthetic.py, the generator the demo model was trained on) with 2-3 defects at known
boxes, 1280x720, JPEG quality 90. The module reads both files at run time (control/selftest.py) instead of
carrying the generator. Run again only to change the frame: `python tools/selftest_frame.py [--check]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.synthetic import CLASS_NAMES, encode_jpeg, generate_frame  # noqa: E402

MODELS = REPO / "modules" / "edge-inference" / "models"
SEED, WIDTH, HEIGHT = 20261123, 1280, 720


def render() -> tuple[bytes, str]:
    """The JPEG bytes and the JSON text of the self-test frame."""
    rng = np.random.default_rng(SEED)
    image, truth = generate_frame(rng, WIDTH, HEIGHT, min_defects=2, max_defects=3)
    body = {
        "seed": SEED,
        "width": WIDTH,
        "height": HEIGHT,
        "classes": list(CLASS_NAMES),
        "defects": [{"label": d.label, "box": [round(v, 1) for v in d.box]} for d in truth],
    }
    return encode_jpeg(image), json.dumps(body, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed truth is current")
    args = parser.parse_args(argv)
    jpeg, truth = render()
    if args.check:
        current = (MODELS / "selftest.json").read_text(encoding="utf-8")
        if current != truth:
            print("models/selftest.json is out of date: run `python tools/selftest_frame.py`")
            return 1
        return 0
    (MODELS / "selftest.jpg").write_bytes(jpeg)
    (MODELS / "selftest.json").write_text(truth, encoding="utf-8")
    print(f"wrote {MODELS / 'selftest.jpg'} ({len(jpeg)} bytes) and selftest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The picture at the top of the README: a frame with known defects through the whole module, drawn as annotated/.

`make demo` runs it first. The frame is a synthetic one (tools/synthetic.py, the generator the demo model was
trained on; a fixed seed, so always the same frame) with scratches, dents and spots; the module
runs in-process on the bundled demo model (no ports, temp shares), answers it as /predict does, and
vision/annotate.py draws the result as it draws annotated/<path>.jpg. The same model and frame give the same
picture, so running it again leaves the committed file as it is (on the CPU provider).

    python tools/demo_picture.py [--out docs/images/demo-annotated.jpg]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "modules" / "edge-inference"))
sys.path.insert(0, str(REPO))

from edge_inference.app import Module  # noqa: E402
from edge_inference.settings import read_settings  # noqa: E402
from edge_inference.vision.annotate import draw  # noqa: E402
from tools.synthetic import encode_jpeg, generate_frame  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "images" / "demo-annotated.jpg"
SEED, WIDTH, HEIGHT = 15, 1280, 720


def demo_frame(seed: int = SEED) -> bytes:
    image, _truth = generate_frame(np.random.default_rng(seed), WIDTH, HEIGHT, min_defects=4, max_defects=4)
    return encode_jpeg(image)


def annotated(data: bytes) -> tuple[np.ndarray, int]:
    """The frame with the module's result drawn on it, and how many things were found."""
    with tempfile.TemporaryDirectory(prefix="edge-inference-demo-") as tmp:
        env = {
            "INPUT_DIR": f"{tmp}/input",
            "OUTPUT_DIR": f"{tmp}/output",
            "STATE_DIR": f"{tmp}/state",
            "HTTP_PORT": "0",
            "METRICS_PORT": "0",
            "LOCAL_TELEMETRY": "false",
            "EXECUTION_PROVIDERS": "cpu",
            "MIN_FREE_MB": "0",
        }
        Path(env["INPUT_DIR"]).mkdir()
        module = Module(read_settings(env), env={})
        module.start()
        try:
            result = module.commands.predict(data, timeout=60.0)
        finally:
            module.request_stop()
            module.shutdown()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return draw(image, result.detections, result.classification), len(result.findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=SEED, help="another synthetic frame")
    args = parser.parse_args(argv)
    picture, found = annotated(demo_frame(args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), picture, [cv2.IMWRITE_JPEG_QUALITY, 85]):
        print(f"demo picture: cannot write {args.out}", file=sys.stderr)
        return 1
    print(f"demo picture: {found} defects found and drawn: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

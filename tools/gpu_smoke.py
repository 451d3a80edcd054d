#!/usr/bin/env python3
"""`make gpu-smoke`: the GPU smoke test from a checkout (the image runs `python -m edge_inference.gpu_smoke`).

The test itself lives in the package (edge_inference/gpu_smoke.py) so that the image can run it; this launcher
only puts the package on the path. Exit status: 0 all good, 1 something is off, 3 no GPU visible.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "modules" / "edge-inference"))

from edge_inference.gpu_smoke import main

if __name__ == "__main__":
    sys.exit(main())

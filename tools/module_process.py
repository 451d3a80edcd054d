"""The environment for `python -m edge_inference` as a child process (tests, `make bench`, `make soak`).

The parent's environment without the IoT Edge runtime's variables (so a developer's shell never points a test
module at a real edgeHub), the package on PYTHONPATH (ahead of the caller's own), and the module settings given as
keyword arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_inference.settings import EDGEHUB_VARIABLES

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "modules" / "edge-inference"


def module_process_env(**settings: str | int | float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTEDGE_") and k not in EDGEHUB_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(MODULE_DIR), str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update({k: str(v) for k, v in settings.items()})
    return env

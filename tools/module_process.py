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


def fast_module_env(
    rig_env: dict[str, str], model: Path, dirs: dict[str, Path], replica: str, **settings: str | int | float
) -> dict[str, str]:
    """The tests' module process: on the CPU with one decode and one inference thread, fast settling and short IoT
    timeouts, its folders from `dirs` (input, output, state), against the edgeHub rig when `rig_env` is
    `rig.env()` (local mode when empty); `settings` add to these."""
    return module_process_env(
        **rig_env,
        MODEL_PATH=str(model),
        INPUT_DIR=str(dirs["input"]),
        OUTPUT_DIR=str(dirs["output"]),
        STATE_DIR=str(dirs["state"]),
        EXECUTION_PROVIDERS="cpu",
        HTTP_PORT="0",
        METRICS_PORT="0",
        SETTLE_SECONDS="0.1",
        IOT_TIMEOUT_SECONDS="5",
        DECODE_WORKERS="1",
        INFERENCE_THREADS="1",
        REPLICA_ID=replica,
        **settings,
    )

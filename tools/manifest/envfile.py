"""`.env` and `.env.example`: reading them (python-dotenv), writing `.env.example`, and spotting placeholders.

`.env.example` is generated from `settings.ENV_VARS` plus the deployment values below (`python -m
tools.manifest env-example`); a test checks it is up to date. The values under PLACEHOLDERS stand for
something only the user knows (their registry and its credentials): a manifest still carrying one is flagged
by `validate` (a warning; an error with `--strict`, which `make deploy-check` uses).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from tools.manifest.project import ENV_EXAMPLE, ENV_FILE, ENV_VARS

# Placeholder values of .env.example the user must replace, most important first, with the variable to set.
PLACEHOLDERS: dict[str, str] = {
    "CONTAINER_REGISTRY_SERVER": "myregistry.azurecr.io",
    "CONTAINER_REGISTRY_PASSWORD": "replace-with-the-registry-password",
    "CONTAINER_REGISTRY_USERNAME": "myregistry",
}


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE pairs as python-dotenv reads them (quotes, `export`, `# comments` after a value); no `${}`
    interpolation, so a password with `$` stays as written. A bare `KEY` without `=` is left out."""
    return {k: v for k, v in dotenv_values(path, interpolate=False, encoding="utf-8").items() if v is not None}


def load_values(env_path: Path = ENV_FILE, example_path: Path = ENV_EXAMPLE) -> tuple[dict[str, str], list[str]]:
    """The .env values over the .env.example ones; also the names that came from the example."""
    example = read_env_file(example_path) if example_path.exists() else {}
    actual = read_env_file(env_path) if env_path.exists() else {}
    fallbacks = sorted(k for k in example if k not in actual)
    return {**example, **actual}, fallbacks


def placeholders_in(values: Mapping[str, str]) -> list[str]:
    """The variables whose value is still the .env.example placeholder, most important first."""
    return [name for name, placeholder in PLACEHOLDERS.items() if values.get(name) == placeholder]


ENV_EXAMPLE_HEAD = f"""\
# edge-inference deployment settings. Copy to .env (git-ignored) and fill in; `make config` expands the
# deployment templates from .env, falling back to these values with a warning. Secrets go in .env only.
# Values like `KEY=value  # note` are read by python-dotenv: the note is a comment.
# This file is generated: `python -m tools.manifest env-example` rewrites it from settings.ENV_VARS.

# --- container registry (registryCredentials in the manifest; the password never leaves .env and config/)
# placeholders: `make validate` warns and `make deploy-check` fails while they are unchanged
CONTAINER_REGISTRY_SERVER={PLACEHOLDERS["CONTAINER_REGISTRY_SERVER"]}
CONTAINER_REGISTRY_USERNAME={PLACEHOLDERS["CONTAINER_REGISTRY_USERNAME"]}
CONTAINER_REGISTRY_PASSWORD={PLACEHOLDERS["CONTAINER_REGISTRY_PASSWORD"]}

# --- image: <server>/edge-inference:<version>-<platform>; empty IMAGE_VERSION = module.json's version
IMAGE_VERSION=
# amd64.gpu (CUDA; requests the GPU), amd64 (CPU; no GPU request, runs on any host), arm64v8 (CPU);
# amd64.debug (CPU + debugpy on 5678) is what deployment.debug.template.json deploys
IMAGE_PLATFORM=amd64.gpu

# --- IoT Edge runtime (edgeAgent, edgeHub image tag) in every template: 1.6 LTS is supported to 2028-11-14;
# `make validate` refuses tags past their end of support (1.5 ended 2026-11-10)
EDGE_RUNTIME_TAG=1.6

# --- target docker (deployment.template.json, and deployment.debug.template.json): host folders or mounts
# input share, mounted read-only at /app/input (hence INPUT_DISPOSITION=keep below)
INPUT_SHARE_PATH=/srv/edge-inference/input
# output share, mounted at /app/output (results/, annotated/, failed/)
OUTPUT_SHARE_PATH=/srv/edge-inference/output
# module state at /app/state: a Docker named volume (or a host folder writable by uid 1000)
STATE_VOLUME=edge-inference-state

# --- target ase (deployment.ase.template.json): Azure Stack Edge share names, used as Mount Sources
# (the managed Kubernetes IoT Edge of Azure Stack Edge runs IoT Edge 1.1, past its end of support: see
# docs/DEPLOY.md; the supported way on the device is the docker target in an Ubuntu VM)
ASE_INPUT_SHARE=input
ASE_OUTPUT_SHARE=output
# a local (Edge local) share for the ledger, outbox and TensorRT engine cache
ASE_STATE_SHARE=edgestate
# Kubernetes limits of the module pod (the GPU limit, 1, is requested only for a GPU image)
ASE_CPU_LIMIT=4
ASE_MEMORY_LIMIT=8Gi
# name of the Azure Stack Edge file trigger on the input share: its events carry topic=<trigger name>
FILE_EVENT_TRIGGER=inputtrigger

# --- proxy (edgeHub): empty = no proxy; UPSTREAM_PROTOCOL=AmqpWs unless the proxy passes AMQP
HTTPS_PROXY=
UPSTREAM_PROTOCOL=

# --- module settings (settings.ENV_VARS): empty = the module's default, shown in the comment
"""
# Deployment values that differ from the module's own default, and why.
ENV_EXAMPLE_OVERRIDES = {
    "INPUT_DISPOSITION": ("keep", "the templates mount the input share read-only"),
    "REQUIRE_GPU": ("", "empty: true for a GPU image (amd64.gpu), false for the CPU ones"),
    "OUTPUT_RETENTION_DAYS": (
        "processed:30,annotated:30,failed:90,review:30",
        "the images go after a month; results stay: docs/DEPLOY.md 5a",
    ),
    "REQUIRE_MOUNTED_SHARES": (
        "true",
        "the templates mount shares there: a plain folder means the host had not mounted its share; false for a"
        " folder of the host's own disk",
    ),
}
_DESCRIPTIVE_DEFAULTS = {"bundled demo model", "hostname", ""}


def render_env_example() -> str:
    lines = [ENV_EXAMPLE_HEAD]
    for var in ENV_VARS:
        if var.name in ENV_EXAMPLE_OVERRIDES:
            value, why = ENV_EXAMPLE_OVERRIDES[var.name]
            lines.append(f"# {var.meaning} (module default: {var.default}; {why})\n{var.name}={value}\n")
        elif var.default in _DESCRIPTIVE_DEFAULTS:
            shown = var.default or "none"
            lines.append(f"# {var.meaning} (default: {shown})\n{var.name}=\n")
        else:
            lines.append(f"# {var.meaning}\n{var.name}={var.default}\n")
    return "".join(lines)

"""Deployment manifests: expand the templates into config/ (`config`), check them (`validate`), and keep
`.env.example` in step with the module's settings (`env-example`).

    python -m tools.manifest config [--platform amd64.gpu] [--env .env] [--out config] [--target docker]
    python -m tools.manifest validate [--strict] [config/deployment.docker.json ...]
    python -m tools.manifest env-example [--check]

`config` expands deployment.template.json (target `docker`), deployment.debug.template.json (`debug`: the
amd64.debug image with debugpy's port) and deployment.ase.template.json (`ase`) into
config/deployment.<target>.json (expand.py). `validate` checks each manifest against the vendored deployment
schemas and the rules of its target (validate.py); every problem is printed as `<rule>: <JSON place>: <what
and why>` and the exit status is 1 if there is any. The registry password is written into config/
(git-ignored, mode 0600) and never printed.

Files: project.py (paths, the module's contract), envfile.py (.env, .env.example, placeholders), expand.py
(config), schema.py, rules.py (rules of every target), runtime_support.py (IoT Edge releases and their end of
support), docker_rules.py, ase_rules.py, validate.py, cli.py.
"""

from tools.manifest.envfile import ENV_EXAMPLE, load_values, read_env_file, render_env_example
from tools.manifest.expand import PLACEHOLDER, build_manifest, split_create_options, write_manifest
from tools.manifest.problem import AGENT, HUB, ManifestError, Problem
from tools.manifest.project import INPUTS, OUTPUTS, TARGETS
from tools.manifest.rules import create_options
from tools.manifest.validate import check_manifest, validate_manifest


def main(argv: list[str] | None = None) -> int:
    from tools.manifest.cli import main as cli_main

    return cli_main(argv)


__all__ = [
    "AGENT",
    "ENV_EXAMPLE",
    "HUB",
    "INPUTS",
    "OUTPUTS",
    "PLACEHOLDER",
    "TARGETS",
    "ManifestError",
    "Problem",
    "build_manifest",
    "check_manifest",
    "create_options",
    "load_values",
    "main",
    "read_env_file",
    "render_env_example",
    "split_create_options",
    "validate_manifest",
    "write_manifest",
]

"""The manifest tool's commands: `config`, `validate [--strict]`, `env-example [--check]`."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

from tools.manifest.envfile import ENV_EXAMPLE, load_values, placeholders_in, render_env_example
from tools.manifest.expand import build_manifest, write_manifest
from tools.manifest.problem import ManifestError
from tools.manifest.project import CONFIG_DIR, DEFAULT_PLATFORM, ENV_FILE, TARGETS, is_gpu_image
from tools.manifest.validate import check_manifest


def _target_of(path: Path) -> str:
    match = re.fullmatch(r"deployment\.(.+)\.json", path.name)
    return match.group(1) if match else "docker"


def _module_image(manifest: dict[str, object]) -> str:
    desired = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]  # type: ignore[index]
    return str(desired["modules"]["edge-inference"]["settings"]["image"])  # type: ignore[index]


def cmd_config(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    values, fallbacks = load_values(Path(args.env), ENV_EXAMPLE)
    if not Path(args.env).exists():
        out(f"warning: {args.env} not found: every value comes from .env.example (copy it to .env and fill it in)")
    elif fallbacks:
        out(f"warning: not in {args.env}, taken from .env.example: {', '.join(fallbacks)}")
    still = placeholders_in(values)
    if still:
        out(f"warning: still the .env.example placeholder: {', '.join(still)} (make deploy-check refuses them)")
    platform = args.platform or values.get("IMAGE_PLATFORM") or DEFAULT_PLATFORM
    failed = False
    for target in args.targets:
        try:
            manifest = build_manifest(target, values, platform)
        except ManifestError as e:
            failed = True
            for problem in e.problems:
                out(f"{TARGETS[target].name}: {problem}")
            continue
        path = Path(args.out) / f"deployment.{target}.json"
        write_manifest(manifest, path)
        image = _module_image(manifest)
        gpu = "GPU requested" if is_gpu_image(image) else "CPU image, no GPU requested"
        out(f"wrote {path} (image {image.rsplit('/', 1)[-1]}: {gpu})")
    return 1 if failed else 0


def cmd_validate(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    paths = [Path(p) for p in args.files] or sorted(CONFIG_DIR.glob("deployment.*.json"))
    if not paths:
        out("validate: no manifests in config/; run `make config` first")
        return 1
    failed = False
    for path in paths:
        target = _target_of(path)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            out(f"{path}: manifest/json: (document): {e}")
            failed = True
            continue
        found = check_manifest(manifest, target)
        for problem in found.problems:
            out(f"{path.name}: {problem}")
        for warning in found.warnings:
            out(f"{path.name}: {'error' if args.strict else 'warning'}: {warning}")
        bad = len(found.problems) + (len(found.warnings) if args.strict else 0)
        failed |= bool(bad)
        verdict = f"FAILED, {bad} problem(s)" if bad else "ok"
        if not bad and found.warnings:
            verdict = f"ok, {len(found.warnings)} warning(s) (--strict refuses them)"
        out(f"{path.name}: {verdict} (target {target})")
    return 1 if failed else 0


def cmd_env_example(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    text = render_env_example()
    if args.check:
        current = ENV_EXAMPLE.read_text(encoding="utf-8") if ENV_EXAMPLE.exists() else ""
        if current != text:
            out(".env.example is out of date: run `python -m tools.manifest env-example`")
            return 1
        return 0
    ENV_EXAMPLE.write_text(text, encoding="utf-8")
    out(f"wrote {ENV_EXAMPLE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from tools import manifest

    parser = argparse.ArgumentParser(
        prog="python -m tools.manifest", description=(manifest.__doc__ or "").split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="expand the templates into config/deployment.<target>.json")
    config.add_argument(
        "--platform", help=f"image platform from module.json (default IMAGE_PLATFORM or {DEFAULT_PLATFORM})"
    )
    config.add_argument("--env", default=str(ENV_FILE), help="the .env file (default: .env at the repository root)")
    config.add_argument("--out", default=str(CONFIG_DIR), help="output folder (default: config/)")
    config.add_argument("--target", dest="targets", action="append", choices=sorted(TARGETS), help="only this target")
    validate = sub.add_parser("validate", help="check manifests against the schemas and the target rules")
    validate.add_argument("files", nargs="*", help="manifests (default: config/deployment.*.json)")
    validate.add_argument("--strict", action="store_true", help="warnings (placeholders left in) fail too")
    example = sub.add_parser("env-example", help="rewrite .env.example from settings.ENV_VARS")
    example.add_argument("--check", action="store_true", help="only check that it is up to date")
    args = parser.parse_args(argv)
    if args.command == "config":
        args.targets = args.targets or list(TARGETS)
        return cmd_config(args)
    if args.command == "validate":
        return cmd_validate(args)
    return cmd_env_example(args)

"""`validate`: every rule a manifest must pass before it is deployed, and the warnings it should not carry.

    problems (exit 1): schemas, placeholders left unexpanded, createOptions, the module's contract with the
        code, routes, the IoT Edge runtime's support, the target's rules (docker_rules, ase_rules)
    warnings (exit 0; exit 1 with --strict): values still equal to .env.example placeholders (the registry
        and its password first), a runtime release newer than the support table

Every finding is one line `<rule>: <JSON place>: <what to do>`; no secret is ever printed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from tools.manifest.ase_rules import ase_problems
from tools.manifest.docker_rules import docker_problems
from tools.manifest.envfile import PLACEHOLDERS
from tools.manifest.expand import PLACEHOLDER
from tools.manifest.problem import AGENT, Problem
from tools.manifest.project import DOCKER_TARGETS, TARGETS
from tools.manifest.rules import create_options, module_problems, route_problems, strings
from tools.manifest.runtime_support import runtime_problems
from tools.manifest.schema import schema_problems

PLACEHOLDER_RULES = {
    "CONTAINER_REGISTRY_SERVER": "placeholder/registry-server",
    "CONTAINER_REGISTRY_PASSWORD": "placeholder/registry-password",
    "CONTAINER_REGISTRY_USERNAME": "placeholder/registry-username",
}


@dataclass
class Findings:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def check_manifest(manifest: Any, target: str, today: dt.date | None = None) -> Findings:
    """Every problem and warning of one manifest for `target` (docker, debug or ase) on `today`."""
    found = Findings(schema_problems(manifest))
    problems = found.problems
    texts = list(strings(manifest, "")) if isinstance(manifest, dict) else []
    for place, text in texts:
        for name in PLACEHOLDER.findall(text):
            problems.append(
                Problem("template/unexpanded", place.lstrip("."), f"placeholder ${{{name}}} left unexpanded")
            )
    content = manifest.get("modulesContent", {}) if isinstance(manifest, dict) else {}
    desired = content.get("$edgeAgent", {}).get("properties.desired", {})
    modules: dict[str, Any] = desired.get("modules", {}) or {}
    system: dict[str, Any] = desired.get("systemModules", {}) or {}
    options: dict[str, dict[str, Any]] = {}
    for group, members in (("systemModules", system), ("modules", modules)):
        for name, module in members.items():
            options[name] = create_options(
                module.get("settings", {}) or {}, f"{AGENT}.{group}.{name}.settings", problems
            )
    problems += module_problems(content, modules, options)
    problems += route_problems(content, modules)
    runtime, runtime_warnings = runtime_problems(system, today or dt.date.today())
    problems += runtime
    if target in DOCKER_TARGETS:
        problems += docker_problems(modules, options)
    elif target == "ase":
        problems += ase_problems(system, modules, options)
    else:
        problems.append(Problem("config/target", "(document)", f"unknown target {target!r}; use {', '.join(TARGETS)}"))
    found.warnings = placeholder_warnings(texts) + runtime_warnings
    return found


def validate_manifest(manifest: Any, target: str, today: dt.date | None = None) -> list[Problem]:
    """The problems (not the warnings) of one manifest."""
    return check_manifest(manifest, target, today).problems


def placeholder_warnings(texts: list[tuple[str, str]]) -> list[Problem]:
    """Manifest values still equal to the .env.example placeholders, in PLACEHOLDERS' order (registry first)."""
    warnings: list[Problem] = []
    for name, value in PLACEHOLDERS.items():
        exact = name != "CONTAINER_REGISTRY_SERVER"  # the server also appears inside image names
        places = [p.lstrip(".") for p, text in texts if (text == value if exact else value in text)]
        if places:
            more = f" (and {len(places) - 1} more places)" if len(places) > 1 else ""
            shown = "the password" if "PASSWORD" in name else repr(value)
            warnings.append(
                Problem(
                    PLACEHOLDER_RULES[name],
                    places[0],
                    f"{shown} is still the .env.example placeholder{more}: set {name} in .env, then make config",
                )
            )
    return warnings

"""The manifest against the official deployment schemas vendored in tools/schemas/ (from SchemaStore)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tools.manifest.problem import Problem
from tools.manifest.project import SCHEMA_DIR


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def json_place(prefix: str, path: Iterator[Any] | Any) -> str:
    """`a.b[2].c` from a JSON path (keys and indexes), under `prefix`."""
    parts = [prefix] if prefix else []
    for item in path:
        if isinstance(item, int) and parts:
            parts[-1] = f"{parts[-1]}[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts) or "(document)"


def schema_problems(manifest: Any) -> list[Problem]:
    """The manifest against the 2.0 deployment schema, and $edgeAgent / $edgeHub against their 1.1 schemas."""
    from jsonschema import Draft4Validator

    problems: list[Problem] = []
    whole = Draft4Validator(_schema("azure-iot-edge-deployment-2.0.json"))
    for error in sorted(whole.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
        problems.append(Problem("schema/deployment-2.0", json_place("", error.absolute_path), error.message))
    content = manifest.get("modulesContent", {}) if isinstance(manifest, dict) else {}
    for key, schema_file, rule in (
        ("$edgeAgent", "azure-iot-edgeagent-deployment-1.1.json", "schema/edgeagent-1.1"),
        ("$edgeHub", "azure-iot-edgehub-deployment-1.1.json", "schema/edgehub-1.1"),
    ):
        if key not in content:
            continue
        validator = Draft4Validator(_schema(schema_file))
        for error in sorted(validator.iter_errors({key: content[key]}), key=lambda e: list(e.absolute_path)):
            problems.append(Problem(rule, json_place("modulesContent", error.absolute_path), error.message))
    return problems

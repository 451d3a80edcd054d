"""The module's DTDL interface (modules/edge-inference/pnp/) and a check of JSON values against its schemas.

`conformance(value, schema)` lists where a value does not fit a DTDL v2 schema: primitives (boolean,
integer, double, string, dateTime), Object, Array, Map and Enum; null stands for a field left out. Names in
UNDECLARED are free-form on purpose (DTDL has no "any" schema) or too deep to declare, and are not checked.
`depth(schema)` is how many complex schemas a schema nests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL_FILE = ROOT / "modules" / "edge-inference" / "pnp" / "dtmi" / "edgeinference" / "edgeinference-1.json"
# a health alarm's details: its own shape per alarm; a mask's polygons [[[x, y], ...]]: inside a detection they would
# nest 6 complex schemas deep, and DTDL v2 allows 5; so would a camera profile's roi polygons and exclusion zones
UNDECLARED = frozenset({"details", "polygons", "exclude"})
MAX_DEPTH = 5  # DTDL v2: complex schemas nest at most 5 levels
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def interface() -> dict[str, Any]:
    return json.loads(MODEL_FILE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def contents(kind: str, **match: Any) -> dict[str, dict[str, Any]]:
    """Name -> element of one kind (Property, Telemetry, Command), filtered by other keys (writable=True)."""
    found = {}
    for element in interface()["contents"]:
        if element["@type"] == kind and all(element.get(k, False) == v for k, v in match.items()):
            found[element["name"]] = element
    return found


def conformance(value: Any, schema: Any, where: str = "$") -> list[str]:
    if value is None:
        return []
    if isinstance(schema, str):
        ok = {
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "double": isinstance(value, int | float) and not isinstance(value, bool),
            "string": isinstance(value, str),
            "dateTime": isinstance(value, str) and bool(_DATETIME.match(value)),
        }.get(schema, False)
        return [] if ok else [f"{where}: {value!r} is not {schema}"]
    kind = schema["@type"]
    if kind == "Object":
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        fields = {f["name"]: f["schema"] for f in schema["fields"]}
        errors = [f"{where}.{k}: not declared" for k in value if k not in fields and k not in UNDECLARED]
        for k, v in value.items():
            if k in fields:
                errors += conformance(v, fields[k], f"{where}.{k}")
        return errors
    if kind == "Array":
        if not isinstance(value, list):
            return [f"{where}: not an array"]
        return [e for i, v in enumerate(value) for e in conformance(v, schema["elementSchema"], f"{where}[{i}]")]
    if kind == "Map":
        if not isinstance(value, dict):
            return [f"{where}: not a map"]
        return [e for k, v in value.items() for e in conformance(v, schema["mapValue"]["schema"], f"{where}.{k}")]
    if kind == "Enum":
        allowed = [v["enumValue"] for v in schema["enumValues"]]
        return [] if value in allowed else [f"{where}: {value!r} not one of {allowed}"]
    return [f"{where}: unknown schema {kind}"]


def depth(schema: Any) -> int:
    """How many complex schemas (Object, Array, Map, Enum) nest in `schema`, itself included."""
    if isinstance(schema, str):
        return 0
    kind = schema["@type"]
    if kind == "Object":
        return 1 + max((depth(f["schema"]) for f in schema["fields"]), default=0)
    if kind == "Array":
        return 1 + depth(schema["elementSchema"])
    if kind == "Map":
        return 1 + depth(schema["mapValue"]["schema"])
    return 1

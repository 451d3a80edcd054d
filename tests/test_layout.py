"""The floor plan of the package, checked: every module imports, no import circle, small files that say what they
are for, and one place each for the environment, the IoT SDK, ONNX Runtime, threads, alarm names and pause
reasons. Read from the source with `ast` (nothing is guessed from file names)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from edge_inference.ops import alarms
from edge_inference.pipeline import gate

pytestmark = pytest.mark.timeout(60)

PACKAGE = Path(__file__).resolve().parents[1] / "modules" / "edge-inference" / "edge_inference"
MAX_LINES = 420  # "about 400"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """The package modules `name` imports anywhere in its file (top level, functions, TYPE_CHECKING blocks)."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("edge_inference"):
                found.add(target)
    return found


def test_every_module_imports() -> None:
    for name in modules():
        importlib.import_module(name)


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module -> modules it imports), as a path that ends where it began."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        stack.pop()
        state[node] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (circle := visit(name)):
            return circle
    return None


def test_no_import_circle() -> None:
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    assert sum(len(v) for v in graph.values()) > 150  # the walk really sees the imports
    assert find_circle(graph) is None, " -> ".join(find_circle(graph) or [])
    # and the walk would see one: the old pipeline <-> selftest pair
    assert find_circle({"a.pipeline": {"a.selftest"}, "a.selftest": {"a.pipeline"}, "a.b": set()}) == [
        "a.pipeline",
        "a.selftest",
        "a.pipeline",
    ]


def test_files_are_small_and_open_with_what_they_are_for() -> None:
    for name, path in modules().items():
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_LINES, f"{name} has {len(text.splitlines())} lines"
        assert ast.get_docstring(ast.parse(text)), f"{name} does not open with a docstring saying what it is for"


def uses(predicate_name: str) -> dict[str, list[str]]:
    """module -> what it uses, for a few things that must have one home each."""
    homes: dict[str, list[str]] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            hit = ""
            if predicate_name == "environ" and isinstance(node, ast.Attribute):
                if node.attr in ("environ", "getenv", "putenv") and getattr(node.value, "id", "") == "os":
                    hit = f"os.{node.attr}"
            elif predicate_name in ("azure", "onnxruntime") and isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                hit = next((m for m in mods if m.split(".")[0] == predicate_name), "")
            elif predicate_name == "Thread" and isinstance(node, ast.Call):
                func = node.func
                if (isinstance(func, ast.Attribute) and func.attr == "Thread") or getattr(func, "id", "") == "Thread":
                    hit = "threading.Thread(...)"
            if hit:
                homes.setdefault(name, []).append(hit)
    return homes


# The home of each, and the few other places with a reason of their own, written down here: a new one is a decision.
HOMES = {
    "environ": {
        "edge_inference.settings.reader": "the settings table, read",
        "edge_inference.settings.edge": "the IoT Edge runtime's variables",
        "edge_inference.vision.providers": "sets CUDA_CACHE_PATH for the CUDA driver (CUDA's variable, not a setting)",
        "edge_inference.gpu_smoke": "a program of its own (python -m edge_inference.gpu_smoke) that starts the model",
    },
    "azure": {"edge_inference.iot.client": "the one user of the IoT SDK"},
    "onnxruntime": {"edge_inference.vision.model": "the one place that makes ONNX Runtime sessions"},
    "Thread": {
        "edge_inference.workers": "the one thread base",
        "edge_inference.vision.decode_guard": "a short helper thread per decode, abandoned when it overruns its"
        " budget (OpenCV cannot be cancelled)",
    },
}


@pytest.mark.parametrize("what", sorted(HOMES))
def test_one_place_each_for_the_environment_the_sdk_onnx_runtime_and_threads(what: str) -> None:
    assert set(uses(what)) == set(HOMES[what])


def literal_homes(values: set[str]) -> dict[str, set[str]]:
    """value -> the modules that spell it as a string literal (docstrings are text, not literals: skipped)."""
    homes: dict[str, set[str]] = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in values:
                homes.setdefault(node.value, set()).add(name)
    return homes


def test_alarm_names_and_pause_reasons_are_spelt_in_one_place() -> None:
    assert set(alarms.ALARMS) == set(alarms.SEVERITY)
    for alarm, homes in literal_homes(set(alarms.ALARMS)).items():
        assert homes == {"edge_inference.ops.alarms"}, f"alarm {alarm} is spelt in {sorted(homes)}"
    reasons = {gate.TWIN_PAUSED, gate.INPUT_UNAVAILABLE, gate.OUTPUT_ERROR, gate.OUTPUT_FULL}
    for reason, homes in literal_homes(reasons).items():
        assert homes == {"edge_inference.pipeline.gate"}, f"pause reason {reason} is spelt in {sorted(homes)}"

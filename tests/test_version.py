"""The module's version is written once (`edge_inference.__version__`); every other place derives it or agrees.

pyproject.toml takes it from the package (setuptools' dynamic `attr`), module.json repeats it because iotedgedev
and VS Code read the image tag there, and the manifest tool tags images with module.json's version.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

import edge_inference
from tools.manifest.expand import module_image

pytestmark = pytest.mark.timeout(10)
ROOT = Path(__file__).resolve().parent.parent


def test_version_is_a_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[-.]?(?:a|b|rc)\d+)?", edge_inference.__version__)


def test_pyproject_takes_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "edge_inference.__version__"}


def test_module_json_and_the_image_tags_carry_the_same_version() -> None:
    spec = json.loads((ROOT / "modules" / "edge-inference" / "module.json").read_text(encoding="utf-8"))
    assert spec["image"]["tag"]["version"] == edge_inference.__version__
    image = module_image({"CONTAINER_REGISTRY_SERVER": "contoso.azurecr.io"}, "amd64")
    assert image == f"contoso.azurecr.io/edge-inference:{edge_inference.__version__}-amd64"


def test_no_other_file_spells_the_version_as_a_setting() -> None:
    version = re.escape(edge_inference.__version__)
    pattern = re.compile(rf"""(?:^|[\s"'])version\s*[=:]\s*["']{version}["']""", re.IGNORECASE)
    offenders = []
    for path in [ROOT / "pyproject.toml", *ROOT.glob("modules/edge-inference/edge_inference/**/*.py")]:
        if path.name != "__init__.py" and pattern.search(path.read_text(encoding="utf-8")):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []

"""The IoT Edge runtime (edgeAgent, edgeHub images) a manifest deploys, against Microsoft's support dates.

SUPPORT is the lifecycle table of IoT Edge releases (Microsoft's "IoT Edge versions and release notes" page:
LTS releases follow the .NET LTS they are built on; a stable release is supported until the next one).
`validate` refuses a runtime image whose release is past its end of support (`runtime/end-of-support`),
one it cannot place (`runtime/unknown-version`), and edgeAgent and edgeHub of different releases
(`runtime/mismatch`). A release newer than the newest in the table passes with a warning: add its row.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tools.manifest.problem import AGENT, Problem

RUNTIME_IMAGES = {
    "edgeAgent": "mcr.microsoft.com/azureiotedge-agent",
    "edgeHub": "mcr.microsoft.com/azureiotedge-hub",
}
TAG_SETTING = "EDGE_RUNTIME_TAG"


@dataclass(frozen=True)
class Release:
    version: str  # major.minor
    kind: str  # LTS or stable
    end_of_support: dt.date


SUPPORT: tuple[Release, ...] = (
    Release("1.0", "stable", dt.date(2021, 2, 28)),  # 1.0.x: until 1.1 (February 2021)
    Release("1.1", "LTS", dt.date(2022, 12, 13)),  # .NET Core 3.1
    Release("1.2", "stable", dt.date(2022, 6, 30)),  # until 1.3 (June 2022)
    Release("1.3", "stable", dt.date(2022, 8, 31)),  # until 1.4 (August 2022)
    Release("1.4", "LTS", dt.date(2024, 11, 12)),  # .NET 6
    Release("1.5", "LTS", dt.date(2026, 11, 10)),  # .NET 8
    Release("1.6", "LTS", dt.date(2028, 11, 14)),  # .NET 10
)
_TAG = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)(?:\.\d+)*(?:-[\w.-]+)?$")


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def supported(today: dt.date) -> Release:
    """The newest release in the table that is supported on `today` (the one to recommend)."""
    live = [r for r in SUPPORT if r.end_of_support >= today] or list(SUPPORT)
    return max(live, key=lambda r: _key(r.version))


def release_of(image: str) -> str | None:
    """`major.minor` of a runtime image tag (`...:1.6`, `...:1.6.0`, `...:1.5.3-linux-amd64`), else None."""
    match = _TAG.match(image.rpartition(":")[2]) if ":" in image.rsplit("/", 1)[-1] else None
    return f"{match['major']}.{match['minor']}" if match else None


def runtime_problems(system: Mapping[str, Any], today: dt.date) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) of the edgeAgent and edgeHub images."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    table = {r.version: r for r in SUPPORT}
    newest = max(SUPPORT, key=lambda r: _key(r.version))
    advice = supported(today)
    fix = f"use IoT Edge {advice.version} (supported to {advice.end_of_support}): {TAG_SETTING}={advice.version} in .env, then make config"
    releases: dict[str, str] = {}
    for name, repository in RUNTIME_IMAGES.items():
        image = str(((system.get(name) or {}).get("settings") or {}).get("image", ""))
        place = f"{AGENT}.systemModules.{name}.settings.image"
        if not image.startswith(f"{repository}:"):
            continue  # a private mirror or a custom build: its version cannot be read from the name
        release = release_of(image)
        if release is None:
            problems.append(Problem("runtime/unknown-version", place, f"{image!r} names no release; {fix}"))
            continue
        releases[name] = release
        known = table.get(release)
        if known is None and _key(release) > _key(newest.version):
            warnings.append(
                Problem(
                    "runtime/unknown-version",
                    place,
                    f"IoT Edge {release} is newer than the support table "
                    "(tools/manifest/runtime_support.py): add its end-of-support date",
                )
            )
        elif known is None:
            problems.append(Problem("runtime/unknown-version", place, f"IoT Edge {release} is not a release; {fix}"))
        elif known.end_of_support < today:
            problems.append(
                Problem(
                    "runtime/end-of-support",
                    place,
                    f"IoT Edge {release} {known.kind} reached its end of support on {known.end_of_support}; {fix}",
                )
            )
    if len(set(releases.values())) > 1:
        problems.append(
            Problem(
                "runtime/mismatch",
                f"{AGENT}.systemModules",
                "edgeAgent is IoT Edge "
                f"{releases['edgeAgent']} and edgeHub {releases['edgeHub']}: deploy one release of both",
            )
        )
    return problems, warnings

"""One broken rule, as `config` and `validate` report it: `<rule>: <JSON place>: <what and why, and the fix>`."""

from __future__ import annotations

from dataclasses import dataclass

AGENT = "modulesContent.$edgeAgent.properties.desired"
HUB = "modulesContent.$edgeHub.properties.desired"


@dataclass(frozen=True)
class Problem:
    """One broken rule: its id (`ase/no-binds`), the JSON place, and what to do."""

    rule: str
    place: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.place}: {self.message}"


class ManifestError(Exception):
    """`config` could not produce a manifest; `problems` says why, one line each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

"""The module twin: validation of desired properties, their IoT Plug and Play acknowledgements, and `TwinState`.

`validate_desired(desired, current)` looks at the whole patch (or the whole desired document, which the SDK
delivers after every reconnect: applying it again is harmless), builds the new `TwinSettings` from the valid
properties, keeps the value in force for each invalid one, and returns one acknowledgement per property in
the patch:

    {"value": <value in force>, "ac": 200 | 400, "av": <desired $version>, "ad": "<why>"}

Rules (DESIGN.md "Module twin"):
- `confidenceThreshold`, `iouThreshold`: a number 0..1 (JSON true/false, strings, null, NaN are refused);
- `maxDetections`: an integer 1..1000 (a float with no fraction, e.g. 100.0, counts as an integer);
- `classes`, `alertClasses`: a list of at most 1000 non-empty strings of at most 128 characters
  (duplicates removed, order kept);
- `saveAnnotated`, `paused`: true or false;
- `telemetry`: an object with any of `mode` (perFrame | summary | off), `summaryIntervalSeconds` (1..86400),
  `includeEmpty` (bool), merged with the values in force; an unknown or invalid field refuses the object;
- `classThresholds`, `profiles`: checked by iot/profile_rules.py against the model in service (its name and
  class names); a profile list that fails any rule is refused whole;
- `review`: an object with any of `classes` (as `classes` above), `confidenceBand` ([lo, hi], 0 <= lo <= hi <= 1,
  or [] for none), `sampleRate` (0..1), `maxPerHour` (0..100000), `crops` (bool), `padding` (0..1), merged with
  the values in force; an unknown or invalid field refuses the object;
- `model`, `candidate`: checked by rollout/spec.py (`parse_request`) in `TwinState.apply`, then handed to the
  model rollout (`ModelRequests`, rollout/controller.py), which acknowledges them: `ac: 202` while it fetches,
  verifies and warms, then 200, 400 or 500 (README "Updating the model in the field");
- `$version` / `$metadata` and other `$` keys are ignored; any other unknown key gets `ac: 400`
  ("unknown property") without blocking the rest (at most MAX_UNKNOWN_ACKS of them are acknowledged, so a
  huge document cannot blow up the reported properties).
A property absent from the patch keeps its value. Nothing here raises on any JSON value: a number no float can
hold (`10**400`), NaN, a huge integer, a wrong type or deep nesting is a 400 with the reason, and a property
whose check fails in a way nobody foresaw is refused too ("cannot be read") rather than losing the whole patch.

`TwinState` (below) holds what applying them leaves behind: the desired `$version` in force; the reported
properties waiting to be sent are `ReportedProperties`, which the model rollout also writes (from its thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from edge_inference.iot import profile_rules
from edge_inference.iot.profile_rules import ServedModel
from edge_inference.iot.twin_values import MAX_UNKNOWN_ACKS, Invalid, convert
from edge_inference.ops.live_settings import (
    TWIN_PROPERTIES,
    LiveSettings,
    TwinSettings,
)
from edge_inference.ops.metrics import MetricsRegistry
from edge_inference.rollout.spec import (
    MODEL_PROPERTIES,
    BadSpec,
    ModelKind,
    ModelSpec,
    Rollback,
    SpecRules,
    digest,
    parse_request,
)

log = logging.getLogger(__name__)


def _convert(name: str, value: Any, current: TwinSettings, model: ServedModel | None) -> Any:
    """The TwinSettings field value for a desired property, or Invalid: the camera profiles' rules need the model
    in service (iot/profile_rules.py), every other property's are in iot/twin_values.py."""
    if name == "profiles":
        return profile_rules.profiles(value, model)
    if name == "classThresholds":
        return profile_rules.class_thresholds(value, model)
    return convert(name, value, current)


def desired_version(desired: Any) -> int | None:
    version = desired.get("$version") if isinstance(desired, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def validate_desired(
    desired: dict[str, Any], current: TwinSettings, model: ServedModel | None = None
) -> tuple[TwinSettings, dict[str, dict[str, Any]]]:
    """Validate a whole desired patch against the settings in force (and the model in service: the class names and
    model name that `classThresholds` and `profiles` may use; None: not checked).

    Returns the new settings (valid properties applied, invalid ones kept at their current value) and the
    acknowledgement per property for the reported properties. Never raises."""
    if not isinstance(desired, dict):
        return current, {}
    version = desired_version(desired)
    changes: dict[str, Any] = {}
    acks: dict[str, dict[str, Any]] = {}
    unknown = 0
    for key, value in desired.items():
        if not isinstance(key, str) or key.startswith("$") or key in MODEL_PROPERTIES:
            continue  # the model properties: TwinState.apply hands them to the rollout
        field_name = TWIN_PROPERTIES.get(key)
        if field_name is None:
            unknown += 1
            if unknown <= MAX_UNKNOWN_ACKS:
                acks[key[:128]] = {"value": None, "ac": 400, "av": version, "ad": "unknown property"}
            continue
        try:
            changes[field_name] = _convert(key, value, current, model)
        except Invalid as e:
            acks[key] = {"ac": 400, "av": version, "ad": f"refused: {e}"}
        except Exception as e:  # a value no rule foresaw: refused, never the whole patch lost
            acks[key] = {"ac": 400, "av": version, "ad": f"refused: the value cannot be read ({type(e).__name__})"}
    new = replace(current, **changes) if changes else current
    in_force = new.as_twin()
    for key in TWIN_PROPERTIES:
        if key in acks:
            acks[key] = {"value": in_force[key], **acks[key]}
        elif key in desired:
            acks[key] = {"value": in_force[key], "ac": 200, "av": version, "ad": "applied"}
    return new, acks


def rejected_count(acks: dict[str, dict[str, Any]]) -> int:
    """Acknowledgements that refuse (400, 500); 200, 202 (in progress) and 203 (boot value) do not."""
    return sum(1 for ack in acks.values() if ack.get("ac") not in (200, 202, 203))


class ModelRequests(Protocol):
    """The model rollout as the twin sees it (rollout/controller.py): it acknowledges `model` and `candidate`."""

    @property
    def rules(self) -> SpecRules: ...

    def desired(
        self,
        kind: ModelKind,
        request: ModelSpec | Rollback | BadSpec | None,
        *,
        version: int | None,
        full: bool,
        absent: bool,
        fingerprint: str,
    ) -> dict[str, Any]:
        """Take a desired value (checked; a BadSpec is a refusal) and return its acknowledgement."""
        ...


class ReportedProperties:
    """Reported properties waiting to be sent, newest value per key; thread-safe (the IoT client's owner
    thread sends them, the model rollout adds its acknowledgements and `runtime` from its own thread).
    `subscribe(wake)`: called after every `put`, so the sender need not wait for its next round."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def put(self, patch: dict[str, Any]) -> None:
        with self._lock:
            self._pending.update(patch)
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def take(self) -> dict[str, Any]:
        with self._lock:
            patch, self._pending = self._pending, {}
        return patch

    def put_back(self, patch: dict[str, Any]) -> None:
        with self._lock:
            self._pending = {**patch, **self._pending}

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._pending

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._pending)


class TwinState:
    """The twin's application state on this side: which desired `$version` is in force, and the reported
    properties waiting to be sent (acknowledgements, `runtime`, `stats`). The IoT client's owner thread applies
    patches; the SDK calls stay in `iot/client.py`.

    `apply(desired, full=...)` validates a patch (or the whole desired document after a (re)connect), swaps
    the live settings, counts applied/refused properties and queues their acknowledgements; `model` and
    `candidate` go to the model rollout (`models`), which acknowledges them; a patch older than the version in
    force is skipped. `take_reported()` hands the queue over for one reported-properties patch; `put_back()`
    returns it after a failed send, under anything queued meanwhile."""

    def __init__(
        self,
        live: LiveSettings,
        metrics: MetricsRegistry,
        reported: ReportedProperties | None = None,
        models: ModelRequests | None = None,
        *,
        served: Callable[[], ServedModel] | None = None,
    ) -> None:
        self.live = live
        self.metrics = metrics
        self.reported = reported if reported is not None else ReportedProperties()
        self.models = models
        # the model in service (read at each patch: after a rollout, the new one), which `profiles` and
        # `classThresholds` are checked against; None: not checked
        self.served = served
        self.applied_version: int | None = None
        self._runtime_reported = False
        self._last_stats: dict[str, Any] | None = None

    @property
    def has_pending(self) -> bool:
        return bool(self.reported)

    def take_reported(self) -> dict[str, Any]:
        return self.reported.take()

    def put_back(self, patch: dict[str, Any]) -> None:
        self.reported.put_back(patch)

    def report_runtime_once(self, runtime_info: Callable[[], dict[str, Any]]) -> None:
        """Queue `runtime` the first time the twin is synced in this process."""
        if self._runtime_reported:
            return
        try:
            self.reported.put({"runtime": runtime_info()})
        except Exception:
            log.exception("runtime_info failed")
        self._runtime_reported = True

    def offer_stats(self, stats: dict[str, Any]) -> bool:
        """Queue `stats` when they differ from the last ones queued; True when queued."""
        if stats == self._last_stats:
            return False
        self._last_stats = stats
        self.reported.put({"stats": stats})
        return True

    def apply(self, desired: Any, *, full: bool) -> None:
        if not isinstance(desired, dict):
            log.warning("twin desired properties are not an object; ignored")
            return
        version = desired_version(desired)
        if version is not None and self.applied_version is not None and version < self.applied_version:
            log.info("twin patch $version %s older than the applied %s: skipped", version, self.applied_version)
            return
        current = self.live.current()
        new, acks = validate_desired(desired, current, self.served() if self.served else None)
        changes = {
            field: getattr(new, field)
            for field in TWIN_PROPERTIES.values()
            if getattr(new, field) != getattr(current, field)
        }
        if changes:
            self.live.update(**changes)
        if version is not None:
            self.applied_version = version
        acks.update(self._model_acks(desired, version, full))
        rejected = rejected_count(acks)
        if len(acks) - rejected:
            self.metrics.twin_updates.labels(result="applied").inc(len(acks) - rejected)
        if rejected:
            self.metrics.twin_updates.labels(result="rejected").inc(rejected)
            log.warning(
                "twin: %d desired properties refused: %s",
                rejected,
                "; ".join(f"{k}: {a.get('ad')}" for k, a in acks.items() if rejected_count({k: a}))[:1000],
            )
        if changes:
            log.info("twin $version %s applied: %s", version, ", ".join(sorted(changes)))
        if full:  # at start: report the value in force of every writable property not in desired
            in_force = self.live.current().as_twin()
            for key in TWIN_PROPERTIES:
                if key not in acks:
                    acks[key] = {"value": in_force[key], "ac": 203, "av": version or 0, "ad": "boot value"}
        self.reported.put(acks)

    def _model_acks(self, desired: dict[str, Any], version: int | None, full: bool) -> dict[str, dict[str, Any]]:
        """`model` and `candidate`: checked here, acknowledged by the rollout."""
        acks: dict[str, dict[str, Any]] = {}
        for kind in MODEL_PROPERTIES:
            absent = kind not in desired
            if absent and not full:
                continue
            value = desired.get(kind)
            if self.models is None:
                if not absent:
                    acks[kind] = {
                        "value": None,
                        "ac": 400,
                        "av": version,
                        "ad": "refused: model rollout is not available",
                    }
                continue
            request: ModelSpec | Rollback | BadSpec | None
            try:
                request = parse_request(kind, value, self.models.rules)
            except BadSpec as exc:
                request = exc
            except Exception as exc:  # a value no rule foresaw: refused, never the whole patch lost
                request = BadSpec(f"the value cannot be read ({type(exc).__name__})")
            try:
                fingerprint = digest(value)
            except Exception:  # too deep to serialise: refused above already
                fingerprint = "unreadable"
            acks[kind] = self.models.desired(
                kind, request, version=version, full=full, absent=absent, fingerprint=fingerprint
            )
        return acks

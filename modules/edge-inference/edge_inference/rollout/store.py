"""The model cache in STATE_DIR/models and what the rollout remembers across restarts.

    <sha256>.onnx           a model fetched (or copied from MODELS_DIR) and hash-checked
    <sha256>.labels.txt     its class names, when the twin gave `labelsUrl`
    <sha256>.onnx.part      a download in progress (resumed after a cut connection or a restart)
    rollout.json            the active model, the models before it (rollback targets, newest first), the
                            candidate, a probation or a rollout in progress, the acknowledgements last reported,
                            and whether the last run ended cleanly (written atomically: temp file, fsync, rename)

The boot model (MODEL_PATH) is the first entry of the history and never counts against MODEL_CACHE_COUNT; the
cache keeps at most MODEL_CACHE_COUNT twin models: the active one, the candidate and a download in progress
first, then the newest of the history; older files are deleted and their entries forgotten. Nothing here holds
a URL's query: entries keep the shown (redacted) source only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_inference.entities import utc_now_iso

log = logging.getLogger(__name__)

STATE_FILE = "rollout.json"
FORMAT = 1


@dataclass(frozen=True)
class ModelEntry:
    """A model the module knows: its hash and name, where it came from (shown form), whether it has labels."""

    sha256: str
    name: str
    version: str
    source: dict[str, Any] = field(default_factory=dict)  # {"url": redacted} | {"path": rel} | {"boot": true}
    labels: bool = False

    @property
    def boot(self) -> bool:
        return bool(self.source.get("boot"))

    @property
    def title(self) -> str:
        return f"{self.name} {self.version}"

    def shown(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, **self.source}

    @classmethod
    def from_dict(cls, raw: Any) -> ModelEntry | None:
        if not isinstance(raw, dict):
            return None
        try:
            return cls(
                str(raw["sha256"]),
                str(raw["name"]),
                str(raw["version"]),
                dict(raw.get("source") or {}),
                bool(raw.get("labels")),
            )
        except (KeyError, TypeError, ValueError):
            return None


class ModelStore:
    """The cache folder and rollout.json; thread-safe (the rollout worker writes, getModels reads)."""

    def __init__(self, folder: Path, cache_count: int) -> None:
        self.folder = folder
        self.cache_count = cache_count
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._state: dict[str, Any] = self._read()

    # -- files ----------------------------------------------------------------------------------------------
    def model_file(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.onnx"

    def labels_file(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.labels.txt"

    def part_file(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.onnx.part"

    def has(self, entry: ModelEntry) -> bool:
        """The entry's files are here (the boot model always is)."""
        if entry.boot:
            return True
        return self.model_file(entry.sha256).is_file() and (
            not entry.labels or self.labels_file(entry.sha256).is_file()
        )

    def write_labels(self, sha256: str, data: bytes) -> None:
        path = self.labels_file(sha256)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- what is remembered ---------------------------------------------------------------------------------
    def active(self) -> ModelEntry | None:
        """The twin model that was serving (None: the boot model)."""
        return ModelEntry.from_dict(self.get("active"))

    def history(self) -> list[ModelEntry]:
        return [e for e in (ModelEntry.from_dict(r) for r in self.get("history") or []) if e is not None]

    def candidate(self) -> dict[str, Any] | None:
        value = self.get("candidate")
        return dict(value) if isinstance(value, dict) else None

    def get(self, key: str) -> Any:
        with self._lock:
            return self._state.get(key)

    def update(self, **changes: Any) -> None:
        """Change some keys and write rollout.json at once."""
        with self._lock:
            self._state.update(changes)
            self._write()

    def activate(self, entry: ModelEntry, before: ModelEntry, *, probation: bool) -> None:
        """`entry` serves now; `before` (what served) becomes the newest rollback target."""
        with self._lock:
            history = [before, *(e for e in self.history() if e.sha256 not in (before.sha256, entry.sha256))]
            self._state["active"] = None if entry.boot else asdict(entry)
            self._state["history"] = [asdict(e) for e in history]
            self._state["probation"] = {"sha256": entry.sha256, "since": time.time()} if probation else None
            self._touch(entry)
            self._evict()
            self._write()

    def rolled_back(self, to: ModelEntry, given_up: ModelEntry) -> None:
        """`to` (the newest rollback target) serves again; `given_up` leaves the history."""
        with self._lock:
            history = [e for e in self.history() if e.sha256 not in (to.sha256, given_up.sha256)]
            self._state["active"] = None if to.boot else asdict(to)
            self._state["history"] = [asdict(e) for e in history]
            self._state["probation"] = None
            self._touch(to)
            self._evict()
            self._write()

    def rollback_target(self) -> ModelEntry | None:
        """The newest model before the active one whose files are still here."""
        return next((e for e in self.history() if self.has(e)), None)

    def cached(self) -> list[dict[str, Any]]:
        """The twin models in the cache, newest use first (getModels)."""
        with self._lock:
            cached = dict(self._state.get("cached") or {})
        rows = []
        for sha, row in cached.items():
            entry = ModelEntry.from_dict({**row, "sha256": sha})
            if entry is not None and self.model_file(sha).is_file():
                rows.append({**entry.shown(), "sizeBytes": row.get("sizeBytes"), "lastUsedAt": row.get("lastUsedAt")})
        return sorted(rows, key=lambda r: str(r.get("lastUsedAt", "")), reverse=True)

    def remember(self, entry: ModelEntry) -> None:
        """A model fetched into the cache (kept by the cache rules like any other)."""
        with self._lock:
            self._touch(entry)
            self._evict()
            self._write()

    def _touch(self, entry: ModelEntry) -> None:
        if entry.boot:
            return
        cached = dict(self._state.get("cached") or {})
        size = self.model_file(entry.sha256).stat().st_size if self.model_file(entry.sha256).exists() else None
        cached[entry.sha256] = {**asdict(entry), "sizeBytes": size, "lastUsedAt": utc_now_iso()}
        cached[entry.sha256].pop("sha256", None)
        self._state["cached"] = cached

    # -- the cache's bound ----------------------------------------------------------------------------------
    def _evict(self) -> None:
        pinned = list(dict.fromkeys(self._pinned()))
        history = [e.sha256 for e in self.history() if not e.boot]
        others = [sha for sha in dict.fromkeys(history + self._by_use()) if sha not in pinned]
        kept = set(pinned) | set(others[: max(0, self.cache_count - len(pinned))])
        for path in self.folder.iterdir():
            sha = path.name.split(".", 1)[0]
            if len(sha) == 64 and sha not in kept and not path.name.endswith(".part"):
                with contextlib.suppress(OSError):
                    path.unlink()
                    log.info("model cache: %s removed (MODEL_CACHE_COUNT=%d)", path.name, self.cache_count)
        self._state["cached"] = {k: v for k, v in (self._state.get("cached") or {}).items() if k in kept}
        self._state["history"] = [asdict(e) for e in self.history() if e.boot or e.sha256 in kept]

    def _pinned(self) -> list[str]:
        pinned = []
        active = self.active()
        if active is not None:
            pinned.append(active.sha256)
        for key in ("candidate", "pending"):
            value = self._state.get(key)
            if isinstance(value, dict) and isinstance(value.get("sha256"), str):
                pinned.append(value["sha256"])
        return pinned

    def _by_use(self) -> list[str]:
        cached = self._state.get("cached") or {}
        return sorted(cached, key=lambda k: str(cached[k].get("lastUsedAt", "")), reverse=True)

    def remove_parts(self, keep: str | None) -> None:
        """Delete downloads in progress other than `keep`'s (at start: nothing else will resume them)."""
        for path in self.folder.glob("*.onnx.part"):
            if keep is None or not path.name.startswith(keep):
                with contextlib.suppress(OSError):
                    path.unlink()

    # -- rollout.json -----------------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        path = self.folder / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": FORMAT}
        except (OSError, ValueError) as exc:
            log.error("model rollout state %s cannot be read (%s): starting on MODEL_PATH", path, exc)
            return {"format": FORMAT}
        if not isinstance(state, dict):
            return {"format": FORMAT}
        return state

    def _write(self) -> None:
        path = self.folder / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

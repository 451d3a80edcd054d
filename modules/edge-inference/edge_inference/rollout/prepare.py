"""A requested model made ready to serve: into the cache (found there, copied from MODELS_DIR or downloaded, its
labels too), then loaded, checked and warmed beside the serving model (verify.py). The lane's state follows
each step (fetching with bytes, verifying, warming); a failure is a `RolloutError` whose text holds no secret.

While it works, `rollout.json` holds the request as `pending` (its fingerprint, the model's hash, the phase): a
restart resumes a download (the part file stays), and a start after a run that died while verifying a model
does not verify it again (rollout/controller.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_inference.errors import RolloutError
from edge_inference.rollout.fetch import FetchCancelled, ModelDownloader, Wait, copy_confined
from edge_inference.rollout.record import RolloutRecord
from edge_inference.rollout.spec import ModelKind, ModelSpec, Scrubber
from edge_inference.rollout.store import ModelEntry, ModelStore
from edge_inference.rollout.verify import ModelVerifier
from edge_inference.settings import Settings
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.model_spec import file_sha256

log = logging.getLogger(__name__)


class ModelPreparer:
    """Used on the rollout worker's thread only."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        downloader: ModelDownloader,
        verifier: ModelVerifier,
        record: RolloutRecord,
    ) -> None:
        self.settings = settings
        self.store = store
        self.downloader = downloader
        self.verifier = verifier
        self.record = record

    def prepare(
        self,
        lane: ModelKind,
        spec: ModelSpec,
        fingerprint: str,
        wait: Wait,
        *,
        strict: bool = True,
        threads: int | None = None,
    ) -> OnnxModel:
        """The spec's model, loaded, checked and warmed, not serving yet (RolloutError with the reason)."""
        scrub = spec.scrubber()
        pending = {"kind": lane, "fingerprint": fingerprint, "sha256": spec.sha256}
        self.store.update(pending={**pending, "phase": "fetching"})
        try:
            model = self._ready(lane, spec, scrub, wait, pending, strict, threads)
        except FetchCancelled:
            raise  # `pending` stays: a stop is resumed at the next start, a newer request writes its own
        except RolloutError as exc:
            self.store.update(pending=None)
            raise RolloutError(scrub(str(exc)), exc.ac) from None
        except BaseException:
            self.store.update(pending=None)
            raise
        self.store.update(pending=None)
        return model

    def _ready(
        self,
        lane: ModelKind,
        spec: ModelSpec,
        scrub: Scrubber,
        wait: Wait,
        pending: dict[str, str],
        strict: bool,
        threads: int | None,
    ) -> OnnxModel:
        file = self._obtain(lane, spec, scrub, wait)
        labels = self.store.labels_file(spec.sha256)
        if spec.labels_url:
            self.store.write_labels(spec.sha256, self.downloader.fetch_small(spec.labels_url, scrub=scrub, wait=wait))
        elif spec.url or spec.path:
            labels.unlink(missing_ok=True)  # this spec names no labels: an old file must not name its classes
        self.store.update(pending={**pending, "phase": "verifying"})
        self.record.set_state(lane, "verifying", spec.shown())
        model = self.verifier.load(
            file,
            labels=labels if labels.is_file() else None,
            identity=(spec.name, spec.version),
            sha256=spec.sha256,
            threads=threads,
            strict=strict,
            on_checked=lambda: self.record.set_state(lane, "warming", spec.shown()),
        )
        active = self.verifier.slot.active
        if lane == "candidate" and model.task != active.task:
            raise RolloutError(
                f"the candidate is a {model.task} model and the active one a {active.task} model:"
                " their findings cannot be compared",
                400,
            )
        return model

    def entry_of(self, spec: ModelSpec) -> ModelEntry:
        """How the store remembers a prepared spec (its source shown without secrets)."""
        source = {"url": spec.shown()["url"]} if spec.url else ({"path": spec.path} if spec.path else {})
        return ModelEntry(spec.sha256, spec.name, spec.version, source, self.store.labels_file(spec.sha256).is_file())

    def _obtain(self, lane: ModelKind, spec: ModelSpec, scrub: Scrubber, wait: Wait) -> Path:
        file = self.store.model_file(spec.sha256)
        if file.is_file():
            if file_sha256(file) == spec.sha256:
                log.info("model %s found in the cache", spec.title)
                return file
            file.unlink()  # damaged: fetched again
        self.record.set_state(lane, "fetching", spec.shown(), bytes=0, totalBytes=spec.size_bytes)
        part = self.store.part_file(spec.sha256)
        max_bytes = self.downloader.rules.max_bytes
        if spec.path is not None and self.settings.models_dir is not None:
            return copy_confined(self.settings.models_dir, spec.path, part, sha256=spec.sha256, max_bytes=max_bytes)
        if spec.url is None:
            raise RolloutError(f"{spec.title} is no longer in the model cache", 500)
        return self.downloader.download(
            spec.url,
            part,
            sha256=spec.sha256,
            size_bytes=spec.size_bytes,
            scrub=scrub,
            progress=lambda got, total: self.record.progress(lane, got, total),
            wait=wait,
        )

"""Which model the module starts on: the one the rollout left active (STATE_DIR), else MODEL_PATH.

    the remembered model      loaded from the cache, hash checked first, with no network needed: a restart
                              (online or not) comes back on the model the twin rolled out, not on MODEL_PATH
    a crash on probation      when the last run did not end cleanly while a swapped-in model was still on
                              probation, that model is taken for the cause: the model before it is started
                              instead (and `modelRolledBack` raised once the alarms can be sent)
    a damaged cache           a remembered model whose file is gone, changed, or no longer loads: MODEL_PATH,
                              with the reason (`modelRolledBack` too)

`rollout.json`'s `running` flag is set here and cleared by a clean stop (rollout/controller.py `close`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_inference.errors import ModelError
from edge_inference.rollout.store import ModelEntry, ModelStore
from edge_inference.settings import Settings
from edge_inference.vision.model import OnnxModel
from edge_inference.vision.model_spec import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartingModel:
    model: OnnxModel
    entry: ModelEntry
    rolled_back: str = ""  # why the remembered model was not started ("" when it was, or there was none)
    unclean: bool = False  # the last run did not stop cleanly


def boot_entry(model: OnnxModel) -> ModelEntry:
    return ModelEntry(model.sha256, model.name, model.version, {"boot": True})


def load_entry(settings: Settings, store: ModelStore, entry: ModelEntry) -> OnnxModel:
    """A remembered twin model from the cache (ModelError when it is missing, changed or does not load)."""
    file = store.model_file(entry.sha256)
    if not store.has(entry):
        raise ModelError(f"its file {file.name} is not in the model cache")
    if file_sha256(file) != entry.sha256:
        raise ModelError(f"its file {file.name} in the model cache does not match its sha256")
    labels = store.labels_file(entry.sha256) if entry.labels else None
    return OnnxModel(settings, path=file, labels_path=labels, identity=(entry.name, entry.version), sha256=entry.sha256)


def starting_model(settings: Settings, store: ModelStore) -> StartingModel:
    """Load the model to start on (ModelError/ProviderError from MODEL_PATH itself propagate: exit 2)."""
    unclean = store.get("running") is True
    store.update(running=True)
    active = store.active()
    reason = ""
    probation = store.get("probation")
    if active is not None and unclean and isinstance(probation, dict) and probation.get("sha256") == active.sha256:
        reason = f"the module stopped without a clean shutdown while {active.title} was on probation"
        target = store.rollback_target()
        if target is not None:
            store.rolled_back(target, active)
        else:
            store.update(active=None, probation=None)
        active = store.active()
    if active is not None:
        try:
            model = load_entry(settings, store, active)
        except ModelError as exc:
            reason = f"the remembered model {active.title} cannot be started: {exc}"
            log.error("%s; starting on MODEL_PATH", reason)
            store.update(active=None, probation=None)
        else:
            log.info("starting on the model the twin rolled out: %s (%s)", active.title, active.sha256[:12])
            return StartingModel(model, active, reason, unclean)
    model = OnnxModel(settings)
    if reason:
        log.error("model rolled back at start: %s; serving %s %s", reason, model.name, model.version)
    return StartingModel(model, boot_entry(model), reason, unclean)

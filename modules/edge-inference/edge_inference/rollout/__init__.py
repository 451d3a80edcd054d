"""Model rollout from the module twin: named models fetched, verified, warmed, swapped, rolled back, and a
candidate evaluated on live frames first.

    spec.py         what the twin's `model` / `candidate` may say (checked), secrets kept out of what is shown
    fetch.py        HTTPS downloads (urllib3): resume, size cap, timeouts, retries, the hash checked before use
    store.py        the model cache in STATE_DIR/models and the rollout's memory (active model, history, acks)
    verify.py       a second session with the same providers: start-up checks, GPU memory, warm-up, self-test
    prepare.py      a requested model into the cache and through verify.py, its state followed
    record.py       the state machine of the model and candidate lanes, the acknowledgements, reported runtime
    controller.py   the `model-rollout` worker: requests, the swap, rollbacks, the candidate, alarms
    startup.py      which model the module starts on (the remembered one, or MODEL_PATH)
    shadow.py       the candidate on spare capacity: sampled frames, compared, reported (`modelEvaluation`)
    agreement.py    how a candidate's detections are compared with the active model's (per class, IoU 0.5)

Sessions are made by vision/model.py only; which model serves is vision/serving.py's `ModelSlot`.
"""

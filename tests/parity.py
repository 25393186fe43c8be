"""Parity with the offline step: a generated sequence scored by a served endpoint, one binary-mode event at a time,
against the trainer's fold over the same events at float16 state (issue 4: max |delta| <= 1e-5).

Shared by the scorer's tests and the KServe reference's: any server that answers a binary CloudEvent with JSON data
holding ``score`` can be checked. tests/ is on sys.path under pytest.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import numpy as np
import requests
import torch
from cloudevents.core.bindings import http as ce_http

from functions.contract import transaction_event
from functions.generator import GeneratorConfig, generate_columns
from functions.model.package import load_predictor
from functions.trainer.stream import build_stream
from functions.trainer.tbptt import run_stream

MAX_ABS_DELTA = 1e-5


def assert_served_scores_equal_the_offline_step(url: str, model_uri: str, count: int = 150) -> None:
    columns, _ = generate_columns(GeneratorConfig.preset("tiny", seed=3))
    # Entities of their own: other tests may have scored the same generated cards on a shared server.
    run = uuid.uuid4().hex[:8]
    columns = replace(columns, card_id=np.array([f"{run}-{c}" for c in columns.card_id], dtype=object),
                      merchant_id=np.array([f"{run}-{m}" for m in columns.merchant_id], dtype=object))
    with requests.Session() as session:
        served = []
        for i in range(count):
            event_id, time_text, data = columns.transaction(i)
            event = transaction_event(f"parity-{run}-{event_id}", data, time=time_text)
            message = ce_http.to_binary_event(event)
            reply = session.post(url, headers=message.headers, data=message.body, timeout=30)
            assert reply.status_code == 200, reply.text
            served.append(reply.json()["score"])

    predictor = load_predictor(model_uri)
    subset = type(columns)(**{name: getattr(columns, name)[:count] for name in columns.__dataclass_fields__})
    torch.set_num_threads(1)
    offline = run_stream(predictor.model, build_stream(subset, predictor.spec))
    assert np.max(np.abs(np.array(served) - offline)) <= MAX_ABS_DELTA

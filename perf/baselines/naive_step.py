"""The naive baseline's work for one event: GET both states, one GRU step at batch 1, SET both.

Read-modify-write without any guard, as straightforward code does: no compare-and-set, no dedupe, no batching. Two
runtimes serve it: the Flask app of ``perf.baselines.naive_scorer`` (gunicorn sync workers) and the KServe model
server of ``perf.baselines.kserve_predictor``. So this module imports no CloudEvents SDK: KServe 0.21 pins SDK v1,
the project SDK v2, and they cannot share an environment.

States use an encoding of their own under their own prefix, not the state service's protocol:
``hs:naive:<namespace>:<card|merchant>:<id>`` holds ``<dIBH`` (last event time, seq, last channel, last country)
followed by the float16 hidden state. The ``hs:`` prefix keeps it inside what the least-privileged Valkey user may
touch, so it runs with the same ``VALKEY_URL`` as the real scorer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
import valkey

from functions.model import EntityContext, events_from_transactions
from functions.model.features import TransactionFields, encode_features
from functions.model.package import Predictor

KEY_PREFIX = "hs:naive:"
_HEADER = struct.Struct("<dIBH")  # last event time (Unix s), seq, last channel code, last country code


class NaiveTransaction(TransactionFields, Protocol):
    """What the baseline reads of a transaction: the encoder's fields plus the two entities."""

    @property
    def card_id(self) -> str: ...
    @property
    def merchant_id(self) -> str: ...


class NaiveScore(NamedTuple):
    score: float
    card_seq: int  # events the card has absorbed, this one included (the contract's score data)
    merchant_seq: int


@dataclass
class NaiveState:
    """One entity as the baseline stores it."""

    hidden: np.ndarray  # float16 [H]
    last_time_s: float = 0.0
    seq: int = 0
    channel: int = 0
    country: int = 0

    def encode(self) -> bytes:
        return _HEADER.pack(self.last_time_s, self.seq, self.channel, self.country) + self.hidden.tobytes()

    @classmethod
    def decode(cls, blob: bytes | None, hidden_size: int) -> NaiveState:
        if not blob:
            return cls(np.zeros(hidden_size, np.float16))
        last_time_s, seq, channel, country = _HEADER.unpack_from(blob)
        return cls(np.frombuffer(blob, np.float16, hidden_size, _HEADER.size).copy(), last_time_s, seq, channel,
                   country)


def state_key(namespace: str, entity_type: str, entity_id: str) -> str:
    return f"{KEY_PREFIX}{namespace}:{entity_type}:{entity_id}"


def _context(state: NaiveState) -> EntityContext:
    return EntityContext(np.array([state.seq > 0]), np.array([state.last_time_s]), np.array([state.channel]),
                         np.array([state.country]))


def score_one(predictor: Predictor, client: valkey.Valkey, t: NaiveTransaction) -> NaiveScore:
    """GET both states, one step at batch 1, SET both."""
    namespace, hidden_size = predictor.namespace, predictor.spec.hidden_size
    card_key = state_key(namespace, "card", t.card_id)
    merchant_key = state_key(namespace, "merchant", t.merchant_id)
    card = NaiveState.decode(client.get(card_key), hidden_size)
    merchant = NaiveState.decode(client.get(merchant_key), hidden_size)
    events = events_from_transactions([t])
    features = encode_features(events, _context(card), _context(merchant), predictor.spec)
    with torch.inference_mode():
        step = predictor.model.step(
            torch.from_numpy(card.hidden.astype(np.float32)).unsqueeze(0),
            torch.from_numpy(merchant.hidden.astype(np.float32)).unsqueeze(0),
            features,
        )
    channel, country = int(events.channel[0]), int(events.country[0])
    for key, state, new_hidden in ((card_key, card, step.card_states), (merchant_key, merchant, step.merchant_states)):
        state.hidden = new_hidden[0].to(torch.float16).numpy()
        state.last_time_s = max(state.last_time_s, t.event_time_s)
        state.seq += 1
        state.channel, state.country = channel, country
        client.set(key, state.encode())
    return NaiveScore(min(max(float(step.scores[0]), 0.0), 1.0), card.seq, merchant.seq)

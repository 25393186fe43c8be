"""A transaction stream as training tensors: features with each entity's previous-event context, labels, windows.

The context is what the scorer would read from Valkey for an in-order stream: the time, channel and country of the
entity's previous event. Computing it here with the scorer's own ``encode_features`` keeps training and serving equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from functions.model import CHANNEL_CODES, EntityContext, EventColumns, Features, FeatureSpec, encode_features
from functions.model.features import SECONDS_PER_DAY, country_code


@dataclass(frozen=True)
class StreamData:
    features: Features
    card_index: np.ndarray  # int64 [N], entity row per event
    merchant_index: np.ndarray
    n_cards: int
    n_merchants: int
    time_s: np.ndarray
    is_fraud: np.ndarray  # bool [N]
    scenario: np.ndarray  # str [N], "" for genuine
    day: np.ndarray  # int64 [N], days since the first event

    def __len__(self) -> int:
        return len(self.time_s)

    def windows(self) -> list[np.ndarray]:
        """Event indices per day, in time order: the unit of truncated back-propagation through time."""
        bounds = np.flatnonzero(np.diff(self.day)) + 1
        return np.split(np.arange(len(self.day)), bounds)


def _previous_event_context(entity: np.ndarray, events: EventColumns) -> EntityContext:
    order = np.argsort(entity, kind="stable")  # the stream is time-ordered, so this orders each entity by time
    same = np.zeros(len(entity), bool)
    same[1:] = entity[order][1:] == entity[order][:-1]
    previous = np.full(len(entity), -1, np.int64)
    previous[order[1:][same[1:]]] = order[:-1][same[1:]]
    seen = previous >= 0
    safe = np.where(seen, previous, 0)
    return EntityContext(
        seen=seen,
        last_time_s=np.where(seen, events.time_s[safe], 0.0),
        last_channel=np.where(seen, events.channel[safe], 0),
        last_country=np.where(seen, events.country[safe], 0),
    )


def event_columns(columns) -> EventColumns:  # noqa: ANN001 - generator.TransactionColumns
    """The generator's columns in the model's numeric encoding."""
    return EventColumns(
        amount=np.asarray(columns.amount, np.float64),
        time_s=np.asarray(columns.time_s, np.float64),
        mcc=np.asarray(columns.mcc, np.int64),
        channel=np.array([CHANNEL_CODES.get(c, 0) for c in columns.channel], np.int64),
        country=np.array([country_code(c) for c in columns.country], np.int64),
    )


def build_stream(columns, spec: FeatureSpec) -> StreamData:  # noqa: ANN001 - generator.TransactionColumns
    events = event_columns(columns)
    _, card_index = np.unique(np.asarray(columns.card_id), return_inverse=True)
    _, merchant_index = np.unique(np.asarray(columns.merchant_id), return_inverse=True)
    card_index = card_index.astype(np.int64)
    merchant_index = merchant_index.astype(np.int64)
    features = encode_features(
        events,
        _previous_event_context(card_index, events),
        _previous_event_context(merchant_index, events),
        spec,
    )
    day = np.floor((events.time_s - events.time_s[0]) / SECONDS_PER_DAY).astype(np.int64)
    return StreamData(
        features=features,
        card_index=card_index,
        merchant_index=merchant_index,
        n_cards=int(card_index.max()) + 1 if len(card_index) else 0,
        n_merchants=int(merchant_index.max()) + 1 if len(merchant_index) else 0,
        time_s=events.time_s,
        is_fraud=np.asarray(columns.is_fraud, bool),
        scenario=np.asarray(columns.scenario).astype(str),
        day=day,
    )

"""Feature encoding: transactions plus each entity's previous-event context -> model inputs.

Vectorised over a batch with numpy, so the scorer's micro-batches and the trainer's whole stream go through the
same code. Everything an entity must remember besides its GRU state (the time, channel and country of its previous
event) travels in a few bytes of context stored next to the state.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch

from functions.vocabulary import CHANNELS

# 0 means "not given"; the contract's channels follow in order.
CHANNEL_CODES = {name: code for code, name in enumerate(CHANNELS, start=1)}
_CONTEXT = struct.Struct("<BH")  # last channel code, last country code: 3 bytes next to the state
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class FeatureSpec:
    """What the model expects; stored in the package manifest so a scorer can refuse a mismatch."""

    hidden_size: int = 64
    mcc_buckets: int = 97  # MCCs are hashed (mod a prime) into embedding rows: unseen codes still get a row
    mcc_embedding: int = 8
    country_buckets: int = 677  # 1 + 26*26 two-letter codes; 0 = not given
    country_embedding: int = 8
    state_dtype: str = "float16"
    layout_version: int = 1

    event_numeric = ("log_amount", "amount_100", "hour_sin", "hour_cos", "weekday_sin", "weekday_cos")
    entity_numeric = ("log_gap", "unseen", "channel_changed", "country_changed", "log_amount")

    @property
    def event_width(self) -> int:
        return len(self.event_numeric) + len(CHANNELS) + 1 + self.mcc_embedding + self.country_embedding

    @property
    def entity_width(self) -> int:
        return self.event_width + len(self.entity_numeric)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["event_numeric"] = list(self.event_numeric)
        out["entity_numeric"] = list(self.entity_numeric)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        names = {"hidden_size", "mcc_buckets", "mcc_embedding", "country_buckets", "country_embedding",
                 "state_dtype", "layout_version"}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]


@dataclass(frozen=True)
class EventColumns:
    """A batch of transactions as arrays of length N."""

    amount: np.ndarray  # float64
    time_s: np.ndarray  # float64, Unix seconds
    mcc: np.ndarray  # int64, -1 when not given
    channel: np.ndarray  # int64, CHANNEL_CODES or 0
    country: np.ndarray  # int64, country_code() or 0

    def __len__(self) -> int:
        return len(self.amount)

    def take(self, index: np.ndarray) -> EventColumns:
        return EventColumns(*(getattr(self, f)[index] for f in ("amount", "time_s", "mcc", "channel", "country")))


@dataclass(frozen=True)
class EntityContext:
    """Each event's entity as it was before the event: arrays of length N."""

    seen: np.ndarray  # bool: the entity has absorbed at least one event
    last_time_s: np.ndarray  # float64
    last_channel: np.ndarray  # int64
    last_country: np.ndarray  # int64

    @classmethod
    def unseen(cls, n: int) -> EntityContext:
        return cls(np.zeros(n, bool), np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64))


@dataclass(frozen=True)
class Features:
    """Model inputs for a batch: numeric blocks plus embedding indices."""

    event_numeric: torch.Tensor  # [N, len(event_numeric)]
    channel: torch.Tensor  # [N] long
    mcc: torch.Tensor  # [N] long, bucket
    country: torch.Tensor  # [N] long
    card_numeric: torch.Tensor  # [N, len(entity_numeric)]
    merchant_numeric: torch.Tensor  # [N, len(entity_numeric)]

    def __len__(self) -> int:
        return self.event_numeric.shape[0]

    def take(self, index: torch.Tensor) -> Features:
        return Features(*(getattr(self, f)[index] for f in (
            "event_numeric", "channel", "mcc", "country", "card_numeric", "merchant_numeric")))


def country_code(country: str | None) -> int:
    if not country:
        return 0
    return 1 + (ord(country[0]) - 65) * 26 + (ord(country[1]) - 65)


class TransactionFields(Protocol):
    """What the encoder reads of a transaction: the contract's ``Transaction`` has it, and so does any runtime's
    own view of one (the KServe reference predictor, which cannot import the contract's CloudEvents SDK)."""

    @property
    def amount(self) -> float: ...
    @property
    def event_time_s(self) -> float: ...
    @property
    def mcc(self) -> int | None: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def country(self) -> str | None: ...


def events_from_transactions(transactions: Sequence[TransactionFields]) -> EventColumns:
    """Validated transactions as columns."""
    return EventColumns(
        amount=np.fromiter((t.amount for t in transactions), np.float64, len(transactions)),
        time_s=np.fromiter((t.event_time_s for t in transactions), np.float64, len(transactions)),
        mcc=np.fromiter((-1 if t.mcc is None else t.mcc for t in transactions), np.int64, len(transactions)),
        channel=np.fromiter((CHANNEL_CODES.get(t.channel, 0) for t in transactions), np.int64, len(transactions)),
        country=np.fromiter((country_code(t.country) for t in transactions), np.int64, len(transactions)),
    )


def pack_context(channel: int, country: int) -> bytes:
    """The bytes stored beside an entity's state so the next event can tell a change of channel or country."""
    return _CONTEXT.pack(channel, country)


def unpack_contexts(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(last_channel, last_country) arrays; an empty blob (unseen entity) decodes to zeros."""
    channel = np.zeros(len(blobs), np.int64)
    country = np.zeros(len(blobs), np.int64)
    for i, blob in enumerate(blobs):
        if blob:
            channel[i], country[i] = _CONTEXT.unpack(blob[: _CONTEXT.size])
    return channel, country


# Both encoders write float64 results column by column into a float32 matrix (the same cast as ``astype``) rather
# than stacking float64 columns and converting the stack: at the scorer's batches of 1-30 events every numpy call
# costs microseconds whatever its size, and the encoder ran on the request path of every micro-batch.


def _entity_numeric(events: EventColumns, ctx: EntityContext, log_amount: np.ndarray) -> np.ndarray:
    # Events may arrive out of order (Knative's default broker does not order): a negative gap counts as zero.
    seen = ctx.seen
    out = np.empty((len(seen), 5), np.float32)
    # the gap in minutes, log-scaled: bursts live in minutes, habits in days
    out[:, 0] = np.log1p(np.where(seen, np.maximum(events.time_s - ctx.last_time_s, 0.0), 0.0) / 60.0) / 8.0
    out[:, 1] = ~seen
    out[:, 2] = seen & (events.channel != ctx.last_channel)
    out[:, 3] = seen & (events.country != ctx.last_country)
    out[:, 4] = log_amount
    return out


@dataclass(frozen=True)
class FeatureArrays:
    """``Features`` as numpy arrays: what the numpy form of the step reads, with no tensor in between."""

    event_numeric: np.ndarray  # float32 [N, len(event_numeric)]
    channel: np.ndarray  # int64 [N]
    mcc: np.ndarray  # int64 [N], bucket
    country: np.ndarray  # int64 [N]
    card_numeric: np.ndarray  # float32 [N, len(entity_numeric)]
    merchant_numeric: np.ndarray  # float32 [N, len(entity_numeric)]

    def __len__(self) -> int:
        return self.event_numeric.shape[0]

    @classmethod
    def of(cls, features: Features) -> FeatureArrays:
        """Tensor features as arrays, sharing memory: the inverse of ``to_torch``."""
        return cls(features.event_numeric.numpy(), features.channel.numpy(), features.mcc.numpy(),
                   features.country.numpy(), features.card_numeric.numpy(), features.merchant_numeric.numpy())

    def to_torch(self) -> Features:
        """The same values as tensors, sharing memory."""
        return Features(torch.from_numpy(self.event_numeric), torch.from_numpy(self.channel),
                        torch.from_numpy(self.mcc), torch.from_numpy(self.country),
                        torch.from_numpy(self.card_numeric), torch.from_numpy(self.merchant_numeric))


def encode_features(
    events: EventColumns, card: EntityContext, merchant: EntityContext, spec: FeatureSpec
) -> Features:
    """Encode a batch. Pure: the same inputs always give the same features."""
    return encode_feature_arrays(events, card, merchant, spec).to_torch()


def encode_feature_arrays(
    events: EventColumns, card: EntityContext, merchant: EntityContext, spec: FeatureSpec
) -> FeatureArrays:
    """``encode_features`` as numpy arrays. A lone event takes a scalar path: the vectorised one is ~50 numpy calls
    of about a microsecond each whatever the batch size, and a lone event is what the scorer sees below
    saturation. Both paths give the same float32 values (tested)."""
    if len(events) == 1:
        return _encode_one(events, card, merchant, spec)
    log_amount = np.log1p(events.amount) / 5.0
    hour_angle = 2 * np.pi * np.mod(events.time_s, SECONDS_PER_DAY) / SECONDS_PER_DAY
    day_angle = 2 * np.pi * np.mod(np.floor(events.time_s / SECONDS_PER_DAY) + 3, 7) / 7  # 1970-01-01 was a Thursday
    event_numeric = np.empty((len(events), 6), np.float32)
    event_numeric[:, 0] = log_amount
    # Log scale for the spread of everyday amounts, linear scale so that large amounts stand out: on the log scale
    # 200 and 220 differ by 0.02, too little for the head to draw a sharp line there.
    event_numeric[:, 1] = np.minimum(events.amount / 100.0, 50.0)
    event_numeric[:, 2], event_numeric[:, 3] = np.sin(hour_angle), np.cos(hour_angle)
    event_numeric[:, 4], event_numeric[:, 5] = np.sin(day_angle), np.cos(day_angle)
    mcc_bucket = np.where(events.mcc < 0, 0, 1 + np.mod(events.mcc, spec.mcc_buckets - 1))
    return FeatureArrays(
        event_numeric=event_numeric,
        channel=events.channel,
        mcc=mcc_bucket,
        # country_code() is never negative; np.clip costs ~10x np.minimum on small arrays
        country=np.minimum(events.country, spec.country_buckets - 1),
        card_numeric=_entity_numeric(events, card, log_amount),
        merchant_numeric=_entity_numeric(events, merchant, log_amount),
    )


def _encode_one(events: EventColumns, card: EntityContext, merchant: EntityContext, spec: FeatureSpec) -> FeatureArrays:
    """The vectorised encoder's arithmetic on Python floats, for one event: the same float64 operations in the same
    order (``math`` and numpy both round each to float64; ``%`` on floats is ``np.mod``), then one cast to float32
    per block."""
    amount, time_s = float(events.amount[0]), float(events.time_s[0])
    channel, country, mcc = int(events.channel[0]), int(events.country[0]), int(events.mcc[0])
    log_amount = math.log1p(amount) / 5.0
    hour_angle = 2 * math.pi * (time_s % SECONDS_PER_DAY) / SECONDS_PER_DAY
    day_angle = 2 * math.pi * ((math.floor(time_s / SECONDS_PER_DAY) + 3) % 7) / 7
    event_numeric = np.array([[log_amount, min(amount / 100.0, 50.0), math.sin(hour_angle), math.cos(hour_angle),
                               math.sin(day_angle), math.cos(day_angle)]], np.float32)
    mcc_bucket = 0 if mcc < 0 else 1 + mcc % (spec.mcc_buckets - 1)
    return FeatureArrays(
        event_numeric=event_numeric,
        channel=events.channel,
        mcc=np.array([mcc_bucket], np.int64),
        country=np.array([min(country, spec.country_buckets - 1)], np.int64),
        card_numeric=_entity_numeric_one(time_s, channel, country, card, log_amount),
        merchant_numeric=_entity_numeric_one(time_s, channel, country, merchant, log_amount),
    )


def _entity_numeric_one(time_s: float, channel: int, country: int, ctx: EntityContext,
                        log_amount: float) -> np.ndarray:
    if not ctx.seen[0]:
        return np.array([[0.0, 1.0, 0.0, 0.0, log_amount]], np.float32)
    gap = max(time_s - float(ctx.last_time_s[0]), 0.0)
    return np.array([[math.log1p(gap / 60.0) / 8.0, 0.0, float(channel != int(ctx.last_channel[0])),
                      float(country != int(ctx.last_country[0])), log_amount]], np.float32)

"""The GRU fraud model: feature encoding and the pure batched step shared by trainer, scorer, tests and benchmarks."""

from functions.model.features import (
    CHANNEL_CODES,
    EntityContext,
    EventColumns,
    Features,
    FeatureSpec,
    encode_features,
    events_from_transactions,
    pack_context,
    unpack_contexts,
)
from functions.model.gru import FraudGRU, StepResult, round_state

__all__ = [
    "CHANNEL_CODES",
    "EntityContext",
    "EventColumns",
    "FeatureSpec",
    "Features",
    "FraudGRU",
    "StepResult",
    "encode_features",
    "events_from_transactions",
    "pack_context",
    "round_state",
    "unpack_contexts",
]

"""The model and its one pure, batched step.

``FraudGRU.step(card_states, merchant_states, features) -> StepResult`` is the only place a hidden state changes.
It has no I/O, so the trainer, the scorer, the parity tests and the benchmarks all call the same function.

States are stored as float16 (half the Valkey memory per entity: 128 B instead of 256 B at H=64) but computed in
float32: float16 arithmetic on CPU is slow and accumulates rounding in the recurrence. ``round_state`` applies the
storage rounding between steps, and the trainer applies it too so that training sees what serving sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn

from functions.model.features import Features, FeatureSpec
from functions.vocabulary import CHANNELS


@dataclass(frozen=True)
class StepResult:
    card_states: torch.Tensor  # [N, H] float32; stored as float16 (see round_state)
    merchant_states: torch.Tensor  # [N, H]
    scores: torch.Tensor  # [N] probabilities in [0, 1]
    logits: torch.Tensor  # [N]

    def arrays(self) -> StepArrays:
        return StepArrays(self.card_states.numpy(), self.merchant_states.numpy(), self.scores.numpy(),
                          self.logits.numpy())


class StepArrays(NamedTuple):
    """``StepResult`` as numpy arrays, the form the scorer folds with."""

    card_states: np.ndarray
    merchant_states: np.ndarray
    scores: np.ndarray
    logits: np.ndarray


def cell_step(cell: nn.GRUCell, inputs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """``cell(inputs, states)`` through the same kernel, without the module call. At the scorer's small batches
    each module call's checks and hooks cost microseconds of Python, and the step had nine of them."""
    return torch.gru_cell(inputs, states, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)


def round_state(states: torch.Tensor) -> torch.Tensor:
    """What storing and re-reading a state does to it (float16 storage)."""
    return states.to(torch.float16).to(torch.float32)


class EventEncoder(nn.Module):
    """Per-event inputs (no history): numeric features, channel one-hot, hashed MCC and country embeddings."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.mcc = nn.Embedding(spec.mcc_buckets, spec.mcc_embedding)
        self.country = nn.Embedding(spec.country_buckets, spec.country_embedding)
        self.channels = len(CHANNELS) + 1
        # The channel one-hot as rows of an identity matrix: the same float32 values as
        # ``F.one_hot(...).to(torch.float32)`` at a third of the cost (one_hot checks its indices' range with two
        # reductions, then a cast follows). Not persistent: packages keep only the weights.
        self.register_buffer("channel_rows", torch.eye(self.channels), persistent=False)

    def forward(self, features: Features) -> torch.Tensor:
        channel = F.embedding(features.channel, self.channel_rows)
        mcc, country = F.embedding(features.mcc, self.mcc.weight), F.embedding(features.country, self.country.weight)
        return torch.cat([features.event_numeric, channel, mcc, country], dim=1)


class FraudGRU(nn.Module):
    """One GRU cell for cards, one for merchants, and a head over both new states plus the event."""

    def __init__(self, spec: FeatureSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or FeatureSpec()
        hidden = self.spec.hidden_size
        self.encoder = EventEncoder(self.spec)
        self.card_cell = nn.GRUCell(self.spec.entity_width, hidden)
        self.merchant_cell = nn.GRUCell(self.spec.entity_width, hidden)
        self.head = nn.Sequential(
            nn.Linear(2 * hidden + self.spec.event_width, 64), nn.ReLU(), nn.Linear(64, 1)
        )

    def card_inputs(self, event: torch.Tensor, features: Features) -> torch.Tensor:
        return torch.cat([event, features.card_numeric], dim=1)

    def merchant_inputs(self, event: torch.Tensor, features: Features) -> torch.Tensor:
        return torch.cat([event, features.merchant_numeric], dim=1)

    def score(self, card_states: torch.Tensor, merchant_states: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        """Logits from the states *after* the event, so the score reflects the event in its history."""
        first, _, last = self.head
        hidden = F.relu(F.linear(torch.cat([card_states, merchant_states, event], dim=1), first.weight, first.bias))
        return F.linear(hidden, last.weight, last.bias).squeeze(1)

    def step(self, card_states: torch.Tensor, merchant_states: torch.Tensor, features: Features) -> StepResult:
        """One event per row: each row's card and merchant absorb that row's event. Rows are independent.

        The inputs are states as read from storage (float16 values); the outputs are float32 and the score uses
        them unrounded, so batching changes nothing beyond float32 noise. Storage rounds them afterwards.
        """
        event = self.encoder(features)
        new_card = cell_step(self.card_cell, self.card_inputs(event, features), card_states)
        new_merchant = cell_step(self.merchant_cell, self.merchant_inputs(event, features), merchant_states)
        logits = self.score(new_card, new_merchant, event)
        return StepResult(new_card, new_merchant, torch.sigmoid(logits), logits)

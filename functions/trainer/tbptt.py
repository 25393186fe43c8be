"""Run the GRU over an interleaved stream, one window (a day) at a time: training and evaluation.

Inside a window, an entity's events must be absorbed in order, but different entities are independent. So each
window is processed in *ranks*: rank r holds every entity's r-th event of the window, one batched cell call per rank.
Card and merchant cells do not read each other's state, so cards and merchants run their ranks separately and the
head then scores every event from both new states. Between windows the states are detached: truncated
back-propagation through time, with the truncation at day boundaries.

The per-row arithmetic is exactly ``FraudGRU.step``'s (same cells, float16 rounding between steps as storage
does); a test checks that
streaming here equals stepping event by event.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from functions.model import FraudGRU, round_state
from functions.model.gru import cell_step
from functions.trainer.stream import StreamData


def _ranks(entity: np.ndarray) -> np.ndarray:
    """For each event of a window, how many earlier events of the same entity the window holds."""
    order = np.argsort(entity, kind="stable")
    sorted_entity = entity[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_entity)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(entity)]))
    ranks = np.empty(len(entity), np.int64)
    ranks[order] = np.arange(len(entity)) - group_start
    return ranks


def _advance(
    cell: torch.nn.GRUCell, inputs: torch.Tensor, entity: np.ndarray, table: torch.Tensor
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Absorb a window's events into their entities' states; return per-event new states and the final states."""
    unique, local = np.unique(entity, return_inverse=True)
    states = table[torch.from_numpy(unique)]
    ranks = _ranks(entity)
    order_parts, state_parts = [], []
    for rank in range(int(ranks.max()) + 1 if len(ranks) else 0):
        rows = np.flatnonzero(ranks == rank)
        slots = torch.from_numpy(local[rows])
        new = cell_step(cell, inputs[torch.from_numpy(rows)], states[slots])
        # The next event reads what storage would hold: the float16-rounded state.
        states = states.index_copy(0, slots, round_state(new))
        order_parts.append(rows)
        state_parts.append(new)
    order = torch.from_numpy(np.concatenate(order_parts))
    per_event = torch.empty(len(entity), table.shape[1]).index_copy(0, order, torch.cat(state_parts))
    return per_event, unique, states


def run_stream(
    model: FraudGRU,
    data: StreamData,
    *,
    windows: list[np.ndarray] | None = None,
    on_window: Callable[[torch.Tensor, np.ndarray], None] | None = None,
    grad: bool = False,
) -> np.ndarray:
    """Score every event of ``windows`` (default: all) in order, from unseen states.

    ``on_window(logits, indices)`` is called after each window, while the window's graph is alive: the trainer's
    hook computes the loss and steps the optimiser there. Returns the scores of all events, NaN outside windows.
    """
    hidden = model.spec.hidden_size
    cards = torch.zeros(data.n_cards, hidden)
    merchants = torch.zeros(data.n_merchants, hidden)
    scores = np.full(len(data), np.nan, np.float32)
    context = torch.enable_grad() if grad else torch.inference_mode()
    with context:
        for window in windows if windows is not None else data.windows():
            features = data.features.take(torch.from_numpy(window))
            event = model.encoder(features)
            card_states, card_rows, card_final = _advance(
                model.card_cell, model.card_inputs(event, features), data.card_index[window], cards
            )
            merchant_states, merchant_rows, merchant_final = _advance(
                model.merchant_cell, model.merchant_inputs(event, features), data.merchant_index[window], merchants
            )
            logits = model.score(card_states, merchant_states, event)
            if on_window is not None:
                on_window(logits, window)
            cards[torch.from_numpy(card_rows)] = card_final.detach()
            merchants[torch.from_numpy(merchant_rows)] = merchant_final.detach()
            scores[window] = torch.sigmoid(logits.detach()).numpy()
    return scores

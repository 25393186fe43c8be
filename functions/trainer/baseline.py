"""The stateless per-event baseline: the same per-event features, no history, a small MLP.

It is what a fraud model without per-entity state can do with one event in hand. The GRU must beat it on the
sequence-only patterns to earn its state store.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from functions.model import Features, FeatureSpec
from functions.model.gru import EventEncoder


class StatelessBaseline(nn.Module):
    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.encoder = EventEncoder(spec)
        self.mlp = nn.Sequential(nn.Linear(spec.event_width, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, features: Features) -> torch.Tensor:
        return self.mlp(self.encoder(features)).squeeze(1)


def train_baseline(
    spec: FeatureSpec, features: Features, labels: np.ndarray, train_rows: np.ndarray, *,
    epochs: int, learning_rate: float, pos_weight: float, seed: int, batch_size: int = 4096,
) -> StatelessBaseline:
    torch.manual_seed(seed)
    model = StatelessBaseline(spec)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    target = torch.from_numpy(labels.astype(np.float32))
    generator = np.random.default_rng(seed)
    for _ in range(epochs):
        shuffled = generator.permutation(train_rows)
        for start in range(0, len(shuffled), batch_size):
            rows = torch.from_numpy(shuffled[start:start + batch_size])
            optimiser.zero_grad()
            loss_fn(model(features.take(rows)), target[rows]).backward()
            optimiser.step()
    return model.eval()


def baseline_scores(model: StatelessBaseline, features: Features) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(model(features)).numpy()

"""The generator's working table: one numpy column per attribute, times in seconds from the stream start."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

_DTYPES = {
    "t": np.int64, "customer": np.int64, "slot": np.int64, "terminal": np.int64, "amount": np.float64,
    "original_amount": np.float64, "scenario": np.int8, "instance": np.int64, "compromise": np.float64,
    "injected": bool, "card_bound": bool, "traveling": bool,
}


@dataclass
class Rows:
    """Mutable on purpose: the scenario passes mark transactions in place, in a fixed order."""

    t: np.ndarray  # whole seconds since the start of day 0
    customer: np.ndarray
    slot: np.ndarray  # card slot; a slot's card id changes when the card is replaced
    terminal: np.ndarray
    amount: np.ndarray
    original_amount: np.ndarray  # before S3 inflation, so a stale S3 compromise can be undone
    scenario: np.ndarray  # code into config.SCENARIOS, 0 = genuine
    instance: np.ndarray  # pattern instance number, -1 for genuine
    compromise: np.ndarray  # seconds; when the card / terminal / customer was compromised, nan for genuine
    injected: np.ndarray  # added by a fraud pattern (not a customer's own transaction)
    card_bound: np.ndarray  # the fraud rides on stolen card details, so it stops when that card is replaced
    traveling: np.ndarray  # the customer is on a legitimate trip

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def build(cls, **columns: object) -> Rows:
        n = len(columns["t"])  # type: ignore[arg-type]
        defaults = {
            "original_amount": columns.get("amount"), "scenario": np.zeros(n), "instance": np.full(n, -1),
            "compromise": np.full(n, np.nan), "injected": np.zeros(n, bool), "card_bound": np.zeros(n, bool),
            "traveling": np.zeros(n, bool),
        }
        values = {**defaults, **columns}
        return cls(**{f.name: np.asarray(values[f.name], dtype=_DTYPES[f.name]).copy() for f in fields(cls)})

    @classmethod
    def concat(cls, parts: list[Rows]) -> Rows:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def take(self, index: np.ndarray) -> Rows:
        return Rows(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

"""Label availability and the card lifecycle.

A fraud transaction is reported after a log-normal delay (or never). The first report on a card blocks it and
confirms every fraud on it so far (investigation back-fill). The customer cannot use that card until its
replacement arrives; the replacement starts a fresh card id. Fraud riding on the old card's stolen details stops:
injected attempts after the block are dropped and S3's inflated amounts revert to the customer's own purchase.
Genuine transactions are confirmed when ``genuine_maturity_days`` pass without a chargeback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from functions.generator.config import GeneratorConfig
from functions.generator.drift import SECONDS_PER_DAY
from functions.generator.rows import Rows


@dataclass(frozen=True)
class Block:
    slot: int
    generation: int  # the card that was blocked; its replacement is generation + 1
    blocked_at: int  # seconds since the stream start: the first fraud report
    replaced_at: int


@dataclass(frozen=True)
class Lifecycle:
    keep: np.ndarray  # bool per row: False for attempts on a blocked card
    generation: np.ndarray  # int per row: which card of the slot was used
    label_at: np.ndarray  # float seconds since start; inf when never labelled
    blocks: list[Block]


def own_report_times(config: GeneratorConfig, rows: Rows, rng: np.random.Generator) -> np.ndarray:
    """When each fraud would be reported on its own account (inf if never).

    A cardholder disputes an incident, not each transaction: one delay is drawn per (pattern instance, card slot)
    from the incident's first transaction. A transaction of the incident that happens after that report (an S2
    terminal skimming the same card again weeks later) is a new incident with its own delay.
    """
    labels = config.labels
    median_s, max_s = labels.fraud_median_days * SECONDS_PER_DAY, labels.max_days * SECONDS_PER_DAY
    fraud = np.flatnonzero(rows.scenario > 0)
    key = (rows.scenario[fraud].astype(np.int64) << 44) | (rows.instance[fraud] << 20) | rows.slot[fraud]
    groups, group = np.unique(key, return_inverse=True)
    first = np.full(len(groups), np.inf)
    np.minimum.at(first, group, rows.t[fraud].astype(np.float64))
    delay = rng.lognormal(math.log(median_s), labels.fraud_sigma, len(groups))
    lost = (rng.random(len(groups)) < labels.never_reported) | (delay > max_s)
    incident_report = np.where(lost, np.inf, first + delay)[group]
    t = rows.t[fraud].astype(np.float64)
    own_delay = rng.lognormal(math.log(median_s), labels.fraud_sigma, len(fraud))
    own_lost = (rng.random(len(fraud)) < labels.never_reported) | (own_delay > max_s)
    later = incident_report <= t
    incident_report[later] = np.where(own_lost[later], np.inf, t[later] + own_delay[later])
    report = np.full(len(rows), np.inf)
    # Whole seconds, strictly after the transaction, so a label never precedes or ties with it.
    report[fraud] = np.maximum(np.ceil(incident_report), t + 1)
    return report


def resolve(config: GeneratorConfig, rows: Rows, report: np.ndarray, rng: np.random.Generator) -> Lifecycle:
    """Walk each reported card's history in time order, one card generation at a time."""
    n = len(rows)
    keep = np.ones(n, bool)
    generation = np.zeros(n, np.int64)
    label_at = rows.t + config.labels.genuine_maturity_days * SECONDS_PER_DAY
    label_at = label_at.astype(np.float64)
    label_at[rows.scenario > 0] = np.inf
    blocks: list[Block] = []

    reported_slots = np.unique(rows.slot[np.isfinite(report)])
    order = np.lexsort((np.arange(n), rows.t, rows.slot))
    sorted_slots = rows.slot[order]
    lo_all = np.searchsorted(sorted_slots, reported_slots, side="left")
    hi_all = np.searchsorted(sorted_slots, reported_slots, side="right")
    gap_lo, gap_hi = config.labels.replacement_min_days, config.labels.replacement_max_days
    for slot, lo, hi in zip(reported_slots, lo_all, hi_all, strict=True):
        idx = order[lo:hi]
        gen, gen_start = 0, -np.inf
        while len(idx):
            stale = rows.card_bound[idx] & (rows.scenario[idx] > 0) & (rows.compromise[idx] < gen_start)
            _undo_stale(rows, idx[stale], keep, label_at, config)
            fraud = (rows.scenario[idx] > 0) & ~stale
            first_report = report[idx][fraud].min() if fraud.any() else np.inf
            generation[idx] = gen
            if not np.isfinite(first_report):
                break
            t = rows.t[idx]
            confirmed = idx[(t <= first_report) & fraud]
            label_at[confirmed] = first_report
            replaced_at = int(math.ceil(first_report + rng.uniform(gap_lo, gap_hi) * SECONDS_PER_DAY))
            keep[idx[(t > first_report) & (t < replaced_at)]] = False
            blocks.append(Block(int(slot), gen, int(first_report), replaced_at))
            idx = idx[t >= replaced_at]
            gen, gen_start = gen + 1, replaced_at
    return Lifecycle(keep, generation, label_at, blocks)


def _undo_stale(rows: Rows, stale: np.ndarray, keep: np.ndarray, label_at: np.ndarray,
                config: GeneratorConfig) -> None:
    """Fraud on details of a card that has since been replaced cannot happen on the new card."""
    injected = stale[rows.injected[stale]]
    keep[injected] = False
    inflated = stale[~rows.injected[stale]]
    rows.amount[inflated] = rows.original_amount[inflated]
    rows.scenario[inflated] = 0
    rows.instance[inflated] = -1
    rows.compromise[inflated] = np.nan
    rows.card_bound[inflated] = False
    label_at[inflated] = rows.t[inflated] + config.labels.genuine_maturity_days * SECONDS_PER_DAY

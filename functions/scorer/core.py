"""Scoring, without HTTP: a batch of transactions in, one score per transaction out, states kept exact.

For a batch: one read of every card and merchant state involved, the pure GRU step in as few rounds as the batch's
entity chains allow, then one compare-and-set (with event dedupe) for every entity. A conflict (another instance
moved the entity on) or a redelivered event sends only the affected entities round again, on the stored state the
store handed back. Nothing here knows Flask exists.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from functions.contract import Score, Transaction
from functions.model import EntityContext, events_from_transactions, pack_context, unpack_contexts
from functions.model.features import EventColumns, encode_features
from functions.model.package import Predictor
from state_service.errors import ConflictRetriesExhausted
from state_service.keys import EntityKeys
from state_service.store import AppliedEvent, EntityKey, EntityState, Outcome, StateStore, StateUpdate

_RECEIPT = struct.Struct("<fI")  # the score and the entity's seq after the event: what a redelivery gets back
CARD, MERCHANT = "card", "merchant"


@dataclass
class BatchStats:
    """What one batch cost, for metrics."""

    size: int = 0
    rounds: int = 0
    attempts: int = 0
    conflicts: int = 0
    duplicates: int = 0
    step_seconds: float = 0.0


@dataclass
class _Entity:
    """One distinct entity of a batch and the batch's events for it, in arrival order."""

    key: EntityKey
    state: EntityState
    events: list[int]
    done: bool = False
    # Events this entity had already absorbed (a redelivery), with the (score, seq) stored for them.
    applied_before: dict[int, tuple[float, int]] | None = None


def _entity_rounds(slots: list[tuple[int, int]]) -> list[int]:
    """Round of each event: one after the latest earlier event sharing its card or merchant, so every entity
    absorbs its events in order and each round holds at most one event per entity."""
    latest: dict[int, int] = {}
    rounds = []
    for card, merchant in slots:
        r = max(latest.get(card, -1), latest.get(merchant, -1)) + 1
        latest[card] = latest[merchant] = r
        rounds.append(r)
    return rounds


class ScoringCore:
    """Scores batches of transactions against the state store with one predictor."""

    def __init__(self, predictor: Predictor, store: StateStore, *, max_attempts: int = 8,
                 backoff_s: float = 0.001, max_backoff_s: float = 0.05) -> None:
        self.predictor = predictor
        self.store = store
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.hidden_size = predictor.spec.hidden_size
        self._keys = EntityKeys(predictor.namespace)

    def score(self, transactions: Sequence[Transaction]) -> tuple[list[Score], BatchStats]:
        stats = BatchStats(size=len(transactions))
        position: dict[str, int] = {}
        unique = []
        echo: dict[int, int] = {}  # a second copy of an event inside one batch replies as the first copy
        for i, t in enumerate(transactions):
            if t.dedupe_key in position:
                echo[i] = position[t.dedupe_key]
            else:
                position[t.dedupe_key] = len(unique)
                unique.append(t)
        scores = self._score_unique(unique, stats)
        out = []
        position = 0
        for i in range(len(transactions)):
            if i in echo:
                original = scores[echo[i]]
                out.append(Score(original.transaction_id, original.card_id, original.merchant_id, original.score,
                                 original.model_version, original.card_seq, original.merchant_seq, True))
                stats.duplicates += 1
            else:
                out.append(scores[position])
                position += 1
        return out, stats

    def _score_unique(self, transactions: Sequence[Transaction], stats: BatchStats) -> list[Score]:
        entity_key = self._keys.get
        index: dict[str, int] = {}  # by state key: a str caches its hash, an EntityKey would hash three fields
        keys: list[EntityKey] = []
        slots: list[tuple[int, int]] = []
        for t in transactions:
            pair = []
            for key in (entity_key(CARD, t.card_id), entity_key(MERCHANT, t.merchant_id)):
                slot = index.get(key.state_key)
                if slot is None:
                    slot = index[key.state_key] = len(keys)
                    keys.append(key)
                pair.append(slot)
            slots.append((pair[0], pair[1]))
        entities = [_Entity(key, state, []) for key, state in zip(keys, self.store.read_many(keys), strict=True)]
        for i, (card, merchant) in enumerate(slots):
            entities[card].events.append(i)
            entities[merchant].events.append(i)
        events = events_from_transactions(transactions)
        event_keys = [t.dedupe_key for t in transactions]

        for attempt in range(1, self.max_attempts + 1):
            stats.attempts = attempt
            fold = self._fold(entities, slots, events, stats)
            pending = []
            for slot, entity in enumerate(entities):
                if not entity.done and entity.applied_before and all(i in entity.applied_before for i in entity.events):
                    entity.done = True  # every event of this entity was applied before: nothing to write
                if not entity.done:
                    pending.append(slot)
            results = self.store.compare_and_set_many(
                self._updates(pending, entities, event_keys, fold)
            ) if pending else []
            for slot, result in zip(pending, results, strict=True):
                entity = entities[slot]
                if result.outcome is Outcome.APPLIED:
                    entity.done = True
                    continue
                entity.state = result.current or entity.state
                if result.outcome is Outcome.CONFLICT:
                    stats.conflicts += 1
                else:
                    stats.duplicates += 1
                    self._forget_duplicates(entity, transactions, result.duplicates)
            if all(e.done for e in entities):
                return self._scores(transactions, slots, entities, fold)
            if attempt > 1 and attempt < self.max_attempts:
                # The first retry uses the state the store handed back, at once. After that the entity is hot:
                # back off with full jitter so colliding instances do not retry in lockstep, then re-read, since
                # the state handed back went stale while sleeping.
                time.sleep(random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt)))
                stale = [e for e in entities if not e.done]
                for entity, state in zip(stale, self.store.read_many([e.key for e in stale]), strict=True):
                    entity.state = state
        raise ConflictRetriesExhausted([e.key for e in entities if not e.done], self.max_attempts, [])

    # -- the pure part: fold each entity's events through the step -------------------------------------------

    def _fold(self, entities: list[_Entity], slots: list[tuple[int, int]], events: EventColumns,
              stats: BatchStats) -> _Fold:
        n = len(slots)
        rounds = _entity_rounds(slots)
        last_round = max(rounds, default=-1)
        slot_of = np.array(slots, np.int64).reshape(n, 2)
        channel, country = unpack_contexts([e.state.context for e in entities])
        fold = _Fold(
            # One float32 matrix for every entity of the batch: gathers and scatters are array operations, not a
            # tensor per entity (that per-entity churn was a tenth of the scorer's CPU at micro-batches of 16-32).
            hidden=np.array([e.state.hidden for e in entities], np.float32).reshape(len(entities), -1),
            seq=np.array([e.state.version for e in entities], np.int64),
            last_time=np.array([e.state.last_event_time for e in entities], np.float64),
            channel=channel, country=country,
            scores=np.zeros(n, np.float32), card_seq=np.zeros(n, np.int64), merchant_seq=np.zeros(n, np.int64),
        )
        skips = [(slot, i) for slot, e in enumerate(entities) if e.applied_before for i in e.applied_before]
        started = time.perf_counter()
        everything = np.arange(n)
        by_round = np.array(rounds, np.int64) if last_round > 0 else everything
        for r in range(last_round + 1):
            # Most batches are one round (no entity twice) with no redelivery: they skip the selections below,
            # which at the scorer's small batches cost more than the arithmetic.
            rows = everything if last_round == 0 else np.flatnonzero(by_round == r)
            stats.rounds += 1
            batch = events if last_round == 0 else events.take(rows)
            card_slots, merchant_slots = slot_of[rows, 0], slot_of[rows, 1]
            features = encode_features(
                batch, fold.context(card_slots), fold.context(merchant_slots), self.predictor.spec
            )
            with torch.inference_mode():
                step = self.predictor.step(
                    torch.from_numpy(fold.hidden[card_slots]), torch.from_numpy(fold.hidden[merchant_slots]), features
                )
            fold.scores[rows] = step.scores.numpy()
            for entity_slots, new_states, seq_out in ((card_slots, step.card_states, fold.card_seq),
                                                      (merchant_slots, step.merchant_states, fold.merchant_seq)):
                # An entity that absorbed this event before (a redelivery) keeps its state and reports its old seq.
                absorbs = slice(None)
                for slot, i in skips:
                    hit = np.flatnonzero((rows == i) & (entity_slots == slot))
                    if hit.size:
                        if isinstance(absorbs, slice):
                            absorbs = np.ones(len(rows), bool)
                        absorbs[hit] = False
                        seq_out[i] = entities[slot].applied_before[i][1]
                write = entity_slots[absorbs]
                # The next event of this entity reads what the store will hold: float16. A round holds each entity
                # at most once, so these scatters never write one row twice.
                fold.hidden[write] = new_states.numpy()[absorbs].astype(np.float16)
                fold.seq[write] += 1
                seq_out[rows[absorbs]] = fold.seq[write]
                # Out-of-order events: the state absorbs them in arrival order; the last event time never moves
                # backwards, so a late event sees a zero gap rather than a negative one.
                fold.last_time[write] = np.maximum(fold.last_time[write], batch.time_s[absorbs])
                fold.channel[write], fold.country[write] = batch.channel[absorbs], batch.country[absorbs]
        stats.step_seconds += time.perf_counter() - started
        return fold

    @staticmethod
    def _absorbs(entity: _Entity, event: int) -> bool:
        return not entity.applied_before or event not in entity.applied_before

    # -- store protocol ---------------------------------------------------------------------------------------

    def _updates(self, pending: list[int], entities: list[_Entity], event_keys: list[str],
                 fold: _Fold) -> list[StateUpdate]:
        """One update per pending entity. Arrays become Python values once per batch, not once per entity: numpy
        scalar indexing in this loop was the largest Python cost of a 256-event batch."""
        scores = fold.scores.tolist()
        receipts = {
            CARD: [_RECEIPT.pack(s, q) for s, q in zip(scores, fold.card_seq.tolist(), strict=True)],
            MERCHANT: [_RECEIPT.pack(s, q) for s, q in zip(scores, fold.merchant_seq.tolist(), strict=True)],
        }
        hidden = fold.hidden.astype(np.float16)
        last_time, channel, country = fold.last_time.tolist(), fold.channel.tolist(), fold.country.tolist()
        updates = []
        for slot in pending:
            entity = entities[slot]
            receipt = receipts[entity.key.entity_type]
            before = entity.applied_before
            updates.append(StateUpdate(
                key=entity.key,
                expected_version=entity.state.version,
                expected_value=entity.state.raw,
                events=tuple(AppliedEvent(event_keys[i], receipt[i]) for i in entity.events
                             if not before or i not in before),
                last_event_time=last_time[slot],
                hidden=hidden[slot],
                context=pack_context(channel[slot], country[slot]),
            ))
        return updates

    @staticmethod
    def _forget_duplicates(entity: _Entity, transactions: Sequence[Transaction],
                           duplicates: dict[str, tuple[int, bytes]]) -> None:
        """Remember which of this entity's events it had absorbed before, and what was stored for them."""
        by_key = {transactions[i].dedupe_key: i for i in entity.events}
        known = dict(entity.applied_before or {})
        for event_key, (version, receipt) in duplicates.items():
            if event_key in by_key:
                score, seq = _RECEIPT.unpack(receipt[: _RECEIPT.size]) if len(receipt) >= _RECEIPT.size \
                    else (float("nan"), version)
                known[by_key[event_key]] = (score, seq)
        entity.applied_before = known

    def _scores(self, transactions: Sequence[Transaction], slots: list[tuple[int, int]], entities: list[_Entity],
                fold: _Fold) -> list[Score]:
        redelivered = any(e.applied_before for e in entities)
        version = self.predictor.namespace
        out = []
        # Arrays become Python values once per batch: numpy scalar indexing per event cost more than the rest.
        for i, (t, score, card_seq, merchant_seq) in enumerate(zip(
                transactions, fold.scores.tolist(), fold.card_seq.tolist(), fold.merchant_seq.tolist(), strict=True)):
            before = [entities[s].applied_before[i] for s in slots[i]
                      if not self._absorbs(entities[s], i)] if redelivered else []
            # A redelivery answers with the score stored when the event was first applied.
            if before:
                score = before[0][0]
            out.append(Score(t.id, t.card_id, t.merchant_id, min(max(score, 0.0), 1.0), version,
                             card_seq, merchant_seq, len(before) == 2))
        return out


@dataclass
class _Fold:
    """Per-entity running state while a batch is folded (arrays indexed by entity slot), and per-event outputs."""

    hidden: np.ndarray  # float32 [entities, H], values always float16-representable
    seq: np.ndarray  # int64 [entities]
    last_time: np.ndarray  # float64 [entities]
    channel: np.ndarray
    country: np.ndarray
    scores: np.ndarray
    card_seq: np.ndarray
    merchant_seq: np.ndarray

    def context(self, slots: np.ndarray) -> EntityContext:
        return EntityContext(
            seen=self.seq[slots] > 0,
            last_time_s=self.last_time[slots],
            last_channel=self.channel[slots],
            last_country=self.country[slots],
        )

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
from dataclasses import dataclass, field

import numpy as np

from functions.contract import Score, Transaction
from functions.model import EntityContext, events_from_transactions, pack_context, unpack_contexts
from functions.model.features import EventColumns, encode_feature_arrays
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
    stepped: int = 0  # events through the step over every attempt: a retry steps only the events it must
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

        fold: _Fold | None = None
        for attempt in range(1, self.max_attempts + 1):
            stats.attempts = attempt
            fold = self._fold(entities, slots, events, stats, fold)
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
              stats: BatchStats, previous: _Fold | None = None) -> _Fold:
        """Fold the batch's events through the step, each entity's in arrival order.

        The first attempt steps every event from the states as read. A retry (``previous`` given) steps only the
        events of entities not written yet, from the states the store handed back; the other side of such an
        event, written already, goes in as that attempt read it. An entity's written chain is final, so this
        gives what stepping the whole batch again would give. With two instances on one stream nearly every
        1,024-event request had some merchants conflict, and stepping the whole batch again cost a fifth of the
        scorer's CPU."""
        n = len(slots)
        slot_of = np.array(slots, np.int64).reshape(n, 2)
        if previous is None:
            fold = _Fold.read(entities, n, self.hidden_size)
            open_sides = None  # every entity steps
            subset = None  # every event
        else:
            fold = previous
            open_sides = np.array([not e.done for e in entities], bool)
            fold.load(np.flatnonzero(open_sides), entities)
            subset = np.flatnonzero(open_sides[slot_of[:, 0]] | open_sides[slot_of[:, 1]])
            fold.inputs()  # every event's inputs as an array, before this attempt overwrites some
        rounds = _entity_rounds(slots if subset is None else [slots[i] for i in subset])
        last_round = max(rounds, default=-1)
        skips = [(slot, i) for slot, e in enumerate(entities) if e.applied_before for i in e.applied_before]
        started = time.perf_counter()
        everything = np.arange(n) if subset is None else subset
        by_round = np.array(rounds, np.int64) if last_round > 0 else everything
        for r in range(last_round + 1):
            # Most batches are one round (no entity twice) with no redelivery: they skip the selections below,
            # which at the scorer's small batches cost more than the arithmetic.
            rows = everything if last_round == 0 else everything[by_round == r]
            stats.rounds += 1
            stats.stepped += len(rows)
            batch = events if subset is None and last_round == 0 else events.take(rows)
            card_slots, merchant_slots = slot_of[rows, 0], slot_of[rows, 1]
            sides = [_Side.of(fold, card_slots), _Side.of(fold, merchant_slots)]
            if open_sides is not None:
                for side, written in zip(sides, fold.inputs(), strict=True):
                    side.take_written(~open_sides[side.slots], rows, written)
            fold.record(rows, sides)
            features = encode_feature_arrays(batch, sides[0].context, sides[1].context, self.predictor.spec)
            step = self.predictor.step_arrays(sides[0].hidden, sides[1].hidden, features)
            fold.scores[rows] = step.scores
            for side, new_states, seq_out in ((sides[0], step.card_states, fold.card_seq),
                                              (sides[1], step.merchant_states, fold.merchant_seq)):
                entity_slots = side.slots
                # A side written already keeps its state and seq; an entity that absorbed this event before (a
                # redelivery) keeps its state and reports its old seq.
                absorbs: slice | np.ndarray = slice(None) if open_sides is None else open_sides[entity_slots]
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
                fold.hidden[write] = new_states[absorbs].astype(np.float16)
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
class _Side:
    """One side (cards or merchants) of a round's events as the step reads it: state rows and context."""

    slots: np.ndarray  # entity slot of each row
    hidden: np.ndarray  # float32 [rows, H]
    context: EntityContext

    @classmethod
    def of(cls, fold: _Fold, slots: np.ndarray) -> _Side:
        return cls(slots, fold.hidden[slots], fold.context(slots))

    def take_written(self, written: np.ndarray, rows: np.ndarray, inputs: _Inputs) -> None:
        """Rows whose entity is written already read what they read when it was stepped (``inputs``)."""
        if not written.any():
            return
        at = rows[written]
        self.hidden[written] = inputs.hidden[at]
        ctx = self.context
        ctx.seen[written], ctx.last_time_s[written] = inputs.seen[at], inputs.last_time_s[at]
        ctx.last_channel[written], ctx.last_country[written] = inputs.last_channel[at], inputs.last_country[at]


@dataclass
class _Inputs:
    """What the step read for each event of the batch, one side: arrays indexed by event."""

    hidden: np.ndarray
    seen: np.ndarray
    last_time_s: np.ndarray
    last_channel: np.ndarray
    last_country: np.ndarray

    @classmethod
    def empty(cls, n: int, hidden_size: int) -> _Inputs:
        return cls(np.zeros((n, hidden_size), np.float32), np.zeros(n, bool), np.zeros(n), np.zeros(n, np.int64),
                   np.zeros(n, np.int64))

    def put(self, rows: np.ndarray, side: _Side) -> None:
        ctx = side.context
        self.hidden[rows], self.seen[rows], self.last_time_s[rows] = side.hidden, ctx.seen, ctx.last_time_s
        self.last_channel[rows], self.last_country[rows] = ctx.last_channel, ctx.last_country


@dataclass
class _Fold:
    """Per-entity running state while a batch is folded (arrays indexed by entity slot), per-event outputs, and
    what each event's step read (for a retry)."""

    hidden: np.ndarray  # float32 [entities, H], values always float16-representable
    seq: np.ndarray  # int64 [entities]
    last_time: np.ndarray  # float64 [entities]
    channel: np.ndarray
    country: np.ndarray
    scores: np.ndarray
    card_seq: np.ndarray
    merchant_seq: np.ndarray
    # Each round's (rows, card side, merchant side), kept by reference: recording costs a batch that never
    # retries nothing. A retry turns them into arrays by event (``inputs``) once.
    rounds: list[tuple[np.ndarray, list[_Side]]] = field(default_factory=list)
    by_event: tuple[_Inputs, _Inputs] | None = None

    @classmethod
    def read(cls, entities: list[_Entity], n: int, hidden_size: int) -> _Fold:
        """Running state from every entity's state as read."""
        channel, country = unpack_contexts([e.state.context for e in entities])
        return cls(
            # One float32 matrix for every entity of the batch: gathers and scatters are array operations, not a
            # tensor per entity (that per-entity churn was a tenth of the scorer's CPU at micro-batches of 16-32).
            hidden=np.array([e.state.hidden for e in entities], np.float32).reshape(len(entities), hidden_size),
            seq=np.array([e.state.version for e in entities], np.int64),
            last_time=np.array([e.state.last_event_time for e in entities], np.float64),
            channel=channel, country=country,
            scores=np.zeros(n, np.float32), card_seq=np.zeros(n, np.int64), merchant_seq=np.zeros(n, np.int64),
        )

    def load(self, slots: np.ndarray, entities: list[_Entity]) -> None:
        """Running state of ``slots`` from their entities' current states (as the store handed them back)."""
        states = [entities[slot].state for slot in slots]
        self.hidden[slots] = np.array([s.hidden for s in states], np.float32).reshape(len(slots), -1)
        self.seq[slots] = [s.version for s in states]
        self.last_time[slots] = [s.last_event_time for s in states]
        self.channel[slots], self.country[slots] = unpack_contexts([s.context for s in states])

    def record(self, rows: np.ndarray, sides: list[_Side]) -> None:
        if self.by_event is None:
            self.rounds.append((rows, sides))
        else:
            for inputs, side in zip(self.by_event, sides, strict=True):
                inputs.put(rows, side)

    def inputs(self) -> tuple[_Inputs, _Inputs]:
        if self.by_event is None:
            n, hidden_size = len(self.scores), self.hidden.shape[1]
            self.by_event = (_Inputs.empty(n, hidden_size), _Inputs.empty(n, hidden_size))
            for rows, sides in self.rounds:
                self.record(rows, sides)
            self.rounds.clear()
        return self.by_event

    def context(self, slots: np.ndarray) -> EntityContext:
        return EntityContext(
            seen=self.seq[slots] > 0,
            last_time_s=self.last_time[slots],
            last_channel=self.channel[slots],
            last_country=self.country[slots],
        )

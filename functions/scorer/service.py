"""The scorer instance: a predictor, a state store and a micro-batcher, plus readiness and cold-start marks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from functions.contract import Score, Transaction
from functions.model.package import Predictor
from functions.scorer.batcher import MicroBatcher
from functions.scorer.config import ScorerConfig
from functions.scorer.core import ScoringCore
from functions.scorer.errors import ModelNotReady
from functions.scorer.metrics import ScorerMetrics
from functions.scorer.phases import mark_phase
from state_service.errors import StateError
from state_service.store import StateStore

log = logging.getLogger("functions.scorer")


class ScorerService:
    def __init__(self, config: ScorerConfig, predictor: Predictor | None, store: StateStore) -> None:
        self.config = config
        self.predictor = predictor
        self.store = store
        self.metrics = ScorerMetrics()
        self._library_ready = False
        self._first = {"inference": True, "reply": True}
        self._first_lock = threading.Lock()
        self.core = ScoringCore(predictor, store, max_attempts=config.conflict_attempts) if predictor else None
        self.batcher: MicroBatcher[Transaction, Score] = MicroBatcher(self._score_batch, config.max_batch)

    def ready(self) -> tuple[bool, str]:
        """Model loaded and verified, Valkey reachable, Functions library loaded."""
        if self.predictor is None:
            return False, "model not loaded"
        try:
            if not self._library_ready:
                self.store.ensure_library()
                self._library_ready = True
            self.store.check_ready()
        except StateError as exc:
            self._library_ready = False
            return False, f"state service not ready: {exc}"
        return True, "ready"

    def score(self, transactions: Sequence[Transaction]) -> list[Score]:
        if self.core is None:
            raise ModelNotReady("no model is loaded; set MODEL_URI")
        if self.config.microbatch:
            return self.batcher.submit(transactions)
        return self._score_batch(list(transactions))

    def _score_batch(self, transactions: list[Transaction]) -> list[Score]:
        started = time.perf_counter()
        scores, stats = self.core.score(transactions)
        metrics = self.metrics
        metrics.batch_seconds.observe(time.perf_counter() - started)
        metrics.batch_size.observe(stats.size)
        metrics.step_seconds.observe(stats.step_seconds)
        metrics.events.inc(stats.size)
        if stats.conflicts:
            metrics.conflicts.inc(stats.conflicts)
        if stats.duplicates:
            metrics.duplicates.inc(stats.duplicates)
        self._mark_first("inference")
        return scores

    def mark_reply(self) -> None:
        self._mark_first("reply")

    def _mark_first(self, what: str) -> None:
        if self._first[what]:
            with self._first_lock:
                if self._first[what]:
                    self._first[what] = False
                    mark_phase(f"first_{what}")

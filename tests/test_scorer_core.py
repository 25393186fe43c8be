"""The scoring core against a real valkey-server: conflicts are recomputed on the fresh state, exactly."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

from functions.contract import Transaction, parse_time
from functions.model import FeatureSpec, FraudGRU, events_from_transactions, round_state
from functions.model.features import EntityContext, encode_features
from functions.model.package import Predictor
from functions.scorer.core import ScoringCore
from state_service.store import EntityKey, StateStore

pytest_plugins = ["valkey_fixtures"]


def _transaction(card: str, merchant: str, minute: int, amount: float) -> Transaction:
    return Transaction(id=uuid.uuid4().hex, source="/test", time=parse_time(f"2026-03-01T12:{minute:02d}:00Z"),
                       card_id=card, merchant_id=merchant, amount=amount, channel="pos", country="DE", mcc=5411)


class RacingStore(StateStore):
    """The real store, with one competing update slipped in between the first read and its compare-and-set."""

    def __init__(self, url: str, compete) -> None:  # noqa: ANN001 - a callable run once
        super().__init__(url, hidden_size=64)
        self._compete = compete

    def read_many(self, keys):  # noqa: ANN001, ANN201
        states = super().read_many(keys)
        if self._compete is not None:
            compete, self._compete = self._compete, None
            compete()
        return states


def _serial_fold(model: FraudGRU, transactions: list[Transaction]) -> tuple[torch.Tensor, list[float]]:
    """The card's state after absorbing ``transactions`` in order, one step at a time, and each score."""
    spec = model.spec
    card = merchant = torch.zeros(1, spec.hidden_size)
    scores, previous = [], None
    for t in transactions:
        events = events_from_transactions([t])
        seen = previous is not None
        ctx = EntityContext(np.array([seen]), np.array([previous.event_time_s if seen else 0.0]),
                            events_from_transactions([previous]).channel if seen else np.zeros(1, np.int64),
                            events_from_transactions([previous]).country if seen else np.zeros(1, np.int64))
        with torch.inference_mode():
            result = model.step(card, merchant, encode_features(events, ctx, ctx, spec))
        card, merchant = round_state(result.card_states), round_state(result.merchant_states)
        scores.append(float(result.scores[0]))
        previous = t
    return card[0], scores


# The scorer runs small batches through the numpy form of the step (0: torch for every batch): both must fold
# exactly what the serial torch fold does.
STEP_FORMS = pytest.mark.parametrize("numpy_step_max", [0, 64], ids=["torch-step", "numpy-step"])


@STEP_FORMS
def test_a_conflicting_write_is_detected_and_the_event_recomputed_on_the_fresh_state(valkey_server, numpy_step_max):
    torch.manual_seed(5)
    model = FraudGRU(FeatureSpec()).eval()
    predictor = Predictor(model, "fraud-gru", f"v{uuid.uuid4().hex[:6]}", {})
    predictor.use_numpy_step(numpy_step_max)
    card, merchant = f"card-{uuid.uuid4().hex}", f"m-{uuid.uuid4().hex}"
    first = _transaction(card, merchant, 1, 20.0)
    racing = _transaction(card, merchant, 2, 35.0)

    other = ScoringCore(predictor, StateStore(valkey_server.url, hidden_size=64))
    core = ScoringCore(predictor, RacingStore(valkey_server.url, lambda: other.score([first])))
    scores, stats = core.score([racing])

    assert stats.conflicts >= 1 and stats.attempts == 2
    assert (scores[0].card_seq, scores[0].merchant_seq) == (2, 2)
    stored = core.store.read_many([EntityKey(predictor.namespace, "card", card)])[0]
    expected_state, expected_scores = _serial_fold(model, [first, racing])
    assert stored.version == 2
    assert torch.allclose(torch.from_numpy(stored.hidden.astype(np.float32)), expected_state, atol=1e-6)
    assert abs(scores[0].score - expected_scores[1]) <= 1e-5


@STEP_FORMS
def test_events_for_one_entity_inside_a_batch_apply_in_arrival_order(valkey_server, numpy_step_max):
    torch.manual_seed(6)
    model = FraudGRU(FeatureSpec()).eval()
    predictor = Predictor(model, "fraud-gru", f"v{uuid.uuid4().hex[:6]}", {})
    predictor.use_numpy_step(numpy_step_max)
    card, merchant = f"card-{uuid.uuid4().hex}", f"m-{uuid.uuid4().hex}"
    batch = [_transaction(card, merchant, minute, 10.0 + minute) for minute in range(1, 6)]
    core = ScoringCore(predictor, StateStore(valkey_server.url, hidden_size=64))
    scores, stats = core.score(batch)
    expected_state, expected_scores = _serial_fold(model, batch)
    assert [s.card_seq for s in scores] == [1, 2, 3, 4, 5]
    assert stats.rounds == 5
    assert np.max(np.abs(np.array([s.score for s in scores]) - expected_scores)) <= 1e-5
    stored = core.store.read_many([EntityKey(predictor.namespace, "card", card)])[0]
    assert torch.allclose(torch.from_numpy(stored.hidden.astype(np.float32)), expected_state, atol=1e-6)


def test_a_redelivery_absorbed_by_the_card_only_is_applied_to_the_merchant_alone(valkey_server):
    """The card took the event, the merchant lost it (erased here; in production, a conflict that ran out of
    attempts): the redelivery moves only the merchant, answers the card's stored score, and a later event of the
    same batch still folds on the card in order."""
    torch.manual_seed(7)
    model = FraudGRU(FeatureSpec()).eval()
    predictor = Predictor(model, "fraud-gru", f"v{uuid.uuid4().hex[:6]}", {})
    card, merchant = f"card-{uuid.uuid4().hex}", f"m-{uuid.uuid4().hex}"
    first = _transaction(card, merchant, 1, 20.0)
    core = ScoringCore(predictor, StateStore(valkey_server.url, hidden_size=64))
    [original], _ = core.score([first])
    StateStore(valkey_server.admin_url, hidden_size=64).delete(EntityKey(predictor.namespace, "merchant", merchant))

    second = _transaction(card, merchant, 2, 35.0)
    [again, after], stats = core.score([first, second])

    assert stats.duplicates >= 1
    assert (again.card_seq, again.merchant_seq, again.duplicate) == (1, 1, False)
    assert again.score == original.score
    assert (after.card_seq, after.merchant_seq) == (2, 2)
    expected_state, expected_scores = _serial_fold(model, [first, second])
    assert abs(after.score - expected_scores[1]) <= 1e-5
    stored = core.store.read_many([EntityKey(predictor.namespace, "card", card)])[0]
    assert stored.version == 2
    assert torch.allclose(torch.from_numpy(stored.hidden.astype(np.float32)), expected_state, atol=1e-6)


def test_an_entity_erased_and_rebuilt_to_the_same_version_meanwhile_is_a_conflict_not_an_overwrite(valkey_server):
    """Between this core's read and its write, the card and merchant are erased and another core rebuilds them to
    the version read, from another event: the write expects the bytes it read, conflicts, and is recomputed on the
    rebuilt states. A compare on the version alone would have written a state folded from the erased one."""
    torch.manual_seed(9)
    model = FraudGRU(FeatureSpec()).eval()
    predictor = Predictor(model, "fraud-gru", f"v{uuid.uuid4().hex[:6]}", {})
    card, merchant = f"card-{uuid.uuid4().hex}", f"m-{uuid.uuid4().hex}"
    erased, rebuilt, late = (_transaction(card, merchant, minute, amount)
                             for minute, amount in ((1, 20.0), (2, 900.0), (3, 35.0)))
    admin = StateStore(valkey_server.admin_url, hidden_size=64)
    other = ScoringCore(predictor, StateStore(valkey_server.url, hidden_size=64))
    other.score([erased])

    def erase_and_rebuild() -> None:
        for entity_type, entity_id in (("card", card), ("merchant", merchant)):
            admin.delete(EntityKey(predictor.namespace, entity_type, entity_id))
        other.score([rebuilt])

    core = ScoringCore(predictor, RacingStore(valkey_server.url, erase_and_rebuild))
    [score], stats = core.score([late])

    assert stats.conflicts == 2  # card and merchant
    assert (score.card_seq, score.merchant_seq) == (2, 2)
    expected_state, expected_scores = _serial_fold(model, [rebuilt, late])
    assert abs(score.score - expected_scores[1]) <= 1e-5
    stored = admin.read_many([EntityKey(predictor.namespace, "card", card)])[0]
    assert torch.allclose(torch.from_numpy(stored.hidden.astype(np.float32)), expected_state, atol=1e-6)


def test_a_retry_steps_only_the_events_of_the_entities_that_conflicted(valkey_server):
    """A competing write moves one merchant between this core's read and its write. Only that merchant conflicts,
    and the retry steps only its events, with each card as written in the first attempt (one of them after an
    earlier event of the batch). Scores, seqs and stored states equal those of a core that saw the competing
    event first."""
    torch.manual_seed(11)
    model = FraudGRU(FeatureSpec()).eval()
    tag = uuid.uuid4().hex[:6]
    racing_run, reference_run = (Predictor(model, "fraud-gru", f"v{tag}{suffix}", {}) for suffix in ("a", "b"))
    cards = [f"card-{tag}-{i}" for i in range(4)]
    merchants = [f"m-{tag}-{i}" for i in range(3)]
    hot = merchants[1]
    pairs = [(0, 0), (1, 1), (2, 0), (2, 1), (3, 1), (3, 2), (0, 2), (1, 1)]
    batch = [_transaction(cards[c], merchants[m], minute, 10.0 + 7 * minute)
             for minute, (c, m) in enumerate(pairs, start=1)]
    competing = _transaction(f"card-{tag}-elsewhere", hot, 0, 55.0)
    store = StateStore(valkey_server.url, hidden_size=64)

    other = ScoringCore(racing_run, store)
    core = ScoringCore(racing_run, RacingStore(valkey_server.url, lambda: other.score([competing])))
    scores, stats = core.score(batch)

    reference = ScoringCore(reference_run, store)
    reference.score([competing])
    expected, _ = reference.score(batch)

    hot_events = sum(1 for _, m in pairs if m == 1)
    assert (stats.conflicts, stats.attempts) == (1, 2)
    assert stats.stepped == len(batch) + hot_events
    assert [(s.card_seq, s.merchant_seq) for s in scores] == [(s.card_seq, s.merchant_seq) for s in expected]
    assert np.max(np.abs(np.array([s.score for s in scores]) - [s.score for s in expected])) <= 1e-5
    for entity_type, ids in (("card", cards), ("merchant", merchants)):
        got = store.read_many([EntityKey(racing_run.namespace, entity_type, i) for i in ids])
        want = store.read_many([EntityKey(reference_run.namespace, entity_type, i) for i in ids])
        for mine, theirs in zip(got, want, strict=True):
            assert mine.version == theirs.version
            # one float16 step at most: the retry's step sees other batch shapes than the reference's
            np.testing.assert_allclose(mine.hidden.astype(np.float32), theirs.hidden.astype(np.float32), atol=1e-3)

"""The pure step: batching never changes a result, and the trainer's stream runner computes what serving does."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from functions.model import EntityContext, EventColumns, FeatureSpec, FraudGRU, StepResult, encode_features, round_state
from functions.model.features import encode_feature_arrays
from functions.trainer.stream import build_stream
from functions.trainer.tbptt import run_stream


def _random_events(n: int, seed: int = 0) -> EventColumns:
    rng = np.random.default_rng(seed)
    return EventColumns(
        amount=rng.gamma(2.0, 30.0, n),
        time_s=1.7e9 + np.sort(rng.uniform(0, 5 * 86_400, n)),
        mcc=rng.choice([-1, 5411, 5812, 6011, 7995], n),
        channel=rng.integers(0, 4, n),
        country=rng.integers(0, 677, n),
    )


def _random_context(n: int, rng: np.random.Generator) -> EntityContext:
    return EntityContext(
        seen=rng.random(n) < 0.7,
        last_time_s=1.7e9 + rng.uniform(-86_400, 0, n),
        last_channel=rng.integers(0, 4, n),
        last_country=rng.integers(0, 677, n),
    )


def _row(context: EntityContext, i: int) -> EntityContext:
    return EntityContext(*(getattr(context, f)[i : i + 1] for f in ("seen", "last_time_s", "last_channel",
                                                                     "last_country")))


def test_a_lone_event_encodes_to_the_same_float32_values_as_in_a_batch():
    # The scalar path for one event against the vectorised one, over amounts from cents to millions, times over
    # decades, gaps either way (late events), unseen entities, every channel and unknown MCCs.
    spec, n = FeatureSpec(), 5_000
    rng = np.random.default_rng(11)
    events = EventColumns(amount=np.exp(rng.uniform(-4, 14, n)), time_s=rng.uniform(0, 2.5e9, n),
                          mcc=rng.integers(-1, 10_000, n), channel=rng.integers(0, 5, n),
                          country=rng.integers(0, 677, n))
    card = EntityContext(rng.random(n) < 0.7, events.time_s - rng.normal(0, 1e5, n), rng.integers(0, 5, n),
                         rng.integers(0, 677, n))
    merchant = _random_context(n, rng)
    batch = encode_feature_arrays(events, card, merchant, spec)
    for i in range(n):
        one = encode_feature_arrays(events.take(np.array([i])), _row(card, i), _row(merchant, i), spec)
        for name in ("event_numeric", "channel", "mcc", "country", "card_numeric", "merchant_numeric"):
            got, want = getattr(one, name), getattr(batch, name)[i : i + 1]
            assert got.dtype == want.dtype and np.array_equal(got, want), (name, i, got, want)


def test_batched_step_equals_per_event_steps():
    torch.manual_seed(1)
    spec = FeatureSpec()
    model = FraudGRU(spec).eval()
    rng = np.random.default_rng(3)
    n = 64
    features = encode_features(_random_events(n), _random_context(n, rng), _random_context(n, rng), spec)
    cards = round_state(torch.randn(n, spec.hidden_size))
    merchants = round_state(torch.randn(n, spec.hidden_size))
    with torch.inference_mode():
        batched = model.step(cards, merchants, features)
        for i in range(n):
            single = model.step(cards[i : i + 1], merchants[i : i + 1], features.take(torch.tensor([i])))
            assert torch.allclose(single.card_states, batched.card_states[i : i + 1], atol=1e-6)
            assert torch.allclose(single.merchant_states, batched.merchant_states[i : i + 1], atol=1e-6)
            assert abs(single.scores.item() - batched.scores[i].item()) <= 1e-6


def test_stream_runner_equals_serial_steps_through_stored_states():
    """What training computes over an interleaved stream is what the scorer computes one event at a time."""
    torch.manual_seed(2)
    spec = FeatureSpec()
    model = FraudGRU(spec).eval()
    rng = np.random.default_rng(5)
    n = 300
    events = _random_events(n, seed=7)
    columns = SimpleNamespace(
        card_id=rng.choice([f"c{i}" for i in range(12)], n),
        merchant_id=rng.choice([f"m{i}" for i in range(5)], n),
        amount=events.amount, time_s=events.time_s, mcc=events.mcc,
        channel=np.array(["", "pos", "online", "atm"])[events.channel],
        country=rng.choice(["DE", "FR", "US", ""], n),
        is_fraud=np.zeros(n, bool), scenario=np.full(n, ""),
    )
    data = build_stream(columns, spec)
    streamed = run_stream(model, data)

    cards: dict[int, torch.Tensor] = {}
    merchants: dict[int, torch.Tensor] = {}
    zero = torch.zeros(1, spec.hidden_size)
    with torch.inference_mode():
        for i in range(n):
            c, m = int(data.card_index[i]), int(data.merchant_index[i])
            result = model.step(cards.get(c, zero), merchants.get(m, zero), data.features.take(torch.tensor([i])))
            cards[c], merchants[m] = round_state(result.card_states), round_state(result.merchant_states)
            assert abs(result.scores.item() - streamed[i]) <= 1e-5


def test_compiled_step_equals_the_eager_step():
    from functions.model.package import _example_features, compile_step

    torch.manual_seed(4)
    model = FraudGRU(FeatureSpec()).eval()
    step = compile_step(model)
    for n in (1, 7, 64):
        features = _example_features(model.spec, n)
        cards, merchants = torch.randn(n, 64), torch.randn(n, 64)
        with torch.inference_mode():
            eager, compiled = model.step(cards, merchants, features), step(cards, merchants, features)
        assert torch.allclose(eager.scores, compiled.scores, atol=1e-6)
        assert torch.allclose(eager.card_states, compiled.card_states, atol=1e-6)
        assert torch.allclose(eager.merchant_states, compiled.merchant_states, atol=1e-6)


def _assert_same_step(expected, got, atol: float = 1e-6) -> None:  # noqa: ANN001 - two StepResults
    for name in ("card_states", "merchant_states", "scores", "logits"):
        assert torch.allclose(getattr(expected, name), getattr(got, name), atol=atol), name


@pytest.mark.parametrize("n", [1, 7, 64])
def test_the_numpy_step_equals_the_torch_step(n):
    from functions.model.numpy_step import NumpyStep

    torch.manual_seed(8)
    model = FraudGRU(FeatureSpec()).eval()
    rng = np.random.default_rng(n)
    features = encode_features(_random_events(n, seed=n), _random_context(n, rng), _random_context(n, rng), model.spec)
    cards, merchants = round_state(torch.randn(n, 64)), round_state(torch.randn(n, 64))
    with torch.inference_mode():
        expected = model.step(cards, merchants, features)
    _assert_same_step(expected, NumpyStep(model)(cards, merchants, features))


def test_the_numpy_step_saturates_like_torch_without_overflow_warnings():
    import warnings

    from functions.model.numpy_step import NumpyStep

    torch.manual_seed(9)
    model = FraudGRU(FeatureSpec()).eval()
    with torch.no_grad():
        model.head[2].weight.mul_(400.0)  # logits in the hundreds, both signs: exp(-x) alone would overflow
    features = encode_features(_random_events(32), EntityContext.unseen(32), EntityContext.unseen(32), model.spec)
    cards, merchants = 50 * torch.randn(32, 64), 50 * torch.randn(32, 64)
    with torch.inference_mode():
        expected = model.step(cards, merchants, features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = NumpyStep(model)(cards, merchants, features)
    assert expected.logits.abs().max() > 100
    assert ((got.scores == 0) | (got.scores == 1)).any()
    _assert_same_step(expected, got, atol=1e-4)  # logits of ~1e2 in float32: a few ulps of them


class _CountingStep:
    """The numpy step, counting the batch sizes it is called with, through either interface."""

    def __init__(self, step: object) -> None:
        self.step, self.calls = step, []

    def __call__(self, *args: object) -> object:
        self.calls.append(len(args[2]))
        return self.step(*args)

    def arrays(self, *args: object) -> object:
        self.calls.append(len(args[2]))
        return self.step.arrays(*args)


def test_the_predictor_takes_the_numpy_step_up_to_its_limit_and_torch_above():
    from functions.model.package import Predictor

    torch.manual_seed(10)
    model = FraudGRU(FeatureSpec()).eval()
    predictor = Predictor(model, "fraud-gru", "v1", {})
    predictor.use_numpy_step(4)
    counting = predictor.small_batch_step = _CountingStep(predictor.small_batch_step)
    rng = np.random.default_rng(10)
    for n in (1, 4, 5, 64):
        events, card, merchant = _random_events(n, seed=n), _random_context(n, rng), _random_context(n, rng)
        features = encode_features(events, card, merchant, model.spec)
        cards, merchants = torch.randn(n, 64), torch.randn(n, 64)
        with torch.inference_mode():
            expected = model.step(cards, merchants, features)
        _assert_same_step(expected, predictor.step(cards, merchants, features))
        arrays = predictor.step_arrays(cards.numpy(), merchants.numpy(), encode_feature_arrays(events, card, merchant,
                                                                                               model.spec))
        assert all(isinstance(a, np.ndarray) for a in arrays)
        _assert_same_step(expected, StepResult(*(torch.from_numpy(a) for a in arrays)))
    assert counting.calls == [1, 1, 4, 4]
    predictor.use_numpy_step(0)
    assert predictor.small_batch_step is None


def test_the_channel_block_is_the_one_hot_of_every_channel_and_stays_out_of_packages():
    model = FraudGRU(FeatureSpec())
    codes = torch.arange(model.encoder.channels)
    features = encode_features(_random_events(len(codes)), EntityContext.unseen(len(codes)),
                               EntityContext.unseen(len(codes)), model.spec)
    features = type(features)(features.event_numeric, codes, features.mcc, features.country,
                              features.card_numeric, features.merchant_numeric)

    event = model.encoder(features)

    numeric = features.event_numeric.shape[1]
    expected = torch.nn.functional.one_hot(codes, model.encoder.channels).to(torch.float32)
    assert torch.equal(event[:, numeric:numeric + model.encoder.channels], expected)
    assert "encoder.channel_rows" not in model.state_dict()
    with pytest.raises(IndexError):  # a code past the last channel is refused, as one_hot refuses it
        model.encoder(type(features)(features.event_numeric, codes + model.encoder.channels, features.mcc,
                                     features.country, features.card_numeric, features.merchant_numeric))

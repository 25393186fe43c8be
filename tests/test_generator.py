"""The synthetic transaction generator: determinism, scenarios, contract, ordering, rates, drift, labels, cards."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np
import orjson
import pytest

from functions import cli
from functions.contract import (
    LABEL_TYPE,
    STRUCTURED_CONTENT_TYPE,
    TRANSACTION_TYPE,
    parse_event,
    parse_http_request,
    structured_json,
    validate_label_data,
)
from functions.generator import (
    GeneratorConfig,
    GeneratorConfigError,
    PatternRates,
    StreamFileError,
    generate_columns,
    iter_events,
    read_transactions_jsonl,
    read_truth_meta,
    write_jsonl,
)
from functions.generator.base import day_activity_factor
from functions.generator.columns import population
from functions.generator.config import SCENARIOS
from functions.generator.events import contract_events, json_lines, stream_order

DAY = 86_400.0


@pytest.fixture(scope="module")
def tiny():
    return generate_columns(GeneratorConfig.preset("tiny", seed=7))


@pytest.fixture(scope="module")
def quick():
    return generate_columns(GeneratorConfig.preset("quick", seed=7))


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    path, truth = folder / "tiny.jsonl", folder / "tiny.truth.jsonl"
    count = write_jsonl(GeneratorConfig.preset("tiny", seed=7), path, truth_path=truth, progress=False, labels=True)
    return path, truth, count


def _lines(path):
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_same_seed_gives_identical_bytes(tiny_file, tmp_path):
    path, truth, _ = tiny_file
    again, again_truth = tmp_path / "again.jsonl", tmp_path / "again.truth.jsonl"
    write_jsonl(GeneratorConfig.preset("tiny", seed=7), again, truth_path=again_truth, progress=False, labels=True)
    assert again.read_bytes() == path.read_bytes()
    assert again_truth.read_bytes() == truth.read_bytes()


def test_different_seed_gives_a_different_stream(tiny):
    other, _ = generate_columns(GeneratorConfig.preset("tiny", seed=8))
    assert len(other) != len(tiny[0]) or not np.array_equal(other.amount, tiny[0].amount)
    assert set(other.card_id[:50]) != set(tiny[0].card_id[:50])


def test_every_scenario_and_pattern_is_present(tiny):
    columns, meta = tiny
    present = set(columns.scenario.tolist())
    assert set(SCENARIOS) <= present
    assert all(meta.counts[name] > 0 for name in SCENARIOS[1:])
    assert meta.trips > 0 and columns.traveling.any()
    assert meta.blocked_cards


def test_fast_json_equals_the_contract_events_for_every_event(tiny):
    columns, meta = tiny
    order = stream_order(columns, meta.end_s)
    fast = list(json_lines(columns, order))
    built = list(contract_events(columns, order))
    assert len(fast) == len(built) == len(order) > len(columns)
    assert [orjson.loads(line) for line in fast] == [structured_json(event) for event in built]


def test_every_event_validates_against_the_contract(tiny_file):
    path, _, count = tiny_file
    headers = {"content-type": STRUCTURED_CONTENT_TYPE}
    types = {TRANSACTION_TYPE: 0, LABEL_TYPE: 0}
    lines = path.read_bytes().splitlines()
    assert len(lines) == count
    for line in lines:
        event = parse_event(headers, line)
        types[event.get_type()] += 1
        if event.get_type() == TRANSACTION_TYPE:
            (transaction,) = parse_http_request(headers, line)
            assert event.get_extension("partitionkey") == transaction.card_id
            assert set(transaction.data()) == {"card_id", "merchant_id", "amount", "currency", "mcc", "channel",
                                               "country"}
        else:
            validate_label_data(event.get_data())
    assert types[TRANSACTION_TYPE] > 1000 and types[LABEL_TYPE] > 100


def test_iter_events_yields_contract_events_in_the_file_order(tiny_file):
    path, _, _ = tiny_file
    ids = [event.get_id() for event in iter_events(GeneratorConfig.preset("tiny", seed=7))]
    assert ids == [line["id"] for line in _lines(path)]


def test_stream_is_time_ordered_with_ties_broken_by_event_id(tiny_file):
    keys = [(line["time"], line["id"]) for line in _lines(tiny_file[0])]
    assert keys == sorted(keys)


def test_labels_never_come_before_their_transaction(tiny_file, quick):
    seen_at: dict[str, str] = {}
    for line in _lines(tiny_file[0]):
        if line["type"] == TRANSACTION_TYPE:
            seen_at[line["id"]] = line["time"]
        else:
            transaction_id = line["data"]["transaction_id"]
            assert transaction_id in seen_at, "label before its transaction"
            assert line["time"] > seen_at[transaction_id]
    columns, _ = quick
    assert np.all(columns.label_available_s > columns.time_s)


def test_labels_arrive_with_a_chargeback_delay_and_genuine_ones_at_maturity(quick):
    columns, meta = quick
    config = GeneratorConfig.preset("quick", seed=7)
    delay_days = (columns.label_available_s - columns.time_s) / DAY
    fraud = columns.is_fraud & np.isfinite(delay_days)
    assert 3 < np.median(delay_days[fraud]) < 15
    assert delay_days[fraud].max() > 30  # a long tail
    genuine = ~columns.is_fraud
    assert np.allclose(delay_days[genuine], config.labels.genuine_maturity_days)
    never = columns.is_fraud & ~np.isfinite(delay_days)
    assert 0 < never.sum() == meta.fraud_never_labelled < 0.1 * columns.is_fraud.sum()


def test_per_day_counts_are_near_the_configured_rates():
    no_fraud = PatternRates(s2_terminals=0, s3_customers=0, card_testing=0, burst=0, geo_jump=0,
                            point_of_compromise=0, travel=0)
    config = GeneratorConfig(customers=500, terminals=2_000, days=21, radius=10, seed=3, rates=no_fraud,
                             s1_threshold=1e9)
    columns, _ = generate_columns(config)
    world = population(config)
    # Poisson mean per customer-day, minus the handbook's discarded times outside the day (|z| > 43200 / 20000).
    inside_day = 0.9692
    expected = (world.tx_per_day * world.active).sum() * inside_day * day_activity_factor(config)
    day = ((columns.time_s - columns.time_s.min()) // DAY).astype(int)
    observed = np.bincount(day, minlength=config.days)
    assert np.all(np.abs(observed - expected) < 4 * np.sqrt(expected))
    assert 0.98 < observed.sum() / expected.sum() < 1.02


def test_overall_fraud_rate_is_in_a_sane_band(quick):
    columns, meta = quick
    assert 0.005 < columns.is_fraud.mean() < 0.03
    assert meta.fraud_rate == pytest.approx(columns.is_fraud.mean())
    assert set(columns.scenario[columns.is_fraud].tolist()) == set(SCENARIOS[1:])
    assert not columns.scenario[~columns.is_fraud].any()


def test_s1_is_every_base_transaction_above_the_threshold_and_patterns_stay_below_it(quick):
    columns, _ = quick
    s3 = columns.scenario == "S3"
    above = (columns.amount > 220) & ~s3
    assert np.all(columns.is_fraud[above])
    sequence_only = np.isin(columns.scenario, ["card_testing", "burst", "geo_jump", "point_of_compromise"])
    assert columns.amount[sequence_only].max() < 220


def test_drift_timeline_is_written_to_ground_truth(quick, tiny_file):
    columns, meta = quick
    kinds = [entry["kind"] for entry in meta.drift]
    assert kinds == ["pattern_on", "amount_scale", "pattern_rate"]
    switch_on = datetime.fromisoformat(meta.drift[0]["start_time"]).timestamp()
    card_testing = columns.time_s[columns.scenario == "card_testing"]
    assert card_testing.min() >= switch_on
    assert meta.drift[0]["affected"]["instances_in_window"] > 0
    full_effect = datetime.fromisoformat(meta.drift[1]["full_effect_time"]).timestamp()
    genuine = ~columns.is_fraud
    before = np.median(columns.amount[genuine & (columns.time_s < meta.start_s + 40 * DAY)])
    after = np.median(columns.amount[genuine & (columns.time_s >= full_effect)])
    assert 1.1 < after / before < 1.3
    assert [entry["kind"] for entry in read_truth_meta(tiny_file[1])["drift"]] == kinds


def test_a_blocked_card_gets_a_replacement_id(quick):
    columns, meta = quick
    assert len(meta.blocked_cards) > 100
    checked = 0
    for block in meta.blocked_cards[:200]:
        old = columns.card_id == block["card_id"]
        new = columns.card_id == block["replacement_id"]
        blocked_at = datetime.fromisoformat(block["blocked_at"]).timestamp()
        replaced_at = datetime.fromisoformat(block["replaced_at"]).timestamp()
        assert block["replacement_id"] != block["card_id"]
        assert columns.time_s[old].max() <= blocked_at  # nothing goes through a blocked card
        # The first report confirms every fraud on the card so far (back-fill).
        assert np.all(columns.label_available_s[old & columns.is_fraud] == blocked_at)
        if new.any():
            assert columns.time_s[new].min() >= replaced_at
            assert set(columns.customer_id[new]) == {block["customer_id"]}
            checked += 1
    assert checked > 50


def test_genuine_travel_changes_country_without_being_fraud(quick):
    columns, _ = quick
    assert not columns.is_fraud[columns.traveling & (columns.scenario != "S2") & (columns.scenario != "S1")
                                & (columns.scenario != "S3")].any()
    travel = np.flatnonzero(columns.traveling)
    home = {}
    for customer, country in zip(columns.customer_id[~columns.traveling], columns.country[~columns.traveling],
                                 strict=True):
        home.setdefault(customer, {}).setdefault(country, 0)
        home[customer][country] += 1
    abroad = [columns.country[i] != max(home[columns.customer_id[i]].items(), key=lambda kv: kv[1])[0]
              for i in travel if columns.customer_id[i] in home]
    assert np.mean(abroad) > 0.5


def test_read_transactions_jsonl_round_trips_columns_and_truth(tiny, tiny_file):
    columns, _ = tiny
    path, truth, _ = tiny_file
    back = read_transactions_jsonl(path)  # finds tiny.truth.jsonl next to it
    for name in ("event_id", "card_id", "merchant_id", "currency", "channel", "country", "scenario", "customer_id"):
        assert back.__getattribute__(name).tolist() == columns.__getattribute__(name).tolist(), name
    for name in ("time_s", "amount", "mcc", "is_fraud", "label_available_s"):
        assert np.array_equal(getattr(back, name), getattr(columns, name)), name
    assert back.transaction(5) == columns.transaction(5)


def test_reading_without_truth_reads_genuine_and_a_missing_truth_file_is_named(tmp_path, tiny_file):
    lonely = tmp_path / "lonely.jsonl"
    lonely.write_bytes(tiny_file[0].read_bytes())
    columns = read_transactions_jsonl(lonely)
    assert len(columns) > 1000 and not columns.is_fraud.any()
    with pytest.raises(StreamFileError, match="missing.truth.jsonl"):
        read_transactions_jsonl(lonely, tmp_path / "missing.truth.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"type": "dev.hiddenstate.transaction", "id": "x"}\n')
    with pytest.raises(StreamFileError, match="broken.jsonl:1"):
        read_transactions_jsonl(broken)


def test_bad_settings_get_a_clear_error():
    with pytest.raises(GeneratorConfigError, match="unknown preset 'huge'"):
        GeneratorConfig.preset("huge")
    with pytest.raises(GeneratorConfigError, match="'customers'"):
        replace(GeneratorConfig.preset("tiny"), customers=0)
    with pytest.raises(GeneratorConfigError, match="start_date"):
        GeneratorConfig(start_date="April")


def test_generate_command_writes_stream_and_truth(tmp_path, capsys):
    out, truth = tmp_path / "s.jsonl", tmp_path / "s.truth.jsonl"
    status = cli.main(["generate", "--preset", "tiny", "--seed", "7", "--out", str(out), "--truth", str(truth),
                       "--labels", "--fraud-labels-only", "--no-progress"])
    assert status == 0
    lines = _lines(out)
    labels = [line for line in lines if line["type"] == LABEL_TYPE]
    assert labels and all(line["data"]["is_fraud"] for line in labels)
    assert "wrote" in capsys.readouterr().out
    assert len(truth.read_bytes().splitlines()) == 1 + len(lines) - len(labels)


def test_generate_help_explains_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--labels" in text and "--truth" in text and "tiny" in text

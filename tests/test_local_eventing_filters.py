"""Trigger filters: every dialect, the legacy attributes filter, precedence, and load-time errors."""

from __future__ import annotations

import pytest

from knative.local.eventing.errors import EventingConfigError, UnsupportedFilter
from knative.local.eventing.filters import compile_filter, compile_trigger_filter

SCORE = {"type": "dev.hiddenstate.score", "source": "/scorer/r1", "id": "s-1", "specversion": "1.0",
         "subject": "card-7"}
TRANSACTION = {"type": "dev.hiddenstate.transaction", "source": "/hiddenstate/generator", "id": "t-1",
               "specversion": "1.0", "partitionkey": "card-7"}


def test_attributes_filter_matches_every_key_exactly():
    matches = compile_trigger_filter({"filter": {"attributes": {"type": "dev.hiddenstate.score", "subject": "card-7"}}})
    assert matches(SCORE)
    assert not matches({**SCORE, "subject": "card-8"})
    assert not matches(TRANSACTION)


def test_attributes_filter_empty_value_means_present_and_non_empty():
    matches = compile_trigger_filter({"filter": {"attributes": {"partitionkey": ""}}})
    assert matches(TRANSACTION)
    assert not matches(SCORE)
    assert not matches({**TRANSACTION, "partitionkey": ""})


def test_absent_attribute_never_matches_an_exact_filter():
    assert not compile_filter({"exact": {"subject": "card-7"}})(TRANSACTION)


def test_no_filter_matches_everything():
    assert compile_trigger_filter({})(SCORE)
    assert compile_trigger_filter({"filter": {}})(TRANSACTION)


def test_exact_prefix_and_suffix_dialects():
    assert compile_filter({"exact": {"type": "dev.hiddenstate.score"}})(SCORE)
    assert not compile_filter({"exact": {"type": "dev.hiddenstate"}})(SCORE)
    assert compile_filter({"prefix": {"type": "dev.hiddenstate."}})(SCORE)
    assert not compile_filter({"prefix": {"source": "/hiddenstate"}})(SCORE)
    assert compile_filter({"suffix": {"type": ".score", "source": "/r1"}})(SCORE)
    assert not compile_filter({"suffix": {"type": ".score", "source": "/r2"}})(SCORE)


def test_all_dialect_needs_every_filter_and_any_needs_one():
    both = [{"prefix": {"type": "dev."}}, {"exact": {"subject": "card-7"}}]
    assert compile_filter({"all": both})(SCORE)
    assert not compile_filter({"all": both})(TRANSACTION)
    assert compile_filter({"any": both})(TRANSACTION)
    assert not compile_filter({"any": [{"exact": {"type": "x"}}, {"suffix": {"id": "9"}}]})(TRANSACTION)


def test_not_dialect_negates_its_filter():
    assert compile_filter({"not": {"exact": {"type": "dev.hiddenstate.score"}}})(TRANSACTION)
    assert not compile_filter({"not": {"exact": {"type": "dev.hiddenstate.score"}}})(SCORE)


def test_dialects_nest():
    nested = {"all": [{"any": [{"suffix": {"type": ".score"}}, {"suffix": {"type": ".label"}}]},
                      {"not": {"prefix": {"source": "/test"}}}]}
    assert compile_filter(nested)(SCORE)
    assert not compile_filter(nested)({**SCORE, "source": "/test/x"})
    assert not compile_filter(nested)(TRANSACTION)


def test_filters_list_must_all_pass():
    matches = compile_trigger_filter({"filters": [{"prefix": {"type": "dev."}}, {"exact": {"subject": "card-7"}}]})
    assert matches(SCORE)
    assert not matches(TRANSACTION)


def test_filters_win_over_filter_attributes():
    spec = {"filter": {"attributes": {"type": "dev.hiddenstate.score"}},
            "filters": [{"exact": {"type": "dev.hiddenstate.transaction"}}]}
    assert compile_trigger_filter(spec)(TRANSACTION)
    assert not compile_trigger_filter(spec)(SCORE)


def test_cesql_is_rejected_at_load_with_a_clear_error():
    with pytest.raises(UnsupportedFilter, match="not supported locally"):
        compile_trigger_filter({"filters": [{"cesql": "type = 'dev.hiddenstate.score'"}]})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"exact": {"type": "a"}, "prefix": {"type": "b"}}, "exactly one dialect"),
        ({"regex": {"type": "a.*"}}, "unknown filter dialect 'regex'"),
        ({"prefix": {"type": ""}}, "must be non-empty"),
        ({"exact": {}}, "at least one attribute"),
        ({"exact": {"type": 3}}, "must map to a string"),
        ({"all": {"exact": {"type": "a"}}}, "must be a list"),
        ("type=a", "one dialect key"),
    ],
)
def test_malformed_filters_are_rejected_naming_the_problem(entry, message):
    with pytest.raises(EventingConfigError, match=message):
        compile_trigger_filter({"filters": [entry]})

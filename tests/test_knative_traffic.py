"""Canary and rollback traffic blocks, computed from a Service's status (no cluster involved)."""

from __future__ import annotations

import pytest

from knative.deploy.errors import TrafficError
from knative.deploy.traffic import canary_traffic, rollback_traffic
from knative.validation import traffic_problems


def _status(latest: str, *traffic: dict) -> dict:
    return {"latestReadyRevisionName": latest, "traffic": list(traffic)}


def test_percent_zero_pins_traffic_to_the_running_revision_before_a_new_deploy():
    status = _status("scorer-1", {"revisionName": "scorer-1", "percent": 100, "latestRevision": True})
    assert canary_traffic(status, 0) == [{"revisionName": "scorer-1", "percent": 100, "tag": "current"}]


def test_every_canary_split_sums_to_100():
    status = _status("scorer-2", {"revisionName": "scorer-1", "percent": 100, "tag": "current"})
    for percent in (0, 1, 10, 50, 99, 100):
        assert traffic_problems(canary_traffic(status, percent)) == []


def test_promotion_keeps_the_old_revision_reachable_for_rollback():
    status = _status("scorer-2", {"revisionName": "scorer-1", "percent": 50, "tag": "current"},
                     {"revisionName": "scorer-2", "percent": 50, "tag": "candidate"})
    promoted = canary_traffic(status, 100)
    assert promoted[0] == {"revisionName": "scorer-2", "percent": 100, "tag": "current"}
    after = _status("scorer-2", *promoted)
    assert rollback_traffic(after, [])[0] == {"revisionName": "scorer-1", "percent": 100, "tag": "current"}


def test_an_explicit_revision_can_be_the_candidate():
    status = _status("scorer-3", {"revisionName": "scorer-1", "percent": 100, "tag": "current"})
    assert canary_traffic(status, 20, "scorer-2")[1] == {"revisionName": "scorer-2", "percent": 20,
                                                         "tag": "candidate"}


def test_a_split_with_nothing_to_split_against_says_what_to_do():
    status = _status("scorer-1", {"revisionName": "scorer-1", "percent": 100})
    with pytest.raises(TrafficError, match="pin it with --percent 0"):
        canary_traffic(status, 10)


def test_percent_outside_0_to_100_is_refused():
    with pytest.raises(TrafficError, match="between 0 and 100"):
        canary_traffic(_status("scorer-1"), 120)


def test_rollback_with_no_earlier_revision_is_refused():
    status = _status("scorer-1", {"revisionName": "scorer-1", "percent": 100})
    revision = {"metadata": {"name": "scorer-1", "labels": {"serving.knative.dev/configurationGeneration": "1"}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    with pytest.raises(TrafficError, match="no earlier ready revision"):
        rollback_traffic(status, [revision])

"""The KPA decider and the PodAutoscaler rules, driven by synthetic metric series and a synthetic clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from knative.local.serving.config import (
    CLUSTER_DEFAULTS,
    ConfigError,
    ScalingSettings,
    parse_duration,
    parse_overrides,
    scaling_settings,
)
from knative.local.serving.kpa import Kpa, PodAutoscaler, WindowAverage


def run(kpa: Kpa, series: Callable[[int], float], seconds: range, ready: Callable[[int], int] | int):
    """Record one sample a second and decide every 2 s, as the serving shell does; return {t: Decision}."""
    decisions = {}
    for t in seconds:
        kpa.record(t, series(t))
        if t % 2 == 0:
            decisions[t] = kpa.decide(t, ready(t) if callable(ready) else ready)
    return decisions


def settings(**changes) -> ScalingSettings:
    # cc = 10 gives Knative's documented example: a target of 7 in-flight requests per instance.
    return dataclasses.replace(scaling_settings({}, container_concurrency=10), **changes)


def test_cluster_defaults_are_read_from_knatives_config_autoscaler():
    assert CLUSTER_DEFAULTS["stable-window"] == "60s"
    assert CLUSTER_DEFAULTS["scale-to-zero-grace-period"] == "30s"
    assert CLUSTER_DEFAULTS["container-concurrency-target-percentage"] == "70"
    default = scaling_settings({})
    assert (default.total_target, default.target_utilization, default.panic_window_s) == (100.0, 0.7, 6.0)
    assert (default.panic_threshold, default.max_scale_up_rate, default.max_scale_down_rate) == (2.0, 1000.0, 2.0)
    assert (default.initial_scale, default.min_scale, default.max_scale) == (1, 0, 0)


def test_target_is_container_concurrency_times_utilisation_and_capped_by_it():
    assert scaling_settings({}, container_concurrency=10).target_value == pytest.approx(7.0)
    assert scaling_settings({"target": "50"}, container_concurrency=10).target_value == pytest.approx(7.0)
    assert scaling_settings({"target": "4", "target-utilization-percentage": "50"}, 10).target_value == 2.0
    assert scaling_settings({"metric": "rps"}).target_value == pytest.approx(140.0)


def test_annotations_override_cluster_keys_and_overrides_override_defaults():
    cluster = parse_overrides(["stable-window=6s", "scale-to-zero-grace-period=2s"])
    s = scaling_settings({"min-scale": "1", "max-scale": "3", "scale-down-delay": "10s"}, cluster=cluster)
    assert (s.stable_window_s, s.panic_window_s, s.scale_to_zero_grace_s) == (6.0, 1.0, 2.0)
    assert (s.min_scale, s.max_scale, s.scale_down_delay_s) == (1, 3, 10.0)
    assert scaling_settings({"window": "20s"}, cluster=cluster).stable_window_s == 20.0


@pytest.mark.parametrize(
    ("annotations", "cluster", "named"),
    [
        ({"window": "2s"}, {}, "autoscaling.knative.dev/window"),
        ({"min-scale": "5", "max-scale": "2"}, {}, "min-scale"),
        ({"metric": "cpu"}, {}, "metric"),
        ({"class": "hpa.autoscaling.knative.dev"}, {}, "class"),
        ({"initial-scale": "0"}, {}, "initial-scale"),
        ({"target": "lots"}, {}, "target"),
        ({}, {"max-scale-down-rate": "1"}, "max-scale-down-rate"),
    ],
)
def test_invalid_settings_are_rejected_naming_the_key(annotations, cluster, named):
    with pytest.raises(ConfigError, match=named):
        scaling_settings(annotations, cluster=cluster)


def test_overrides_must_be_known_keys_with_values():
    with pytest.raises(ConfigError, match="unknown config-autoscaler key"):
        parse_overrides(["stable-windw=6s"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["stable-window"])


def test_go_durations_parse_to_seconds():
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("0") == 0.0
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("10 seconds")


def test_window_average_divides_by_observed_seconds_until_the_window_is_full():
    window = WindowAverage(10)
    window.record(0, 4.0)
    window.record(1, 2.0)
    assert window.average(1) == pytest.approx(3.0)
    for t in range(2, 20):
        window.record(t, 0.0)
    assert window.average(19) == 0.0
    assert WindowAverage(10).average(5) == 0.0


def test_steady_load_settles_on_stable_average_over_target():
    kpa = Kpa(settings())
    decisions = run(kpa, lambda t: 14.0, range(0, 120), ready=2)
    final = decisions[118]
    assert final.desired == 2
    assert not final.panicking
    assert final.stable_average == pytest.approx(14.0)


def test_burst_enters_panic_and_scales_on_the_panic_window():
    kpa = Kpa(settings())
    steady = run(kpa, lambda t: 5.0, range(0, 60), ready=1)
    assert not steady[58].panicking and steady[58].desired == 1
    burst = run(kpa, lambda t: 40.0, range(60, 64), ready=1)
    assert burst[62].panicking
    # The panic window (6 s) reacts long before the stable window (60 s) does.
    assert burst[62].desired > 1
    assert burst[62].desired >= burst[62].stable_average / 7


def test_panic_never_scales_down_and_ends_after_a_stable_window_below_threshold():
    kpa = Kpa(settings())
    run(kpa, lambda t: 0.0, range(0, 10), ready=1)
    peak = run(kpa, lambda t: 70.0, range(10, 20), ready=1)[18]
    assert peak.panicking and peak.desired == 10
    calm = run(kpa, lambda t: 0.0, range(20, 200), ready=lambda t: 10)
    in_panic = [d for t, d in calm.items() if d.panicking]
    assert in_panic and all(d.desired >= peak.desired for d in in_panic)
    assert not calm[198].panicking
    assert calm[198].desired < peak.desired


def test_scale_down_is_limited_by_max_scale_down_rate():
    kpa = Kpa(settings())
    decisions = run(kpa, lambda t: 0.0, range(0, 70), ready=8)
    assert decisions[68].desired == 4


def test_scale_up_is_limited_by_max_scale_up_rate():
    kpa = Kpa(settings(max_scale_up_rate=2.0))
    decisions = run(kpa, lambda t: 700.0, range(0, 4), ready=1)
    assert decisions[2].desired == 2


def test_scale_down_delay_holds_the_maximum_over_the_delay_window():
    kpa = Kpa(settings(stable_window_s=6.0, panic_window_s=1.0, scale_down_delay_s=10.0))
    run(kpa, lambda t: 21.0, range(0, 20), ready=3)
    after = run(kpa, lambda t: 0.0, range(20, 50), ready=3)
    assert after[28].desired == 3
    assert after[48].desired < 3


def test_activation_scale_raises_any_nonzero_count():
    kpa = Kpa(settings(activation_scale=3))
    assert run(kpa, lambda t: 1.0, range(0, 3), ready=0)[2].desired == 3


def test_idle_revision_scales_to_zero_only_after_the_grace_period():
    s = settings(stable_window_s=6.0, scale_to_zero_grace_s=4.0)
    pa = PodAutoscaler(s)
    assert pa.desired(0.0, 1, 0) == 1
    assert pa.desired(2.0, 1, 1) == 1
    # The decider says 0, but the revision has not been active for a stable window yet.
    assert pa.desired(4.0, 0, 1) == 1
    assert pa.desired(6.0, 0, 1) == 1
    assert pa.desired(8.0, 0, 1) == 1
    assert pa.desired(10.0, 0, 1) == 0
    assert pa.desired(12.0, 0, 0) == 0


def test_traffic_during_the_grace_period_cancels_scale_to_zero():
    pa = PodAutoscaler(settings(stable_window_s=6.0, scale_to_zero_grace_s=4.0))
    pa.desired(0.0, 1, 1)
    assert pa.desired(8.0, 0, 1) == 1
    assert pa.desired(10.0, 1, 1) == 1
    assert pa.desired(12.0, 0, 1) == 1
    assert pa.desired(16.0, 0, 1) == 0


def test_pod_retention_period_keeps_the_last_instance_longer_than_the_grace_period():
    pa = PodAutoscaler(settings(stable_window_s=6.0, scale_to_zero_grace_s=2.0, scale_to_zero_retention_s=10.0))
    pa.desired(0.0, 1, 1)
    assert pa.desired(8.0, 0, 1) == 1
    assert pa.desired(16.0, 0, 1) == 1
    assert pa.desired(18.0, 0, 1) == 0


def test_bounds_apply_min_max_and_initial_scale():
    pa = PodAutoscaler(settings(min_scale=1, max_scale=3, initial_scale=2))
    assert pa.desired(0.0, 0, 0) == 2
    assert pa.desired(2.0, 0, 1) == 2
    assert pa.desired(4.0, 0, 2) == 1
    assert pa.desired(6.0, 50, 2) == 3
    assert pa.desired(600.0, 0, 1) == 1


def test_scale_to_zero_disabled_keeps_one_instance():
    pa = PodAutoscaler(settings(enable_scale_to_zero=False, stable_window_s=6.0, scale_to_zero_grace_s=1.0))
    pa.desired(0.0, 1, 1)
    assert pa.desired(100.0, 0, 1) == 1

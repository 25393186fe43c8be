"""The drift schedule as multipliers over time, and the realised timeline written to ground truth."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from functions.generator.config import DriftChange, GeneratorConfig

SECONDS_PER_DAY = 86_400


def amount_scale(config: GeneratorConfig, day: np.ndarray) -> np.ndarray:
    """Multiplier of every customer's amount distribution at fractional ``day``."""
    scale = np.ones_like(np.asarray(day, np.float64))
    for change in config.drift:
        if change.kind == "amount_scale":
            scale = scale * (1.0 + (change.factor - 1.0) * change.weight(day))
    return scale


def pattern_multiplier(config: GeneratorConfig, pattern: str, day: np.ndarray) -> np.ndarray:
    """Multiplier of ``pattern``'s daily rate at ``day``: 0 before a ``pattern_on``, x factor in a ``pattern_rate``."""
    mult = np.ones_like(np.asarray(day, np.float64))
    for change in config.drift:
        if change.pattern != pattern:
            continue
        if change.kind == "pattern_on":
            mult = mult * change.weight(day)
        elif change.kind == "pattern_rate":
            mult = mult * (1.0 + (change.factor - 1.0) * change.weight(day))
    return mult


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def realised_timeline(config: GeneratorConfig, start_s: float, instance_days: dict[str, np.ndarray],
                      customers_active: int) -> list[dict[str, Any]]:
    """What changed when, and what it touched, so drift detectors can be scored on delay and false alarms.

    ``instance_days`` holds each pattern's realised instance start days.
    """
    out = []
    for change in config.drift:
        effect_day = change.start_day + change.ramp_days
        end_day = change.end_day if change.end_day is not None else config.days
        entry: dict[str, Any] = {
            "kind": change.kind,
            "drift_type": _DRIFT_TYPE[change.kind],
            "start_day": change.start_day,
            "full_effect_day": effect_day,
            "end_day": change.end_day,
            "start_time": _iso(start_s + change.start_day * SECONDS_PER_DAY),
            "full_effect_time": _iso(start_s + effect_day * SECONDS_PER_DAY),
            "end_time": None if change.end_day is None else _iso(start_s + change.end_day * SECONDS_PER_DAY),
            "factor": change.factor,
        }
        if change.kind == "amount_scale":
            entry["affected"] = {"customers": customers_active}
        else:
            days = instance_days.get(change.pattern, np.empty(0))
            inside = (days >= change.start_day) & (days < end_day)
            entry["pattern"] = change.pattern
            entry["affected"] = {"instances_in_window": int(inside.sum()), "instances_before": int(
                (days < change.start_day).sum())}
        out.append(entry)
    return out


_DRIFT_TYPE = {"amount_scale": "covariate shift", "pattern_on": "concept drift", "pattern_rate": "prior shift"}


def describe(change: DriftChange) -> str:
    if change.kind == "amount_scale":
        return f"amounts x{change.factor:g} from day {change.start_day:g} over {change.ramp_days:g} days"
    if change.kind == "pattern_on":
        return f"{change.pattern} switches on at day {change.start_day:g}"
    until = f" until day {change.end_day:g}" if change.end_day is not None else ""
    return f"{change.pattern} rate x{change.factor:g} from day {change.start_day:g}{until}"

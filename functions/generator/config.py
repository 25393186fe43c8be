"""What a synthetic stream is made of: sizes, per-pattern daily rates, the drift schedule and label delays.

Everything the generator does follows from one frozen ``GeneratorConfig`` and its seed, so a config plus a seed
names a stream exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any

# Primary scenario of each fraud; index = the code used inside the generator, "" = genuine.
SCENARIOS = ("", "S1", "S2", "S3", "card_testing", "burst", "geo_jump", "point_of_compromise")
SCENARIO_CODE = {name: code for code, name in enumerate(SCENARIOS)}
# Patterns whose daily rate the drift schedule may change (S1 is a rule, it has no rate).
PATTERNS = ("S2", "S3", "card_testing", "burst", "geo_jump", "point_of_compromise", "travel")
DRIFT_KINDS = ("amount_scale", "pattern_on", "pattern_rate")


class GeneratorConfigError(ValueError):
    """A generator setting that cannot produce a stream; the message names the setting."""


@dataclass(frozen=True)
class PatternRates:
    """Expected new instances per day of each process (before drift multipliers).

    S2 and S3 follow the handbook: a fixed number of terminals / customers compromised each day (a fractional rate
    adds one more with that probability). The others are Poisson processes.
    """

    s2_terminals: float = 2.0
    s3_customers: float = 3.0
    card_testing: float = 2.0
    burst: float = 2.0
    geo_jump: float = 2.0
    point_of_compromise: float = 2.0
    travel: float = 6.0  # legitimate trips far from home: genuine, so location alone is no shortcut

    def rate(self, pattern: str) -> float:
        return {
            "S2": self.s2_terminals, "S3": self.s3_customers, "card_testing": self.card_testing,
            "burst": self.burst, "geo_jump": self.geo_jump, "point_of_compromise": self.point_of_compromise,
            "travel": self.travel,
        }[pattern]


@dataclass(frozen=True)
class DriftChange:
    """One scheduled regime change.

    kinds:
      * ``amount_scale``: every customer's mean and sd of amount x ``factor`` (covariate shift);
      * ``pattern_on``: ``pattern`` has rate 0 before ``start_day`` and its configured rate after (concept drift);
      * ``pattern_rate``: ``pattern``'s rate x ``factor`` (prior shift).
    The change ramps linearly over ``ramp_days`` (0 = abrupt) and reverts at ``end_day`` when given.
    """

    kind: str
    start_day: float
    ramp_days: float = 0.0
    factor: float = 1.0
    pattern: str = ""
    end_day: float | None = None

    def weight(self, day: Any) -> Any:
        """How far the change has taken effect at fractional ``day`` (0..1); numpy arrays work too."""
        import numpy as np

        day = np.asarray(day, dtype=np.float64)
        if self.ramp_days > 0:
            w = np.clip((day - self.start_day) / self.ramp_days, 0.0, 1.0)
        else:
            w = (day >= self.start_day).astype(np.float64)
        if self.end_day is not None:
            w = np.where(day >= self.end_day, 0.0, w)
        return w


@dataclass(frozen=True)
class LabelDelay:
    """When labels become known.

    Fraud: a chargeback after a log-normal delay (median ``fraud_median_days``, shape ``fraud_sigma``); reports later
    than ``max_days`` (the card networks' chargeback window) are lost, and ``never_reported`` of fraud transactions
    are never reported on their own. The first report on a card confirms all its fraud so far (back-fill).
    Genuine: confirmed by ``genuine_maturity_days`` passing without a chargeback.
    """

    fraud_median_days: float = 8.0
    fraud_sigma: float = 0.9
    max_days: float = 120.0
    never_reported: float = 0.07
    genuine_maturity_days: float = 30.0
    replacement_min_days: float = 1.0  # a blocked card's replacement arrives after this ..
    replacement_max_days: float = 4.0  # .. to this many days; the customer cannot pay by that card meanwhile


@dataclass(frozen=True)
class GeneratorConfig:
    customers: int = 3_500
    terminals: int = 10_000
    days: int = 150
    start_date: str = "2018-04-01"
    radius: float = 5.0  # grid units; a customer uses only terminals this close to home
    seed: int = 7
    second_card_probability: float = 0.3
    rates: PatternRates = field(default_factory=PatternRates)
    drift: tuple[DriftChange, ...] = ()
    labels: LabelDelay = field(default_factory=LabelDelay)
    s1_threshold: float = 220.0
    s2_days: int = 28
    s3_days: int = 14
    s3_share: float = 1 / 3
    s3_factor: float = 5.0
    weekend_factor: float = 1.1  # recurring seasonality: more spending on Saturdays and Sundays
    currency: str = "EUR"  # one currency for every amount, so the S1 threshold means the same everywhere

    def __post_init__(self) -> None:
        for name in ("customers", "terminals", "days"):
            if getattr(self, name) < 1:
                raise GeneratorConfigError(f"'{name}' must be at least 1, got {getattr(self, name)}")
        if self.radius <= 0:
            raise GeneratorConfigError(f"'radius' must be positive, got {self.radius}")
        try:
            date.fromisoformat(self.start_date)
        except ValueError:
            raise GeneratorConfigError(f"'start_date' must be YYYY-MM-DD, got {self.start_date!r}") from None
        for change in self.drift:
            if change.kind not in DRIFT_KINDS:
                raise GeneratorConfigError(f"drift kind must be one of {', '.join(DRIFT_KINDS)}, got {change.kind!r}")
            if change.kind != "amount_scale" and change.pattern not in PATTERNS:
                raise GeneratorConfigError(
                    f"drift '{change.kind}' needs a pattern among {', '.join(PATTERNS)}, got {change.pattern!r}"
                )
        if not 0 <= self.labels.never_reported <= 1:
            raise GeneratorConfigError("'labels.never_reported' must be a probability")

    @property
    def digest(self) -> str:
        """Short fingerprint of the whole config: event ids carry it, so streams of different configs never share
        ids (the scorer deduplicates on ids)."""
        return hashlib.blake2s(repr(self).encode(), digest_size=4).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_seed(self, seed: int) -> GeneratorConfig:
        return replace(self, seed=seed)

    @classmethod
    def preset(cls, name: str, seed: int = 7) -> GeneratorConfig:
        """``tiny`` (~5k transactions, unit tests), ``quick`` (~200k over 90 days), ``default`` (~1M over 150 days)."""
        try:
            customers, terminals, days, radius = PRESET_SIZES[name]
        except KeyError:
            raise GeneratorConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_SIZES)}") from None
        return cls(
            customers=customers, terminals=terminals, days=days, radius=radius, seed=seed,
            rates=TINY_RATES if name == "tiny" else scaled_rates(customers, terminals),
            drift=default_drift(days),
        )


# customers, terminals, days, radius. Radius keeps ~80 reachable terminals per customer (pi r^2 terminals / 1e4).
PRESET_SIZES: dict[str, tuple[int, int, int, float]] = {
    "tiny": (60, 400, 40, 15.0),
    "quick": (1_200, 4_000, 90, 8.0),
    "default": (3_500, 10_000, 150, 5.0),
}


def scaled_rates(customers: int, terminals: int) -> PatternRates:
    """Rates that keep each pattern's share of transactions at the handbook's reference scale (5,000 customers,
    10,000 terminals) whatever the size; the sequence patterns add roughly as much fraud again as S1-S3."""
    per_customer = customers / 5_000
    return PatternRates(
        s2_terminals=2.0 * terminals / 10_000,
        s3_customers=3.0 * per_customer,
        card_testing=3.0 * per_customer,
        burst=3.0 * per_customer,
        geo_jump=3.0 * per_customer,
        point_of_compromise=8.0 * per_customer,
        travel=8.0 * per_customer,
    )


# A few dozen customers over 40 days: rates high enough that every scenario and pattern shows up.
TINY_RATES = PatternRates(s2_terminals=0.5, s3_customers=0.3, card_testing=0.4, burst=0.3, geo_jump=0.3,
                          point_of_compromise=0.6, travel=0.5)


def default_drift(days: int) -> tuple[DriftChange, ...]:
    """Card testing switches on after the first ~30 % of days (a new pattern), amounts inflate by 20 % over two
    weeks from mid-stream, and bursts triple for two weeks near the end (a fraud-rate spike)."""
    ramp = max(1.0, min(14.0, days / 10))
    spike = round(days * 0.75)
    return (
        DriftChange("pattern_on", start_day=round(days * 0.3), pattern="card_testing"),
        DriftChange("amount_scale", start_day=round(days * 0.55), ramp_days=ramp, factor=1.2),
        DriftChange("pattern_rate", start_day=spike, factor=3.0, pattern="burst", end_day=spike + ramp),
    )

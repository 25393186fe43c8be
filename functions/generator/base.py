"""The handbook's base layer (daily Poisson activity, S1, S2, S3) plus legitimate travel.

Each function takes its own random generator, so one process's draws never shift another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from functions.generator.config import SCENARIO_CODE, GeneratorConfig
from functions.generator.drift import SECONDS_PER_DAY, amount_scale, pattern_multiplier
from functions.generator.rows import Rows
from functions.generator.world import World

NOON_S = 43_200.0
TIME_OF_DAY_SD_S = 20_000.0
FAR_DISTANCE = 35.0  # grid units: beyond any customer's radius and, mostly, in another country


def day_activity_factor(config: GeneratorConfig) -> np.ndarray:
    """Weekly seasonality: Saturdays and Sundays spend ``weekend_factor`` x the weekday rate."""
    first = date.fromisoformat(config.start_date).weekday()
    weekday = (first + np.arange(config.days)) % 7
    return np.where(weekday >= 5, config.weekend_factor, 1.0)


def base_transactions(config: GeneratorConfig, world: World, rng: np.random.Generator) -> Rows:
    n_customers = world.customers
    rate = world.tx_per_day * world.active
    counts = rng.poisson(day_activity_factor(config)[:, None] * rate[None, :])
    cell = np.repeat(np.arange(counts.size), counts.ravel())
    day, customer = cell // n_customers, cell % n_customers
    time_of_day = rng.normal(NOON_S, TIME_OF_DAY_SD_S, len(cell))
    # As in the handbook, draws outside the day are discarded, not redrawn.
    inside = (time_of_day >= 0) & (time_of_day < SECONDS_PER_DAY)
    day, customer, time_of_day = day[inside], customer[inside], time_of_day[inside]
    t = day * SECONDS_PER_DAY + time_of_day.astype(np.int64)
    n = len(t)

    mean = world.mean_amount[customer] * amount_scale(config, t / SECONDS_PER_DAY)
    amount = rng.normal(mean, mean / 2)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    terminal = world.choose_terminal(customer, rng.random(n))
    second_card = (world.n_cards[customer] == 2) & (rng.random(n) < 0.35)
    return Rows.build(
        t=t, customer=customer, slot=world.first_slot[customer] + second_card, terminal=terminal,
        amount=np.round(amount, 2),
    )


@dataclass(frozen=True)
class Trip:
    customer: int
    start: int
    end: int
    x: float
    y: float


def far_point(world: World, x: float, y: float, rng: np.random.Generator, radius: float,
              min_terminals: int = 3, channel_filter: bool = False) -> tuple[float, float, np.ndarray] | None:
    """A random grid point at least ``FAR_DISTANCE`` from (x, y) with terminals around it, or None."""
    for _ in range(20):
        px, py = rng.uniform(0, 100, 2)
        if (px - x) ** 2 + (py - y) ** 2 < FAR_DISTANCE**2:
            continue
        near = world.terminals_near(px, py, radius)
        if channel_filter:
            near = near[world.term_channel[near] != "online"]
        if len(near) >= min_terminals:
            return float(px), float(py), near
    return None


def apply_travel(config: GeneratorConfig, world: World, rows: Rows, rng: np.random.Generator) -> list[Trip]:
    """Genuine trips: for 2-8 days a customer's own transactions move to terminals around a distant point, with
    the customer's usual categories. Location alone must not give fraud away."""
    active = np.flatnonzero(world.active)
    by_customer = np.argsort(rows.customer, kind="stable")
    bounds = np.searchsorted(rows.customer[by_customer], np.arange(world.customers + 1))
    per_day = rng.poisson(config.rates.travel * pattern_multiplier(config, "travel", np.arange(config.days)))
    trips = []
    for day, count in enumerate(per_day):
        for customer in rng.choice(active, size=count) if len(active) else ():
            start = int(day * SECONDS_PER_DAY + rng.integers(SECONDS_PER_DAY))
            end = start + int(rng.uniform(2, 8) * SECONDS_PER_DAY)
            place = far_point(world, world.home_x[customer], world.home_y[customer], rng, config.radius * 1.5, 5)
            if place is None:
                continue
            x, y, near = place
            mine = by_customer[bounds[customer]:bounds[customer + 1]]
            mine = mine[(rows.t[mine] >= start) & (rows.t[mine] < end)]
            weight = world.preference[customer, world.term_category[near]] + 1e-3
            rows.terminal[mine] = rng.choice(near, size=len(mine), p=weight / weight.sum())
            rows.traveling[mine] = True
            trips.append(Trip(int(customer), start, end, x, y))
    return trips


def mark_s1(config: GeneratorConfig, rows: Rows) -> None:
    """S1 is a rule on the original amount; it comes first in precedence."""
    hit = (rows.scenario == 0) & (rows.original_amount > config.s1_threshold) & ~rows.injected
    rows.scenario[hit] = SCENARIO_CODE["S1"]
    rows.instance[hit] = np.flatnonzero(hit)
    rows.compromise[hit] = rows.t[hit]


def _daily_count(rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The handbook draws a fixed number per day; a fractional rate adds one more with that probability."""
    whole = np.floor(rate)
    return (whole + (rng.random(len(rate)) < rate - whole)).astype(np.int64)


def mark_s2(config: GeneratorConfig, world: World, rows: Rows, rng: np.random.Generator) -> np.ndarray:
    """Compromised terminals: each day a few terminals are drawn; every genuine transaction at them in the next
    ``s2_days`` days is fraud. Returns the compromise start days (one per instance)."""
    days = np.arange(config.days)
    counts = _daily_count(config.rates.s2_terminals * pattern_multiplier(config, "S2", days), rng)
    by_terminal = np.argsort(rows.terminal, kind="stable")
    bounds = np.searchsorted(rows.terminal[by_terminal], np.arange(config.terminals + 1))
    starts = []
    for day, count in enumerate(counts):
        for terminal in rng.choice(config.terminals, size=min(count, config.terminals), replace=False):
            lo, hi = day * SECONDS_PER_DAY, (day + config.s2_days) * SECONDS_PER_DAY
            at = by_terminal[bounds[terminal]:bounds[terminal + 1]]
            at = at[(rows.t[at] >= lo) & (rows.t[at] < hi) & (rows.scenario[at] == 0)]
            rows.scenario[at] = SCENARIO_CODE["S2"]
            rows.instance[at] = len(starts)
            rows.compromise[at] = lo
            starts.append(day)
    return np.asarray(starts, np.float64)


def mark_s3(config: GeneratorConfig, world: World, rows: Rows, rng: np.random.Generator) -> np.ndarray:
    """Compromised customers: each day a few customers are drawn; over the next ``s3_days`` days a share of their
    still-genuine transactions is inflated x ``s3_factor`` and is fraud. Returns the compromise start days."""
    days = np.arange(config.days)
    counts = _daily_count(config.rates.s3_customers * pattern_multiplier(config, "S3", days), rng)
    active = np.flatnonzero(world.active)
    by_customer = np.argsort(rows.customer, kind="stable")
    bounds = np.searchsorted(rows.customer[by_customer], np.arange(world.customers + 1))
    starts = []
    for day, count in enumerate(counts):
        for customer in rng.choice(active, size=min(count, len(active)), replace=False):
            lo, hi = day * SECONDS_PER_DAY, (day + config.s3_days) * SECONDS_PER_DAY
            mine = by_customer[bounds[customer]:bounds[customer + 1]]
            mine = mine[(rows.t[mine] >= lo) & (rows.t[mine] < hi) & (rows.scenario[mine] == 0)]
            mine = mine[rng.random(len(mine)) < config.s3_share]
            rows.amount[mine] = np.round(rows.original_amount[mine] * config.s3_factor, 2)
            rows.scenario[mine] = SCENARIO_CODE["S3"]
            rows.instance[mine] = len(starts)
            rows.compromise[mine] = lo
            rows.card_bound[mine] = True
            starts.append(day)
    return np.asarray(starts, np.float64)

"""Fraud that only a sequence reveals. Every event looks plausible on its own (amounts inside the card's range and
below the S1 threshold, ordinary times); the signal is its relation to the card's and the merchants' history.

Each pattern is an independent Poisson process with its own generator and daily rate (times the drift multiplier).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from functions.generator.base import far_point
from functions.generator.config import SCENARIO_CODE, GeneratorConfig
from functions.generator.drift import SECONDS_PER_DAY, amount_scale, pattern_multiplier
from functions.generator.rows import Rows
from functions.generator.world import World


@dataclass
class _Instance:
    """One attack: its events on one card."""

    slot: int
    times: np.ndarray
    terminals: np.ndarray
    amounts: np.ndarray
    compromise: float


@dataclass(frozen=True)
class Context:
    config: GeneratorConfig
    world: World
    active_slots: np.ndarray
    online_terminals: np.ndarray

    @classmethod
    def of(cls, config: GeneratorConfig, world: World) -> Context:
        active_slots = np.flatnonzero(world.active[world.slot_customer])
        return cls(config, world, active_slots, np.flatnonzero(world.term_channel == "online"))

    def customer_amounts(self, customer: int, t: float, size: int, rng: np.random.Generator) -> np.ndarray:
        """The customer's own amount distribution, kept below the S1 threshold so the amount rule never fires."""
        mean = self.world.mean_amount[customer] * float(amount_scale(self.config, t / SECONDS_PER_DAY))
        amount = np.abs(rng.normal(mean, mean / 2, size))
        return self.below_threshold(amount, rng)

    def below_threshold(self, amount: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cap = self.config.s1_threshold
        over = amount >= cap
        amount = amount.copy()
        amount[over] = cap * rng.uniform(0.85, 0.99, int(over.sum()))
        return np.maximum(np.round(amount, 2), 0.01)

    def unused_terminals(self, customer: int, size: int, rng: np.random.Generator,
                         pool: np.ndarray | None = None) -> np.ndarray:
        """Terminals outside the customer's reach: ones the card has never used."""
        pool = np.arange(self.config.terminals) if pool is None else pool
        w = self.world
        far = (w.term_x[pool] - w.home_x[customer]) ** 2 + (w.term_y[pool] - w.home_y[customer]) ** 2
        candidates = pool[far > self.config.radius**2]
        return rng.choice(candidates if len(candidates) else pool, size=size)


def _daily_starts(ctx: Context, pattern: str, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Start times (seconds) of the pattern's instances: Poisson per day, uniform within the day."""
    per_day = rng.poisson(rate * pattern_multiplier(ctx.config, pattern, np.arange(ctx.config.days)))
    day = np.repeat(np.arange(ctx.config.days), per_day)
    return day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, len(day))


def card_testing(ctx: Context, start: int, rng: np.random.Generator) -> _Instance:
    """Probes of 0.50-2.00 at 1-3 online merchants within minutes, then after a gap 1-2 purchases near the top of
    the card's range, below the S1 threshold."""
    slot = int(rng.choice(ctx.active_slots))
    customer = int(ctx.world.slot_customer[slot])
    probes = int(rng.integers(3, 9))
    probe_times = start + np.cumsum(rng.exponential(60.0, probes))
    probe_merchants = ctx.unused_terminals(customer, int(rng.integers(1, 4)), rng, ctx.online_terminals)
    gap = float(np.clip(rng.exponential(2 * 3600.0), 600.0, 12 * 3600.0))
    cashouts = int(rng.integers(1, 3))
    cash_times = probe_times[-1] + gap + np.cumsum(rng.exponential(300.0, cashouts))
    mean = ctx.world.mean_amount[customer] * float(amount_scale(ctx.config, start / SECONDS_PER_DAY))
    top = mean + rng.uniform(1.0, 2.0, cashouts) * mean / 2
    return _Instance(
        slot=slot,
        times=np.concatenate([probe_times, cash_times]),
        terminals=np.concatenate([rng.choice(probe_merchants, probes),
                                  ctx.unused_terminals(customer, cashouts, rng, ctx.online_terminals)]),
        amounts=np.concatenate([np.round(rng.uniform(0.5, 2.0, probes), 2), ctx.below_threshold(top, rng)]),
        compromise=float(start),
    )


def burst(ctx: Context, start: int, rng: np.random.Generator) -> _Instance:
    """3-15 transactions minutes apart at merchants the card has never used, with the card's usual amounts."""
    slot = int(rng.choice(ctx.active_slots))
    customer = int(ctx.world.slot_customer[slot])
    k = int(rng.integers(3, 16))
    return _Instance(
        slot=slot,
        times=start + np.cumsum(rng.exponential(240.0, k)),
        terminals=ctx.unused_terminals(customer, k, rng),
        amounts=ctx.customer_amounts(customer, start, k, rng),
        compromise=float(start),
    )


def geo_jump(ctx: Context, start: int, rng: np.random.Generator) -> _Instance | None:
    """A cloned card used in person far from home, in categories the customer does not buy, while the real card
    keeps being used at home: impossible travel plus a category change."""
    slot = int(rng.choice(ctx.active_slots))
    customer = int(ctx.world.slot_customer[slot])
    w = ctx.world
    place = far_point(w, w.home_x[customer], w.home_y[customer], rng, ctx.config.radius * 2, 3, channel_filter=True)
    if place is None:
        return None
    _, _, near = place
    preference = w.preference[customer, w.term_category[near]]
    unusual = near[preference <= np.quantile(preference, 0.5)]
    k = int(rng.integers(2, 7))
    return _Instance(
        slot=slot,
        times=start + np.cumsum(rng.exponential(20 * 60.0, k)),
        terminals=rng.choice(unusual, size=k),
        amounts=ctx.customer_amounts(customer, start, k, rng),
        compromise=float(start),
    )


_INJECTED: dict[str, Callable[[Context, int, np.random.Generator], _Instance | None]] = {
    "card_testing": card_testing, "burst": burst, "geo_jump": geo_jump,
}


def _to_rows(ctx: Context, pattern: str, instances: list[_Instance]) -> Rows:
    if not instances:
        return Rows.build(t=np.empty(0), customer=np.empty(0), slot=np.empty(0), terminal=np.empty(0),
                          amount=np.empty(0))
    sizes = [len(i.times) for i in instances]
    slot = np.repeat([i.slot for i in instances], sizes)
    n = len(slot)
    return Rows.build(
        t=np.concatenate([i.times for i in instances]).astype(np.int64), customer=ctx.world.slot_customer[slot],
        slot=slot, terminal=np.concatenate([i.terminals for i in instances]),
        amount=np.concatenate([i.amounts for i in instances]),
        scenario=np.full(n, SCENARIO_CODE[pattern]), instance=np.repeat(np.arange(len(instances)), sizes),
        compromise=np.repeat([i.compromise for i in instances], sizes),
        injected=np.ones(n, bool), card_bound=np.ones(n, bool),
    )


def injected_pattern(ctx: Context, pattern: str, rng: np.random.Generator) -> tuple[Rows, np.ndarray]:
    """Card testing, burst or geo jump: their events, and each instance's start day."""
    rate = ctx.config.rates.rate(pattern)
    made = [_INJECTED[pattern](ctx, int(s), rng) for s in _daily_starts(ctx, pattern, rate, rng)]
    instances = [i for i in made if i is not None]
    return _to_rows(ctx, pattern, instances), np.array([i.compromise / SECONDS_PER_DAY for i in instances])


def point_of_compromise(ctx: Context, rows: Rows, rng: np.random.Generator) -> tuple[Rows, np.ndarray]:
    """Cards skimmed at an S2 terminal are later used card-not-present at other merchants, 2-21 days on.

    Linking the two needs the card's past merchants and those merchants' later fraud.
    """
    exposed = np.flatnonzero(rows.scenario == SCENARIO_CODE["S2"])
    exposed = exposed[np.argsort(rows.t[exposed], kind="stable")]
    exposure_t, exposure_slot = rows.t[exposed], rows.slot[exposed]
    instances = []
    used: set[int] = set()  # one cash-out per skimmed card
    for start in _daily_starts(ctx, "point_of_compromise", ctx.config.rates.point_of_compromise, rng):
        lo, hi = np.searchsorted(exposure_t, [start - 21 * SECONDS_PER_DAY, start - 2 * SECONDS_PER_DAY])
        candidates = [(int(s), int(t)) for s, t in zip(exposure_slot[lo:hi], exposure_t[lo:hi], strict=True)
                      if int(s) not in used]
        if not candidates:
            continue
        slot, skimmed_at = candidates[int(rng.integers(len(candidates)))]
        used.add(slot)
        customer = int(ctx.world.slot_customer[slot])
        k = int(rng.integers(1, 4))
        instances.append(_Instance(
            slot=slot,
            times=start + np.cumsum(rng.exponential(30 * 60.0, k)),
            terminals=ctx.unused_terminals(customer, k, rng, ctx.online_terminals),
            amounts=ctx.customer_amounts(customer, start, k, rng),
            compromise=float(skimmed_at),
        ))
    return (_to_rows(ctx, "point_of_compromise", instances),
            np.array([i.times[0] / SECONDS_PER_DAY for i in instances]))

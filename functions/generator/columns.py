"""The whole stream as columns: ``generate_columns(config)`` runs every component and sorts the result.

Random streams: one ``SeedSequence`` per config seed, spawned into one child per component in a fixed order, so
switching a pattern on or off never moves another component's draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from functions.generator import base, lifecycle, patterns
from functions.generator.config import SCENARIOS, GeneratorConfig
from functions.generator.drift import SECONDS_PER_DAY, realised_timeline
from functions.generator.rows import Rows
from functions.generator.world import COUNTRIES, World, build_world

COMPONENTS = ("profiles", "terminals", "daily", "travel", "S2", "S3", "card_testing", "burst", "geo_jump",
              "point_of_compromise", "label_delay", "replacement")


@dataclass(frozen=True)
class TransactionColumns:
    """The whole stream, time-ordered (ties by event id), as numpy arrays of equal length."""

    event_id: np.ndarray  # str
    time_s: np.ndarray  # float64 Unix seconds (UTC)
    card_id: np.ndarray
    merchant_id: np.ndarray
    amount: np.ndarray  # float64, cents
    currency: np.ndarray
    mcc: np.ndarray  # int64
    channel: np.ndarray  # "pos" | "online" | "atm"
    country: np.ndarray  # ISO 3166 alpha-2 of the merchant
    is_fraud: np.ndarray  # bool
    scenario: np.ndarray  # "" for genuine, else the primary scenario (see config.SCENARIOS)
    label_available_s: np.ndarray  # float64 Unix seconds; inf if never
    customer_id: np.ndarray
    instance_id: np.ndarray = field(default=None)  # type: ignore[assignment]  # "burst-12"; "" for genuine
    compromise_s: np.ndarray = field(default=None)  # type: ignore[assignment]  # float64; nan for genuine
    merchant_x: np.ndarray = field(default=None)  # type: ignore[assignment]  # grid location of the merchant
    merchant_y: np.ndarray = field(default=None)  # type: ignore[assignment]
    traveling: np.ndarray = field(default=None)  # type: ignore[assignment]  # bool: customer on a genuine trip

    def __post_init__(self) -> None:
        n = len(self.event_id)
        defaults = {"instance_id": np.full(n, "", object), "compromise_s": np.full(n, np.nan),
                    "merchant_x": np.full(n, np.nan), "merchant_y": np.full(n, np.nan),
                    "traveling": np.zeros(n, bool)}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.event_id)

    def time_text(self, i: int) -> str:
        return datetime.fromtimestamp(float(self.time_s[i]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def data(self, i: int) -> dict[str, Any]:
        """The contract's transaction data for row ``i``: nothing else goes into an event."""
        return {
            "card_id": str(self.card_id[i]), "merchant_id": str(self.merchant_id[i]),
            "amount": float(self.amount[i]), "currency": str(self.currency[i]), "mcc": int(self.mcc[i]),
            "channel": str(self.channel[i]), "country": str(self.country[i]),
        }

    def transaction(self, i: int) -> tuple[str, str, dict[str, Any]]:
        """(event id, RFC 3339 time, contract data) of row ``i``."""
        return str(self.event_id[i]), self.time_text(i), self.data(i)


@dataclass(frozen=True)
class GroundTruthMeta:
    config: dict[str, Any]
    digest: str
    start_s: float
    end_s: float  # labels later than this are not in the stream
    counts: dict[str, int]  # transactions per primary scenario ("genuine" for "")
    fraud_rate: float
    drift: list[dict[str, Any]]  # the realised drift timeline
    blocked_cards: list[dict[str, Any]]  # card_id, replacement_id, blocked_at, replaced_at
    trips: int  # legitimate travel episodes
    fraud_never_labelled: int

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def card_name(customer: np.ndarray, slot_in_customer: np.ndarray, generation: np.ndarray) -> list[str]:
    return [f"card-{c:06d}-{k + 1}" + (f"-r{g}" if g else "")
            for c, k, g in zip(customer.tolist(), slot_in_customer.tolist(), generation.tolist(), strict=True)]


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_streams(config: GeneratorConfig) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(config.seed).spawn(len(COMPONENTS))
    return {name: np.random.default_rng(child) for name, child in zip(COMPONENTS, children, strict=True)}


def population(config: GeneratorConfig) -> World:
    """The customers and terminals that ``generate_columns(config)`` uses (for checks against their rates)."""
    rng = random_streams(config)
    return build_world(config, rng["profiles"], rng["terminals"])


def generate_columns(config: GeneratorConfig) -> tuple[TransactionColumns, GroundTruthMeta]:
    """Generate the whole stream for ``config``: the same config always gives the same columns."""
    rng = random_streams(config)
    world = build_world(config, rng["profiles"], rng["terminals"])
    rows = base.base_transactions(config, world, rng["daily"])
    trips = base.apply_travel(config, world, rows, rng["travel"])
    base.mark_s1(config, rows)
    instance_days = {"S2": base.mark_s2(config, world, rows, rng["S2"]),
                     "S3": base.mark_s3(config, world, rows, rng["S3"])}
    ctx = patterns.Context.of(config, world)
    parts = [rows]
    for name in ("card_testing", "burst", "geo_jump"):
        part, instance_days[name] = patterns.injected_pattern(ctx, name, rng[name])
        parts.append(part)
    part, instance_days["point_of_compromise"] = patterns.point_of_compromise(ctx, rows, rng["point_of_compromise"])
    parts.append(part)
    rows = Rows.concat(parts)
    rows = rows.take(np.flatnonzero(rows.t < config.days * SECONDS_PER_DAY))

    report = lifecycle.own_report_times(config, rows, rng["label_delay"])
    life = lifecycle.resolve(config, rows, report, rng["replacement"])
    kept = np.flatnonzero(life.keep)
    order = kept[np.lexsort((kept, rows.t[kept]))]  # time, then generation order: event ids follow this order
    columns = _assemble(config, world, rows.take(order), life.generation[order], life.label_at[order])
    meta = _meta(config, world, columns, instance_days, life.blocks, len(trips))
    return columns, meta


def _assemble(config: GeneratorConfig, world: Any, rows: Rows, generation: np.ndarray,
              label_at: np.ndarray) -> TransactionColumns:
    start_s = datetime.combine(date.fromisoformat(config.start_date), datetime.min.time(), UTC).timestamp()
    n = len(rows)
    merchant_names = np.array([f"merchant-{m:05d}" for m in range(config.terminals)], object)
    scenario_names = np.array(SCENARIOS, object)
    slot_in_customer = rows.slot - world.first_slot[rows.customer]
    scenario = scenario_names[rows.scenario]
    is_fraud = rows.scenario > 0
    instance = np.full(n, "", object)
    fraud_rows = np.flatnonzero(is_fraud)
    instance[fraud_rows] = [f"{s}-{i}" for s, i in zip(scenario[fraud_rows], rows.instance[fraud_rows].tolist(),
                                                         strict=True)]
    countries = np.array(COUNTRIES, object)
    prefix = f"tx-{config.digest}-"
    return TransactionColumns(
        event_id=np.array([f"{prefix}{i:08d}" for i in range(n)], object),
        time_s=start_s + rows.t.astype(np.float64),
        card_id=np.array(card_name(rows.customer, slot_in_customer, generation), object),
        merchant_id=merchant_names[rows.terminal],
        amount=rows.amount,
        currency=np.full(n, config.currency, object),
        mcc=world.term_mcc[rows.terminal].astype(np.int64),
        channel=world.term_channel[rows.terminal],
        country=countries[world.term_country[rows.terminal]],
        is_fraud=is_fraud,
        scenario=scenario,
        label_available_s=start_s + label_at,
        customer_id=np.array([f"customer-{c:06d}" for c in rows.customer.tolist()], object),
        instance_id=instance,
        compromise_s=start_s + rows.compromise,
        merchant_x=world.term_x[rows.terminal],
        merchant_y=world.term_y[rows.terminal],
        traveling=rows.traveling.copy(),
    )


def _meta(config: GeneratorConfig, world: Any, columns: TransactionColumns, instance_days: dict[str, np.ndarray],
          blocks: list[lifecycle.Block], trips: int) -> GroundTruthMeta:
    start_s = datetime.combine(date.fromisoformat(config.start_date), datetime.min.time(), UTC).timestamp()
    names, counts = np.unique(columns.scenario.astype(str), return_counts=True)
    blocked = []
    for b in sorted(blocks, key=lambda b: (b.blocked_at, b.slot)):
        customer = int(world.slot_customer[b.slot])
        k = np.array([b.slot - int(world.first_slot[customer])])
        old, new = card_name(np.array([customer]), k, np.array([b.generation]))[0], card_name(
            np.array([customer]), k, np.array([b.generation + 1]))[0]
        blocked.append({"card_id": old, "replacement_id": new, "customer_id": f"customer-{customer:06d}",
                        "blocked_at": _iso(start_s + b.blocked_at), "replaced_at": _iso(start_s + b.replaced_at)})
    fraud = columns.is_fraud
    return GroundTruthMeta(
        config=config.to_dict(),
        digest=config.digest,
        start_s=start_s,
        end_s=start_s + config.days * SECONDS_PER_DAY,
        counts={(str(name) or "genuine"): int(c) for name, c in zip(names, counts, strict=True)},
        fraud_rate=float(fraud.mean()) if len(fraud) else 0.0,
        drift=realised_timeline(config, start_s, instance_days, int(world.active.sum())),
        blocked_cards=blocked,
        trips=trips,
        fraud_never_labelled=int((fraud & ~np.isfinite(columns.label_available_s)).sum()),
    )

"""The population: customers with cards, terminals with a category, channel and country, and who can reach whom.

Pure numpy; every draw comes from the generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from functions.generator.config import GeneratorConfig

GRID = 100.0
# (MCC, share of terminals, probability that a terminal of this category is online). 6011 = ATM cash.
CATEGORIES: tuple[tuple[int, float, float], ...] = (
    (5411, 0.16, 0.05),  # grocery stores
    (5812, 0.14, 0.02),  # restaurants
    (5541, 0.08, 0.0),  # fuel
    (5311, 0.06, 0.25),  # department stores
    (5912, 0.06, 0.1),  # drug stores
    (5691, 0.07, 0.35),  # clothing
    (5732, 0.05, 0.5),  # electronics
    (5945, 0.04, 0.4),  # toys, games, hobby
    (4121, 0.04, 0.3),  # taxis and ride hailing
    (7011, 0.04, 0.5),  # hotels
    (4511, 0.02, 0.9),  # airlines
    (5815, 0.05, 1.0),  # digital goods
    (5964, 0.04, 1.0),  # catalogue and direct marketing
    (7995, 0.03, 0.9),  # gambling
    (6011, 0.12, 0.0),  # ATM cash withdrawal
)
ATM_MCC = 6011
# The 100 x 100 grid is cut into 4 x 4 regions, each a real country, so that a trip changes the country.
COUNTRIES = ("IE", "GB", "NL", "DK", "FR", "BE", "DE", "PL", "ES", "CH", "AT", "CZ", "PT", "IT", "SI", "HU")
_REGION = GRID / 4


def country_index(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    col = np.clip((x // _REGION).astype(np.int64), 0, 3)
    row = np.clip((y // _REGION).astype(np.int64), 0, 3)
    return row * 4 + col


@dataclass(frozen=True)
class World:
    # customers
    home_x: np.ndarray
    home_y: np.ndarray
    mean_amount: np.ndarray
    sd_amount: np.ndarray
    tx_per_day: np.ndarray
    preference: np.ndarray  # [customers, categories], a Dirichlet draw concentrated on a few categories
    first_slot: np.ndarray  # card slots of customer c: first_slot[c] .. first_slot[c] + n_cards[c] - 1
    n_cards: np.ndarray
    slot_customer: np.ndarray  # [slots]
    # terminals
    term_x: np.ndarray
    term_y: np.ndarray
    term_category: np.ndarray  # index into CATEGORIES
    term_mcc: np.ndarray
    term_channel: np.ndarray  # "pos" | "online" | "atm"
    term_country: np.ndarray  # index into COUNTRIES
    # reachable terminals, as a flat CSR table: customer c's are reach_terminal[reach_start[c]:reach_start[c + 1]]
    reach_start: np.ndarray
    reach_terminal: np.ndarray
    reach_cum: np.ndarray  # per customer, cumulative choice probability (by category preference) + c

    @property
    def customers(self) -> int:
        return len(self.home_x)

    @property
    def active(self) -> np.ndarray:
        """Customers with at least one reachable terminal (the others generate nothing, as in the handbook)."""
        return np.diff(self.reach_start) > 0

    def choose_terminal(self, customer: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A reachable terminal per (active) customer, weighted by the customer's category preference.

        The cumulative weights of customer c run over (c, c + 1], so one searchsorted serves every customer.
        """
        pos = np.searchsorted(self.reach_cum, customer + u, side="left")
        pos = np.minimum(pos, self.reach_start[customer + 1] - 1)
        return self.reach_terminal[pos]

    def terminals_near(self, x: float, y: float, radius: float) -> np.ndarray:
        return np.flatnonzero((self.term_x - x) ** 2 + (self.term_y - y) ** 2 <= radius * radius)


def build_world(config: GeneratorConfig, profiles: np.random.Generator, terminals: np.random.Generator) -> World:
    n = config.customers
    home_x = profiles.uniform(0, GRID, n)
    home_y = profiles.uniform(0, GRID, n)
    mean_amount = profiles.uniform(5, 100, n)
    tx_per_day = profiles.uniform(0, 4, n)
    preference = profiles.dirichlet(np.full(len(CATEGORIES), 0.4), n)
    n_cards = 1 + (profiles.random(n) < config.second_card_probability).astype(np.int64)
    first_slot = np.concatenate([[0], np.cumsum(n_cards)[:-1]]).astype(np.int64)

    m = config.terminals
    term_x = terminals.uniform(0, GRID, m)
    term_y = terminals.uniform(0, GRID, m)
    shares = np.array([c[1] for c in CATEGORIES])
    term_category = terminals.choice(len(CATEGORIES), size=m, p=shares / shares.sum())
    online_p = np.array([c[2] for c in CATEGORIES])[term_category]
    online = terminals.random(m) < online_p
    mcc = np.array([c[0] for c in CATEGORIES])[term_category]
    channel = np.where(mcc == ATM_MCC, "atm", np.where(online, "online", "pos")).astype(object)

    reach_start, reach_terminal, reach_cum = _reachable(home_x, home_y, term_x, term_y, term_category, preference,
                                                        config.radius)
    return World(
        home_x=home_x, home_y=home_y, mean_amount=mean_amount, sd_amount=mean_amount / 2, tx_per_day=tx_per_day,
        preference=preference, first_slot=first_slot, n_cards=n_cards,
        slot_customer=np.repeat(np.arange(n), n_cards),
        term_x=term_x, term_y=term_y, term_category=term_category, term_mcc=mcc, term_channel=channel,
        term_country=country_index(term_x, term_y),
        reach_start=reach_start, reach_terminal=reach_terminal, reach_cum=reach_cum,
    )


def _reachable(home_x: np.ndarray, home_y: np.ndarray, term_x: np.ndarray, term_y: np.ndarray,
               term_category: np.ndarray, preference: np.ndarray, radius: float,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts, terms, cums = [], [], []
    # Chunks bound the distance matrix to a few tens of MB.
    chunk = max(1, 4_000_000 // max(1, len(term_x)))
    for lo in range(0, len(home_x), chunk):
        hx, hy = home_x[lo:lo + chunk, None], home_y[lo:lo + chunk, None]
        near = (hx - term_x) ** 2 + (hy - term_y) ** 2 <= radius * radius
        rows, cols = np.nonzero(near)
        counts.append(near.sum(axis=1))
        terms.append(cols)
        # A small floor keeps rarely preferred categories possible, so "never used" is rare, not impossible.
        weight = preference[lo + rows, term_category[cols]] + 1e-3
        cums.append((rows + lo, weight))
    count = np.concatenate(counts)
    reach_start = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
    reach_terminal = np.concatenate(terms).astype(np.int64)
    owner = np.concatenate([r for r, _ in cums]).astype(np.int64)
    weight = np.concatenate([w for _, w in cums])
    total = np.bincount(owner, weights=weight, minlength=len(home_x))
    cum = np.cumsum(weight)
    before = np.concatenate([[0.0], cum])[reach_start[:-1]]  # running sum before each customer's block
    within = (cum - before[owner]) / total[owner]
    return reach_start, reach_terminal, owner + within

"""Configuration of the state client, read from environment variables in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class StateSettings:
    url: str = DEFAULT_URL
    timeout_s: float = 0.5  # per command; a scorer would rather answer 503 than hold a request for seconds
    connect_timeout_s: float = 1.0
    pool_size: int = 32
    ca_cert: str | None = None  # CA bundle for rediss:// / valkeys://; the system store when unset
    dedupe_window_s: int = 900  # well over Knative's default retry horizon (10 retries from PT0.2S, about 7 min)
    idle_ttl_s: int = 0  # 0 keeps idle entities forever

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StateSettings:
        """``VALKEY_URL``, ``VALKEY_TIMEOUT_S``, ``VALKEY_CONNECT_TIMEOUT_S``, ``VALKEY_POOL_SIZE``,
        ``VALKEY_CA_CERT``, ``STATE_DEDUPE_WINDOW_S``, ``STATE_IDLE_TTL_S``."""
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float, cast: type) -> float:
            raw = env.get(name)
            if raw in (None, ""):
                return default
            try:
                value = cast(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {raw!r}")
            return value

        return cls(
            url=env.get("VALKEY_URL") or defaults.url,
            timeout_s=number("VALKEY_TIMEOUT_S", defaults.timeout_s, float),
            connect_timeout_s=number("VALKEY_CONNECT_TIMEOUT_S", defaults.connect_timeout_s, float),
            pool_size=max(1, int(number("VALKEY_POOL_SIZE", defaults.pool_size, int))),
            ca_cert=env.get("VALKEY_CA_CERT") or None,
            dedupe_window_s=max(1, int(number("STATE_DEDUPE_WINDOW_S", defaults.dedupe_window_s, int))),
            idle_ttl_s=int(number("STATE_IDLE_TTL_S", defaults.idle_ttl_s, int)),
        )

"""Delivery specs: which one applies, ISO 8601 durations, backoff, and which responses are retried (pure).

Knative picks the *whole* ``delivery`` object from the Trigger, else from the Broker, else from the cluster default
in the ``config-br-defaults`` ConfigMap (``namespaceDefaults`` before ``clusterDefault``); fields are not merged
across levels. Inside the chosen spec an absent ``retry`` means no retries and an absent ``backoffDelay`` means none.

>>> spec = DeliverySpec.from_manifest({"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.5S"})
>>> [spec.backoff_s(n) for n in (1, 2, 3)]
[0.5, 1.0, 1.5]
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from knative.local.eventing.errors import EventingConfigError

log = logging.getLogger(__name__)

# Knative's SelectiveRetry: these failures may pass on their own; 400 and other 4xx/3xx will not.
RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})
# Knative's filter answers 502 when a subscriber's 2xx body is not a CloudEvent; the local broker records the same.
BAD_REPLY_STATUS = 502
# A network error or timeout has no status; Knative's dispatcher reports it as 500 with "dispatch error: ..." data.
DISPATCH_ERROR_STATUS = 500
# Knative sets no per-attempt timeout unless `delivery.timeout` is given; 300 s (the Serving request timeout
# default) keeps a hung subscriber from holding a delivery slot forever.
DEFAULT_ATTEMPT_TIMEOUT_S = 300.0
BACKOFF_POLICIES = ("linear", "exponential")
FORMATS = ("binary", "json")

CONFIG_BR_DEFAULTS_ENV = "HIDDENSTATE_BR_DEFAULTS"
# Used only when no config-br-defaults YAML is found; the values of Knative's shipped ConfigMap.
FALLBACK_CLUSTER_DELIVERY: dict[str, Any] = {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}

# PnDTnHnMnS. Years and months have no fixed length, so they are refused rather than guessed; a ten-line parser
# beats a dependency for the one duration format delivery specs use.
_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_SECONDS_PER = {"days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}


def parse_duration(text: Any, where: str = "duration") -> float:
    """An ISO 8601 duration (``PT0.2S``, ``PT1M30S``, ``P1DT2H``) in seconds. Raises ``EventingConfigError``."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match or text in ("P", "PT") or text.endswith("T"):
        raise EventingConfigError(f"{text!r} is not an ISO 8601 duration such as PT0.2S or PT1M", where)
    return sum(float(value) * _SECONDS_PER[unit] for unit, value in match.groupdict().items() if value)


def is_retryable(status: int) -> bool:
    """Whether a failed attempt with this HTTP status is tried again (Knative's SelectiveRetry)."""
    return status in RETRYABLE_STATUSES or status >= 500


@dataclass(frozen=True, slots=True)
class DeliverySpec:
    """One Trigger's effective delivery: retries after the first attempt, backoff, dead letter sink, timeout."""

    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay_s: float = 0.0
    dead_letter_sink: Mapping[str, Any] | None = None
    timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S
    format: str = "binary"

    @classmethod
    def from_manifest(cls, delivery: Mapping[str, Any] | None, where: str = "delivery") -> DeliverySpec:
        """Read a Knative ``delivery`` object, checking every field it uses."""
        if not delivery:
            return cls()
        if not isinstance(delivery, Mapping):
            raise EventingConfigError("must be an object", where)
        retry = delivery.get("retry", 0)
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise EventingConfigError(f"'retry' must be an integer >= 0, got {retry!r}", where)
        policy = delivery.get("backoffPolicy", "exponential")
        if policy not in BACKOFF_POLICIES:
            raise EventingConfigError(f"'backoffPolicy' must be linear or exponential, got {policy!r}", where)
        delay = delivery.get("backoffDelay")
        timeout = delivery.get("timeout")
        fmt = delivery.get("format", "binary")
        if fmt not in FORMATS:
            raise EventingConfigError(f"'format' must be binary or json, got {fmt!r}", where)
        sink = delivery.get("deadLetterSink")
        if sink is not None and not isinstance(sink, Mapping):
            raise EventingConfigError("'deadLetterSink' must be a Destination object", where)
        timeout_s = parse_duration(timeout, f"{where}.timeout") if timeout is not None else DEFAULT_ATTEMPT_TIMEOUT_S
        if timeout_s <= 0:
            raise EventingConfigError("'timeout' must be longer than zero", where)
        return cls(
            retry=retry,
            backoff_policy=policy,
            backoff_delay_s=parse_duration(delay, f"{where}.backoffDelay") if delay is not None else 0.0,
            dead_letter_sink=sink or None,
            timeout_s=timeout_s,
            format=fmt,
        )

    def backoff_s(self, retry_number: int) -> float:
        """The wait before retry ``retry_number`` (1 for the first retry): delay × n, or delay × 2ⁿ."""
        if self.backoff_policy == "linear":
            return self.backoff_delay_s * retry_number
        return self.backoff_delay_s * 2.0**retry_number


def choose_delivery(
    trigger_delivery: Mapping[str, Any] | None, broker_delivery: Mapping[str, Any] | None,
    cluster_delivery: Mapping[str, Any] | None,
) -> Mapping[str, Any] | None:
    """The raw ``delivery`` object that applies: the Trigger's, else the Broker's, else the cluster default."""
    for candidate in (trigger_delivery, broker_delivery, cluster_delivery):
        if candidate:
            return candidate
    return None


def default_delivery(config_br_defaults: Mapping[str, Any] | None, namespace: str) -> dict[str, Any]:
    """The default ``delivery`` for a Broker in ``namespace`` from a ``config-br-defaults`` ConfigMap object.

    ``None`` loads the ConfigMap from disk (see ``load_config_br_defaults``).
    """
    configmap = load_config_br_defaults() if config_br_defaults is None else config_br_defaults
    text = (configmap.get("data") or {}).get("default-br-config")
    if not text:
        return dict(FALLBACK_CLUSTER_DELIVERY)
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise EventingConfigError(f"'default-br-config' is not YAML: {exc}", "config-br-defaults") from None
    namespaced = (config.get("namespaceDefaults") or {}).get(namespace) or {}
    cluster = config.get("clusterDefault") or {}
    return dict(namespaced.get("delivery") or cluster.get("delivery") or {})


def config_br_defaults_candidates() -> list[Path]:
    """Where ``config-br-defaults`` is looked for: ``$HIDDENSTATE_BR_DEFAULTS``, then the shared Knative schemas."""
    explicit = os.environ.get(CONFIG_BR_DEFAULTS_ENV)
    if explicit:
        return [Path(explicit)]
    repo = Path(__file__).resolve().parents[3]
    name = "eventing-config-br-defaults.yaml"
    return [repo / "knative" / "schemas" / name, repo.parent / "shared" / "knative-schemas" / name]


def load_config_br_defaults() -> dict[str, Any]:
    """Knative's ``config-br-defaults`` ConfigMap from the first candidate file, else one with Knative's values."""
    candidates = config_br_defaults_candidates()
    if os.environ.get(CONFIG_BR_DEFAULTS_ENV) and not candidates[0].is_file():
        raise EventingConfigError(f"{candidates[0]} does not exist", CONFIG_BR_DEFAULTS_ENV)
    for path in candidates:
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                configmap = yaml.safe_load(handle) or {}
            log.debug("broker defaults read", extra={"path": str(path)})
            return configmap
    log.info("no config-br-defaults file found; using Knative's shipped values",
             extra={"delivery": FALLBACK_CLUSTER_DELIVERY})
    return {"data": {"default-br-config": yaml.safe_dump({"clusterDefault": {"delivery": FALLBACK_CLUSTER_DELIVERY}})}}

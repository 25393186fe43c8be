"""Autoscaling configuration: Knative's cluster defaults, ``--config-autoscaler`` overrides, and the per-revision
``autoscaling.knative.dev/*`` annotations resolved into one :class:`ScalingSettings`.

The cluster defaults are the ``_example`` block of knative/serving's ``config/core/configmaps/autoscaler.yaml``
(``CLUSTER_DEFAULTS``, read from the copy next to this module). Annotation names, fallbacks to
validation ranges follow ``pkg/apis/autoscaling/annotation_validation.go``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

ANNOTATION_PREFIX = "autoscaling.knative.dev/"
KPA_CLASS = "kpa.autoscaling.knative.dev"

# knative/serving's ConfigMap, copied verbatim (Apache-2.0): its ``_example`` block documents every key with its
# default, so the defaults are read from it rather than retyped.
CONFIG_AUTOSCALER_PATH = Path(__file__).with_name("config-autoscaler.yaml")


def _example_defaults(path: Path = CONFIG_AUTOSCALER_PATH) -> dict[str, str]:
    example = yaml.safe_load(yaml.safe_load(path.read_text())["data"]["_example"])
    return {key: str(value) for key, value in example.items()}


CLUSTER_DEFAULTS: dict[str, str] = _example_defaults()

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """A bad autoscaling setting; the message names the key and what is wrong with it."""


def parse_duration(text: str, key: str = "duration") -> float:
    """A Go duration (``"60s"``, ``"1m30s"``, ``"500ms"``, ``"0"``) in seconds.

    >>> parse_duration("1m30s")
    90.0
    """
    text = str(text).strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ConfigError(f"{key}: {text!r} is not a duration like '60s', '1m30s' or '500ms'")
    return total


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["stable-window=6s", ...]`` (the ``--config-autoscaler`` flags) as a dict of known cluster keys."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ConfigError(f"--config-autoscaler {pair!r}: expected KEY=VALUE, e.g. stable-window=6s")
        if key not in CLUSTER_DEFAULTS:
            known = ", ".join(sorted(CLUSTER_DEFAULTS))
            raise ConfigError(f"--config-autoscaler {key!r}: unknown config-autoscaler key (known: {known})")
        overrides[key] = value.strip()
    return overrides


def cluster_config(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The effective ``config-autoscaler`` data: defaults with overrides applied."""
    config = dict(CLUSTER_DEFAULTS)
    config.update(overrides or {})
    return config


@dataclass(frozen=True)
class ScalingSettings:
    """Everything the KPA and the scaler need for one revision, already resolved and validated."""

    metric: str = "concurrency"
    container_concurrency: int = 0
    total_target: float = 100.0
    target_utilization: float = 0.7
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_down_delay_s: float = 0.0
    min_scale: int = 0
    max_scale: int = 0
    initial_scale: int = 1
    activation_scale: int = 1
    enable_scale_to_zero: bool = True
    scale_to_zero_grace_s: float = 30.0
    scale_to_zero_retention_s: float = 0.0

    @property
    def target_value(self) -> float:
        """Per-instance metric value the KPA aims for (``total × utilization``, at least 0.01)."""
        return max(0.01, self.total_target * self.target_utilization)


def _float(value: str, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{key}: {value!r} is not a finite number")
    return number


def _int(value: str, key: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an integer") from None


def _bool(value: str, key: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered not in ("true", "false"):
        raise ConfigError(f"{key}: {value!r} is not 'true' or 'false'")
    return lowered == "true"


def _in_range(value: float, low: float, high: float, key: str) -> float:
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value:g} is outside [{low:g}, {high:g}]")
    return value


def _annotation(annotations: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The value of annotation ``name`` and the full key to name in errors."""
    if name in annotations:
        return str(annotations[name]), ANNOTATION_PREFIX + name
    return None


def scaling_settings(
    annotations: Mapping[str, str] | None,
    container_concurrency: int = 0,
    cluster: Mapping[str, str] | None = None,
) -> ScalingSettings:
    """Resolve a revision's scaling settings the way Knative's PodAutoscaler does: annotation, else cluster key.

    ``annotations`` are keyed without the ``autoscaling.knative.dev/`` prefix, camelCase already normalised, as
    ``knative.manifests.autoscaling_annotations`` returns them.
    """
    annotations = annotations or {}
    cfg = cluster_config(cluster)

    def pick(annotation: str | None, cluster_key: str | None) -> tuple[str, str]:
        found = _annotation(annotations, annotation) if annotation else None
        if found is not None:
            return found
        assert cluster_key is not None
        return cfg[cluster_key], f"config-autoscaler {cluster_key}"

    klass = annotations.get("class", cfg["pod-autoscaler-class"])
    if klass != KPA_CLASS:
        raise ConfigError(f"{ANNOTATION_PREFIX}class: {klass!r} is not supported locally (only {KPA_CLASS})")
    metric = annotations.get("metric", "concurrency")
    if metric not in ("concurrency", "rps"):
        raise ConfigError(f"{ANNOTATION_PREFIX}metric: {metric!r} must be 'concurrency' or 'rps' for the KPA")
    if not 0 <= container_concurrency <= 1000:
        raise ConfigError(f"containerConcurrency: {container_concurrency} is outside [0, 1000]")

    if metric == "rps":
        value, key = pick("target", "requests-per-second-target-default")
        total = _float(value, key)
    else:
        found = _annotation(annotations, "target")
        if found is not None:
            total = _float(*found)
            if container_concurrency > 0:
                total = min(total, container_concurrency)
        elif container_concurrency > 0:
            total = float(container_concurrency)
        else:
            key = "container-concurrency-target-default"
            total = _float(cfg[key], f"config-autoscaler {key}")
    if total < 0.01:
        raise ConfigError(f"{ANNOTATION_PREFIX}target: {total:g} must be at least 0.01")

    value, key = pick("target-utilization-percentage", "container-concurrency-target-percentage")
    utilization = _float(value, key)
    # Knative accepts a fraction in (0, 1] for backwards compatibility (0.7 means 70%).
    utilization = utilization if utilization <= 1.0 else _in_range(utilization, 1, 100, key) / 100.0
    if utilization <= 0:
        raise ConfigError(f"{key}: {utilization:g} must be positive")

    value, key = pick("window", "stable-window")
    stable = _in_range(parse_duration(value, key), 6, 3600, key)
    value, key = pick("panic-window-percentage", "panic-window-percentage")
    panic_pct = _in_range(_float(value, key), 1, 100, key)
    # Knative rounds the panic window to the closest whole second, at least 1 s.
    panic_window = max(1.0, float(round(stable * panic_pct / 100.0)))
    value, key = pick("panic-threshold-percentage", "panic-threshold-percentage")
    panic_threshold = _in_range(_float(value, key), 110, 1000, key) / 100.0

    up_rate = _float(cfg["max-scale-up-rate"], "config-autoscaler max-scale-up-rate")
    down_rate = _float(cfg["max-scale-down-rate"], "config-autoscaler max-scale-down-rate")
    for rate, key in ((up_rate, "max-scale-up-rate"), (down_rate, "max-scale-down-rate")):
        if rate <= 1.0:
            raise ConfigError(f"config-autoscaler {key}: {rate:g} must be greater than 1")

    value, key = pick("scale-down-delay", "scale-down-delay")
    scale_down_delay = _in_range(parse_duration(value, key), 0, 3600, key)
    value, key = pick("min-scale", "min-scale")
    min_scale = int(_in_range(_int(value, key), 0, 2**31 - 1, key))
    value, key = pick("max-scale", "max-scale")
    max_scale = int(_in_range(_int(value, key), 0, 2**31 - 1, key))
    if max_scale and min_scale > max_scale:
        raise ConfigError(f"{ANNOTATION_PREFIX}min-scale: {min_scale} is greater than max-scale {max_scale}")
    limit = _int(cfg["max-scale-limit"], "config-autoscaler max-scale-limit")
    if limit and not 0 < max_scale <= limit:
        raise ConfigError(f"{ANNOTATION_PREFIX}max-scale: {max_scale} must be within [1, max-scale-limit {limit}]")

    allow_zero_initial = _bool(cfg["allow-zero-initial-scale"], "config-autoscaler allow-zero-initial-scale")
    value, key = pick("initial-scale", "initial-scale")
    initial_scale = _int(value, key)
    if initial_scale < 0 or (initial_scale == 0 and not allow_zero_initial):
        raise ConfigError(f"{key}: {initial_scale} must be at least 1 unless allow-zero-initial-scale is true")

    activation_scale = 1
    found = _annotation(annotations, "activation-scale")
    if found is not None:
        activation_scale = _int(*found)
        if activation_scale < 2 or activation_scale < min_scale or (max_scale and activation_scale > max_scale):
            raise ConfigError(f"{found[1]}: {activation_scale} must be ≥ 2 and within [min-scale, max-scale]")

    value, key = pick("scale-to-zero-pod-retention-period", "scale-to-zero-pod-retention-period")
    retention = _in_range(parse_duration(value, key), 0, 3600, key)
    grace = parse_duration(cfg["scale-to-zero-grace-period"], "config-autoscaler scale-to-zero-grace-period")
    if grace <= 0:
        raise ConfigError("config-autoscaler scale-to-zero-grace-period: must be positive")

    return ScalingSettings(
        metric=metric,
        container_concurrency=container_concurrency,
        total_target=total,
        target_utilization=utilization,
        stable_window_s=stable,
        panic_window_s=panic_window,
        panic_threshold=panic_threshold,
        max_scale_up_rate=up_rate,
        max_scale_down_rate=down_rate,
        scale_down_delay_s=scale_down_delay,
        min_scale=min_scale,
        max_scale=max_scale,
        initial_scale=initial_scale,
        activation_scale=activation_scale,
        enable_scale_to_zero=_bool(cfg["enable-scale-to-zero"], "config-autoscaler enable-scale-to-zero"),
        scale_to_zero_grace_s=grace,
        scale_to_zero_retention_s=retention,
    )

"""Trigger filters, compiled once into predicates over an event's attributes (a pure module, no I/O).

Two syntaxes, as in Knative v1 Triggers:

- ``filter.attributes``: every key must match exactly; a value of ``""`` means "present and non-empty"
  (Knative's ``TriggerAnyFilter``).
- ``filters`` (the CloudEvents Subscriptions API dialects): a list that must all pass; each entry holds exactly one of
  ``exact``, ``prefix``, ``suffix`` (maps, every key must pass), ``all``, ``any`` (lists), ``not`` (one filter).
  ``cesql`` is rejected at load with ``UnsupportedFilter``: a partial SQL dialect that silently matched differently
  from the cluster would be worse than a clear refusal.

When both are set, ``filters`` wins and ``filter`` is ignored, as in Knative.

Attributes are compared as strings, the way they travel in HTTP headers; an absent attribute never matches.

>>> matches = compile_trigger_filter({"filters": [{"prefix": {"type": "dev.hiddenstate."}},
...                                               {"not": {"exact": {"source": "/test"}}}]})
>>> matches({"type": "dev.hiddenstate.score", "source": "/scorer"}), matches({"type": "x", "source": "/scorer"})
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from knative.local.eventing.errors import EventingConfigError, UnsupportedFilter

Predicate = Callable[[Mapping[str, str]], bool]

_MAP_DIALECTS = ("exact", "prefix", "suffix")
_DIALECTS = (*_MAP_DIALECTS, "all", "any", "not", "cesql")


def _match_all(_attributes: Mapping[str, str]) -> bool:
    return True


def compile_trigger_filter(spec: Mapping[str, Any]) -> Predicate:
    """The predicate of a Trigger ``spec``: ``filters`` if non-empty, else ``filter.attributes``, else match all."""
    filters = spec.get("filters")
    if filters:
        return compile_filters(filters, "spec.filters")
    legacy = spec.get("filter") or {}
    if not isinstance(legacy, Mapping):
        raise EventingConfigError("must be an object with 'attributes'", "spec.filter")
    return compile_attributes_filter(legacy.get("attributes") or {}, "spec.filter.attributes")


def compile_attributes_filter(attributes: Mapping[str, Any], where: str = "filter.attributes") -> Predicate:
    """Knative's legacy filter: exact match on every key; ``""`` matches any non-empty value."""
    wanted = _string_map(attributes, where)
    if not wanted:
        return _match_all

    def matches(event: Mapping[str, str]) -> bool:
        for name, value in wanted.items():
            actual = event.get(name)
            if not actual or (value and actual != value):
                return False
        return True

    return matches


def compile_filters(filters: Any, where: str = "filters") -> Predicate:
    """A list of Subscriptions API filters, all of which must pass. An empty list matches everything."""
    if not isinstance(filters, list):
        raise EventingConfigError("must be a list of filters", where)
    predicates = [compile_filter(item, f"{where}[{index}]") for index, item in enumerate(filters)]
    if not predicates:
        return _match_all
    return lambda event: all(predicate(event) for predicate in predicates)


def compile_filter(entry: Any, where: str = "filter") -> Predicate:
    """One Subscriptions API filter: a map with exactly one dialect key."""
    if not isinstance(entry, Mapping):
        raise EventingConfigError("a filter must be an object with one dialect key", where)
    dialects = [key for key in entry if entry[key] is not None]
    unknown = [key for key in dialects if key not in _DIALECTS]
    if unknown:
        raise EventingConfigError(
            f"unknown filter dialect {unknown[0]!r}; expected one of {', '.join(_DIALECTS)}", where
        )
    if len(dialects) != 1:
        raise EventingConfigError(
            f"a filter must set exactly one dialect, got {', '.join(dialects) or 'none'}", where
        )
    dialect = dialects[0]
    value = entry[dialect]
    where = f"{where}.{dialect}"
    if dialect == "cesql":
        raise UnsupportedFilter(
            "CloudEvents SQL filters are not supported locally; express the filter with exact, prefix, suffix, "
            "all, any and not, or run on a cluster",
            where,
        )
    if dialect in _MAP_DIALECTS:
        return _compile_map_dialect(dialect, value, where)
    if dialect == "not":
        inner = compile_filter(value, where)
        return lambda event: not inner(event)
    if not isinstance(value, list):
        raise EventingConfigError("must be a list of filters", where)
    predicates = [compile_filter(item, f"{where}[{index}]") for index, item in enumerate(value)]
    # Knative treats an empty all/any as no filter at all, so both pass everything.
    if not predicates:
        return _match_all
    if dialect == "all":
        return lambda event: all(predicate(event) for predicate in predicates)
    return lambda event: any(predicate(event) for predicate in predicates)


def _compile_map_dialect(dialect: str, value: Any, where: str) -> Predicate:
    wanted = _string_map(value, where)
    if not wanted:
        raise EventingConfigError("must name at least one attribute", where)
    if dialect != "exact" and not all(wanted.values()):
        raise EventingConfigError(f"a {dialect} value must be non-empty", where)

    def matches(event: Mapping[str, str]) -> bool:
        for name, expected in wanted.items():
            actual = event.get(name)
            if actual is None:
                return False
            if dialect == "exact" and actual != expected:
                return False
            if dialect == "prefix" and not actual.startswith(expected):
                return False
            if dialect == "suffix" and not actual.endswith(expected):
                return False
        return True

    return matches


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise EventingConfigError("must be a map of attribute name to string value", where)
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise EventingConfigError(f"attribute {name!r} must map to a string, got {item!r}", where)
    return dict(value)

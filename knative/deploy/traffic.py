"""Canary and rollback as Knative traffic blocks (pure: a Service's status and revisions in, ``spec.traffic`` out).

The revision serving users is tagged ``current``, the one being tried ``candidate``; each tag gets its own URL
(``current-scorer...``, ``candidate-scorer...``), so either can be called directly while the split runs.

Workflow: ``traffic --percent 0`` pins all traffic to the running revision; deploy a new image (its revision gets 0 %
and the ``candidate`` tag); ``traffic --percent 10`` ... ``--percent 100`` shifts and finally promotes it;
``rollback`` returns all traffic to the ``current`` revision, or after a promotion to the one before it.

>>> status = {"latestReadyRevisionName": "s-2", "traffic": [{"revisionName": "s-1", "percent": 100}]}
>>> canary_traffic(status, 10)
[{'revisionName': 's-1', 'percent': 90, 'tag': 'current'}, {'revisionName': 's-2', 'percent': 10, 'tag': 'candidate'}]
"""

from __future__ import annotations

from typing import Any

from knative.deploy.errors import TrafficError

CURRENT = "current"
CANDIDATE = "candidate"
GENERATION_LABEL = "serving.knative.dev/configurationGeneration"

Obj = dict[str, Any]


def canary_traffic(status: Obj, percent: int, revision: str | None = None) -> list[Obj]:
    """Send ``percent`` of traffic to ``revision`` (default: the latest ready one), the rest to the current one."""
    if not 0 <= percent <= 100:
        raise TrafficError(f"--percent {percent} must be between 0 and 100")
    candidate = revision or status.get("latestReadyRevisionName")
    if not candidate:
        raise TrafficError("the Service has no ready revision yet; wait for the first deploy to become Ready")
    current = serving_revision(status, exclude=candidate)
    if current is None:
        if percent in (0, 100):
            # Everything already runs on the candidate: pin it, so the next deploy does not take traffic by itself.
            return [{"revisionName": candidate, "percent": 100, "tag": CURRENT}]
        raise TrafficError(
            f"revision {candidate} already serves all traffic; pin it with --percent 0, deploy a new revision, "
            "then shift traffic to it"
        )
    if percent == 100:
        # Promotion: the old revision keeps a 0 % tagged route so that rollback knows where to go.
        return [{"revisionName": candidate, "percent": 100, "tag": CURRENT},
                {"revisionName": current, "percent": 0, "tag": "previous"}]
    return [{"revisionName": current, "percent": 100 - percent, "tag": CURRENT},
            {"revisionName": candidate, "percent": percent, "tag": CANDIDATE}]


def rollback_traffic(status: Obj, revisions: list[Obj]) -> list[Obj]:
    """All traffic back to the revision users had before the canary or the promotion.

    During a canary that is the ``current`` tag. After a promotion (or a plain deploy) it is the ``previous`` tag,
    or else the newest ready revision older than the one now serving.
    """
    traffic = status.get("traffic") or []
    tagged = {t.get("tag"): t.get("revisionName") for t in traffic if t.get("tag")}
    serving = serving_revision(status)
    if tagged.get(CANDIDATE) and any(t.get("tag") == CANDIDATE and t.get("percent") for t in traffic):
        target, abandoned = tagged[CURRENT], tagged[CANDIDATE]
    elif tagged.get("previous"):
        target, abandoned = tagged["previous"], serving
    else:
        target, abandoned = previous_revision(revisions, serving), serving
    if not target:
        raise TrafficError("no earlier ready revision to roll back to")
    out = [{"revisionName": target, "percent": 100, "tag": CURRENT}]
    if abandoned and abandoned != target:
        out.append({"revisionName": abandoned, "percent": 0, "tag": CANDIDATE})
    return out


def serving_revision(status: Obj, exclude: str | None = None) -> str | None:
    """The revision carrying the most traffic, other than ``exclude``."""
    carrying = [t for t in status.get("traffic") or [] if t.get("percent") and t.get("revisionName") != exclude]
    return max(carrying, key=lambda t: t["percent"])["revisionName"] if carrying else None


def previous_revision(revisions: list[Obj], before: str | None) -> str | None:
    """The newest Ready revision created before ``before`` (by configuration generation)."""
    def generation(rev: Obj) -> int:
        return int(rev["metadata"].get("labels", {}).get(GENERATION_LABEL, 0))

    by_name = {r["metadata"]["name"]: r for r in revisions}
    if before not in by_name:
        return None
    older = [r for r in revisions if generation(r) < generation(by_name[before]) and _ready(r)]
    return max(older, key=generation)["metadata"]["name"] if older else None


def _ready(obj: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in obj.get("status", {}).get("conditions", []))

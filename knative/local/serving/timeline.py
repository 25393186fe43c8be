"""The serving timeline (one row per service per metric tick in ``<home>/timeline.jsonl``) and its plot."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

TIMELINE_FILE = "timeline.jsonl"


def load_timeline(home: Path) -> list[dict[str, Any]]:
    """Every row recorded under ``home``; a torn last line (the runtime was writing) is skipped."""
    path = Path(home) / TIMELINE_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return rows


def plot_timeline(rows: list[dict[str, Any]], out: Path, title: str = "hiddenstate local runtime") -> Path:
    """Instances (ready and desired), requests/s and latency (p50, p99) per service over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("the timeline is empty: start the runtime with `hiddenstate up` and send some traffic")
    t0 = min(r["t"] for r in rows)
    by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_service[row["service"]].append(row)

    fig, (ax_inst, ax_rps, ax_lat) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    for service, series in sorted(by_service.items()):
        t = [r["t"] - t0 for r in series]
        (line,) = ax_inst.step(t, [r["ready"] for r in series], where="post", label=f"{service} ready")
        ax_inst.step(t, [r["desired"] for r in series], where="post", linestyle="--", color=line.get_color(),
                     alpha=0.6, label=f"{service} desired")
        ax_rps.plot(t, [r.get("rps", 0.0) for r in series], color=line.get_color(), label=service)
        for key, style in (("p50_ms", "-"), ("p99_ms", ":")):
            points = [(x, r[key]) for x, r in zip(t, series, strict=True) if r.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax_lat.plot(xs, ys, style, color=line.get_color(), label=f"{service} {key[:3]}")
    ax_inst.set_ylabel("instances")
    ax_rps.set_ylabel("requests/s")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("seconds since the first tick")
    for ax in (ax_inst, ax_rps, ax_lat):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

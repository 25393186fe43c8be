"""Which WSGI server: the same scorer app on granian and on gunicorn, side by side in one run, loaded by k6.

Issue 4 asks for the production server to be chosen by measurement. The perf notes measured a Flask "hello" app;
this measures the scorer itself, on one model, one valkey-server and one event stream:

- ``granian``: ``python -m functions.scorer`` (granian's WSGI mode, one worker, ``SCORER_HTTP_THREADS`` threads);
- ``gunicorn gthread``: ``gunicorn --worker-class gthread --threads 32 --workers 1 'functions.scorer.wsgi:create()'``,
  the same app factory, the same number of request threads, so the micro-batcher gathers the same concurrency;
- ``gunicorn sync``: one sync worker per core, how Flask is usually deployed; each worker handles one request at a
  time, so every micro-batch holds one event.

Loads: saturation (closed model, 32 VUs, single events) and p50/p99 at 500 events/s (open model). Reported: events/s,
latency, CPU per event of each server's process tree, micro-batch sizes, and granian's ratio to each gunicorn.

Writes ``perf/results/server.json``, ``server.md`` and ``server.png``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perf.scorer_bench import (
    CACHE,
    RESULTS,
    Load,
    Measured,
    ServerProcess,
    all_ready,
    bench_main,
    event_stream,
    machine,
    measure_all,
    resolve_model,
)

APP_FACTORY = "functions.scorer.wsgi:create()"
SERVERS = {
    # name: (label, module, arguments); names start with "ours" so that measure() reads their batch sizes
    "ours_granian": ("granian (python -m functions.scorer)", "functions.scorer", ()),
    "ours_gunicorn_gthread": ("gunicorn gthread, 1 worker x 32 threads", "gunicorn",
                              ("--worker-class", "gthread", "--threads", "32", "--workers", "1",
                               "--bind", "127.0.0.1:{port}", "--backlog", "2048", APP_FACTORY)),
    "ours_gunicorn_sync": ("gunicorn sync, one worker per core", "gunicorn",
                           ("--worker-class", "sync", "--workers", str(os.cpu_count() or 1),
                            "--bind", "127.0.0.1:{port}", "--backlog", "2048", APP_FACTORY)),
}


def plan() -> list[Load]:
    loads = []
    for name, (label, _, _) in SERVERS.items():
        loads += [Load(f"{label}, saturation", name, "closed", vus=32, group="saturation"),
                  Load(f"{label}, 500/s", name, "open", rate=500, group="rate500")]
    return loads


def start(valkey_url: str, model_uri: str, log_dir: Path) -> dict[str, ServerProcess]:
    env = {"VALKEY_URL": valkey_url, "MODEL_URI": model_uri}
    return all_ready({name: ServerProcess(name, module, env, log_dir, args)
                      for name, (_, module, args) in SERVERS.items()})


def ratios(runs: Sequence[Measured]) -> dict[str, float]:
    saturation = {m.load.server: m for m in runs if m.load.group == "saturation"}
    granian = saturation["ours_granian"]
    out = {}
    for name in ("ours_gunicorn_gthread", "ours_gunicorn_sync"):
        other = saturation[name]
        out[f"events_per_s_granian_over_{name[5:]}"] = round(granian.events_per_s / other.events_per_s, 2)
        out[f"cpu_per_event_{name[5:]}_over_granian"] = round(other.cpu_ms_per_event / granian.cpu_ms_per_event, 2)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    CACHE.mkdir(parents=True, exist_ok=True)
    model_uri = resolve_model(args.model_uri, untrained=True)
    events_file = event_stream(10)
    info = machine()
    work_dir = Path(tempfile.mkdtemp(prefix="server-bench-", dir=CACHE))
    runs = measure_all(lambda url, logs: start(url, model_uri, logs), plan(), events_file, args.duration, work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return {"machine": info, "model_uri": model_uri, "duration_s_per_load": args.duration,
            "servers": {name: label for name, (label, _, _) in SERVERS.items()},
            "ratios": ratios(runs), "runs": [m.row() for m in runs]}


def markdown(result: dict[str, Any]) -> str:
    m, r = result["machine"], result["ratios"]
    lines = [
        "# Which WSGI server: the scorer on granian and on gunicorn",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB; {m['date']}; Python {m['python']}; "
        f"{m['k6']}. Each load ran {result['duration_s_per_load']:g} s; k6 on the same cores; one valkey-server.",
        "",
        "granian against gunicorn gthread (same threads, same app): "
        f"**{r['events_per_s_granian_over_gunicorn_gthread']}x** the events/s at saturation, "
        f"{r['cpu_per_event_gunicorn_gthread_over_granian']}x less CPU per event. "
        f"Against gunicorn sync workers: {r['events_per_s_granian_over_gunicorn_sync']}x the events/s, "
        f"{r['cpu_per_event_gunicorn_sync_over_granian']}x less CPU per event.",
        "",
        "| server | load | events/s | p50 ms | p99 ms | failed | server CPU ms/event | micro-batches of <= 1 / <= 8 / "
        "more events |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run_ in result["runs"]:
        sizes = run_["batch_sizes"]
        one = sizes.get("<=1", 0)
        upto8 = sum(v for k, v in sizes.items() if k in ("<=2", "<=4", "<=8"))
        more = sum(sizes.values()) - one - upto8
        load = f"open, {run_['rate']}/s" if run_["scenario"] == "open" else f"closed, {run_['vus']} VUs"
        lines.append(
            f"| {result['servers'][run_['server']]} | {load}"
            f" | {run_['events_per_s']:,.0f} | {run_['p50_ms']:.2f} | {run_['p99_ms']:.2f} | {run_['events_failed']} "
            f"| {run_['cpu_ms_per_event']:.3f} | {one} / {upto8} / {more} |"
        )
    lines += ["", "With gunicorn's sync workers, /metrics answers from whichever worker takes the scrape, so their "
              "batch counts are one worker's."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result["runs"] if r["group"] == "saturation"]
    labels = [result["servers"][r["server"]].replace(", ", "\n") for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars = left.bar(range(len(runs)), [r["events_per_s"] for r in runs], color=["#1f77b4", "#999999", "#cccccc"])
    left.bar_label(bars, labels=[f"{r['events_per_s']:,.0f}" for r in runs], fontsize=8)
    left.set_xticks(range(len(runs)), labels, fontsize=7)
    left.set_ylabel("events/s at saturation (32 VUs)")
    bars = right.bar(range(len(runs)), [r["cpu_ms_per_event"] for r in runs], color=["#1f77b4", "#999999", "#cccccc"])
    right.bar_label(bars, labels=[f"{r['cpu_ms_per_event']:.2f}" for r in runs], fontsize=8)
    right.set_xticks(range(len(runs)), labels, fontsize=7)
    right.set_ylabel("server CPU ms per event")
    m = result["machine"]
    fig.suptitle(f"The scorer app on three WSGI servers, {m['cores']} cores, {m['cpu_model']}, {m['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m perf.server_bench",
        description="Serve the same scorer app on granian and on gunicorn (gthread with the same threads, and "
        "sync workers) and load each with k6: events/s at saturation, p50/p99 at 500 events/s, CPU per event, "
        "micro-batch sizes. Writes perf/results/server.{json,md,png}.",
        epilog="About 2 minutes. Uses a seeded untrained model unless --model-uri is given (the cost per step is "
        "the same).",
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load (default: %(default)s)")
    parser.add_argument("--model-uri", help="model to serve (file:// or s3://, as printed by the trainer)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for server.json, server.md, server.png (default: perf/results)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, "server", markdown, plot)


if __name__ == "__main__":
    sys.exit(main())

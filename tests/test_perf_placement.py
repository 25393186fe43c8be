"""Benchmark placement (perf/placement.py) on real processes, and how the scorer benchmark reports both placements."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from functions.generator.config import GeneratorConfig
from functions.generator.events import write_jsonl
from perf import scorer_bench
from perf.placement import ISOLATED, SHARED, all_cpus, pin_tree, placed, split_cpus
from state_service.server import ValkeyServer

pytest_plugins = ["valkey_fixtures"]

TWO_CORES = len(os.sched_getaffinity(0)) >= 2
needs_two_cores = pytest.mark.skipif(not TWO_CORES, reason="an isolated placement needs two cores")

# A process with a second thread and a child process, so that pinning has a tree of threads to cover.
_TREE = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def process_tree() -> Iterator[psutil.Process]:
    process = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()  # the child exists once its pid is printed
        yield psutil.Process(process.pid)
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


def thread_affinities(root: psutil.Process) -> list[set[int]]:
    return [os.sched_getaffinity(t.id) for p in [root, *root.children(recursive=True)] for t in p.threads()]


def test_split_gives_the_server_the_first_half_and_the_load_the_rest() -> None:
    assert split_cpus({0, 1}) == ({0}, {1})
    assert split_cpus({0, 1, 2, 3}) == ({0, 1}, {2, 3})
    assert split_cpus({2, 5, 7}) == ({2}, {5, 7})
    with pytest.raises(ValueError, match="at least 2 cores"):
        split_cpus({3})


@needs_two_cores
def test_pin_tree_pins_every_thread_of_a_process_and_its_children(process_tree: psutil.Process) -> None:
    core = min(os.sched_getaffinity(0))

    pinned = pin_tree(process_tree.pid, {core})

    affinities = thread_affinities(process_tree)
    assert pinned == len(affinities) >= 3  # main thread, its second thread, the child
    assert all(a == {core} for a in affinities)


@needs_two_cores
def test_isolated_placement_separates_server_and_load_then_gives_every_core_back(
        process_tree: psutil.Process) -> None:
    everything = os.sched_getaffinity(0)
    server_cpus, load_cpus = split_cpus(everything)
    load = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with placed(ISOLATED, [process_tree.pid], [load.pid]):
            assert all(a == server_cpus for a in thread_affinities(process_tree))
            assert os.sched_getaffinity(load.pid) == load_cpus
            # What this thread starts meanwhile (k6) runs with the load.
            started = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                                     capture_output=True, text=True, check=True)
            assert started.stdout.strip() == str(sorted(load_cpus))
        assert all(a == everything for a in thread_affinities(process_tree))
        assert os.sched_getaffinity(load.pid) == everything
        assert os.sched_getaffinity(0) == everything
    finally:
        load.kill()
        load.wait()


def test_shared_placement_moves_nothing_and_an_unknown_one_is_refused(process_tree: psutil.Process) -> None:
    before = thread_affinities(process_tree)
    with placed(SHARED, [process_tree.pid], []):
        assert thread_affinities(process_tree) == before
    with pytest.raises(ValueError, match="placement must be one of"), placed("pinned", [process_tree.pid], []):
        pass


def test_a_pid_that_is_gone_is_skipped() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    time.sleep(0.05)
    assert pin_tree(process.pid, os.sched_getaffinity(0)) == 0


@needs_two_cores
def test_an_isolated_k6_load_runs_with_the_server_and_k6_on_their_own_cores(
        tmp_path: Path, valkey_server: ValkeyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(replace(GeneratorConfig.preset("quick", seed=5), days=1), events, progress=False)
    server = scorer_bench.ServerProcess("http_floor", "perf.baselines.http_floor", {"SCORER_HTTP_THREADS": "4"},
                                        tmp_path)
    server_cpus, load_cpus = split_cpus()
    seen: dict[str, object] = {}
    real_run_k6 = scorer_bench.run_k6

    def observed_run_k6(*args, **kwargs):  # the real k6 run, with a look at the affinities while it starts
        seen["server"] = thread_affinities(psutil.Process(server.process.pid))
        seen["valkey"] = os.sched_getaffinity(valkey_server.pid)
        seen["harness"] = os.sched_getaffinity(0)
        return real_run_k6(*args, **kwargs)

    monkeypatch.setattr(scorer_bench, "run_k6", observed_run_k6)
    try:
        scorer_bench.wait_ready(server.url, server.process, timeout_s=60)
        load = scorer_bench.Load("floor [isolated]", "http_floor", "closed", vus=2, placement=ISOLATED)
        result = scorer_bench.measure(server, valkey_server, events, load, 1.0, tmp_path)
        after = thread_affinities(psutil.Process(server.process.pid))
    finally:
        server.stop()

    assert result.events_scored > 0 and result.events_failed == 0
    assert all(a == server_cpus for a in seen["server"])
    assert seen["valkey"] == seen["harness"] == load_cpus
    assert all(a == all_cpus() for a in after)
    assert os.sched_getaffinity(valkey_server.pid) == all_cpus()


# -- reporting -----------------------------------------------------------------------------------------------


def measured(load: scorer_bench.Load, events_per_s: float, p99_ms: float = 10.0,
             cpu_ms_per_event: float = 1.0) -> scorer_bench.Measured:
    return scorer_bench.Measured(
        load=load, duration_s=10.0, events_scored=int(events_per_s * 10), events_failed=0, requests=1,
        events_per_s=events_per_s, p50_ms=1.0, p99_ms=p99_ms, max_ms=p99_ms, dropped_iterations=0, cpu_s=1.0,
        cpu_ms_per_event=cpu_ms_per_event, valkey_cpu_ms_per_event=0.1, k6_cpu_ms_per_event=0.1,
        p99_threshold_ok=None,
    )


def synthetic_runs() -> list[scorer_bench.Measured]:
    """Every row of the plan. At 32 VUs ours is 2.5x naive shared (3.9x pinned) and 4.5x isolated; over the sweep,
    naive peaks at 16 VUs (1,050 shared, 820 isolated), ours at 128 VUs with 2 workers (4,200) and at 64 VUs
    isolated (3,800). 20x with isolated batches against the isolated naive's 820 at 16 VUs."""
    figures = {  # label: (events/s, p99 ms, CPU ms per event)
        "naive, single events": (1000, 50, 1.2), "ours, single events": (2500, 20, 0.36),
        scorer_bench.PINNED_SINGLE: (3900, 16, 0.22), scorer_bench.PINNED_AT_1000: (1000, 5.5, 0.85),
        scorer_bench.HTTP_FLOOR: (12000, 10, 0.05), "ours, micro-batching off": (500, 100, 2.4),
        "ours (2 workers), single events": (2800, 20, 0.4), "ours, batch mode (64 per request)": (8000, 60, 0.08),
        "ours (2 workers), batch mode (256 per request)": (12000, 300, 0.08),
        "ours (2 workers), batch mode (1024 per request)": (11000, 900, 0.07),
        "ours at 500/s": (500, 3, 1.0), "naive at 500/s": (500, 5, 1.5), "ours at 1000/s": (1000, 6, 0.8),
        "naive at 1000/s": (900, 400, 1.3), "ours (2 workers) at 1000/s": (1000, 7, 1.0),
        "naive, single events [isolated]": (800, 55, 1.15), "ours, single events [isolated]": (3600, 18, 0.24),
        f"{scorer_bench.HTTP_FLOOR} [isolated]": (10000, 14, 0.06),
        "ours, batch mode (256 per request) [isolated]": (16000, 250, 0.06),
        "ours, batch mode (1024 per request) [isolated]": (15000, 800, 0.05),
        "ours at 1000/s [isolated]": (1000, 4.0, 0.9), "naive at 1000/s [isolated]": (600, 700, 1.3),
        "naive, single events, 16 VUs": (1050, 30, 1.1), "naive, single events, 64 VUs": (980, 90, 1.2),
        "naive, single events, 128 VUs": (950, 180, 1.25),
        "ours (pinned), single events, 16 VUs": (3000, 10, 0.26),
        "ours (pinned), single events, 64 VUs": (4000, 30, 0.22),
        "ours (pinned), single events, 128 VUs": (4100, 60, 0.21),
        "ours (2 workers), single events, 16 VUs": (2600, 12, 0.43),
        "ours (2 workers), single events, 64 VUs": (3700, 40, 0.32),
        "ours (2 workers), single events, 128 VUs": (4200, 80, 0.28),
        "naive, single events, 16 VUs [isolated]": (820, 35, 1.1),
        "naive, single events, 64 VUs [isolated]": (790, 95, 1.2),
        "naive, single events, 128 VUs [isolated]": (780, 190, 1.2),
        "ours, single events, 16 VUs [isolated]": (3000, 9, 0.27),
        "ours, single events, 64 VUs [isolated]": (3800, 30, 0.23),
        "ours, single events, 128 VUs [isolated]": (3700, 70, 0.24),
    }
    plan = scorer_bench.plan(quick=False, isolated=True)
    assert sorted(load.label for load in plan) == sorted(figures)
    return [measured(load, *figures[load.label]) for load in plan]


def test_ratios_report_each_placement_against_its_own_naive_run() -> None:
    r = scorer_bench.ratios(synthetic_runs())

    # Saturation compares peaks over the sweep: each server at the concurrency that suits it best.
    assert r["saturation_single_ours_over_naive"] == 4.0  # 4,200 (2 workers, 128 VUs) over 1,050 (16 VUs)
    assert r["saturation_single_run"] == "ours (2 workers), single events, 128 VUs"
    assert r["saturation_naive_run"] == "naive, single events, 16 VUs"
    assert r["saturation_cpu_per_event_naive_over_ours"] == round(1.1 / 0.28, 2)
    assert r["single_at_32_vus_ours_over_naive"] == 3.9  # the pinned scorer against naive, both at 32 VUs
    assert r["saturation_single_ours_unpinned_over_naive"] == 2.5
    assert r["p99_ms_at_1000_ours"] == 5.5
    assert r["p99_ms_at_1000_ours_unpinned"] == 6
    assert r["isolated_saturation_single_ours_over_naive"] == round(3800 / 820, 2)
    assert r["isolated_saturation_single_run"] == "ours, single events, 64 VUs [isolated]"
    assert r["isolated_single_at_32_vus_ours_over_naive"] == 4.5
    assert r["isolated_batch_mode_ours_over_naive_single"] == round(16000 / 820, 2)
    assert r["isolated_batch_mode_best_run"] == "ours, batch mode (256 per request) [isolated]"
    assert r["batch_mode_best_run"] == "ours (2 workers), batch mode (256 per request)"
    assert r["isolated_p99_ms_at_1000_ours"] == 4.0
    assert r["http_floor_over_naive"] == 12.0  # the floor runs 32 VUs: against naive at 32 VUs


def test_saturation_ignores_configurations_outside_the_sweep() -> None:
    runs = synthetic_runs()
    # Faster than every swept row, but neither the unpinned default nor micro-batching off is compared at saturation.
    boosted = [replace(m, events_per_s=9000) if m.load.label in ("ours, single events", "ours, micro-batching off")
               else m for m in runs]

    r = scorer_bench.ratios(boosted)

    assert r["saturation_single_run"] == "ours (2 workers), single events, 128 VUs"


def test_without_the_sweep_saturation_is_the_32_vu_comparison() -> None:
    runs = [m for m in synthetic_runs() if m.load.group != "sweep"]

    r = scorer_bench.ratios(runs)

    assert r["saturation_single_ours_over_naive"] == r["single_at_32_vus_ours_over_naive"] == 3.9
    assert r["saturation_single_run"] == scorer_bench.PINNED_SINGLE
    assert r["isolated_saturation_single_ours_over_naive"] == 4.5
    assert scorer_bench.sweep_lines({"runs": [m.row() for m in runs]}) == []


def test_goals_are_judged_per_placement() -> None:
    goals = scorer_bench.goals(scorer_bench.ratios(synthetic_runs()))

    met = {(g["placement"], g["goal"].split(" naive")[0].split(" at 1000")[0]): g["met"] for g in goals}
    assert met == {(SHARED, ">= 4x"): True, (SHARED, ">= 20x"): False, (SHARED, "p99 <= 5 ms"): False,
                   (ISOLATED, ">= 4x"): True, (ISOLATED, ">= 20x"): False, (ISOLATED, "p99 <= 5 ms"): True}


def test_a_run_without_the_isolated_placement_reports_shared_goals_only() -> None:
    runs = [m for m in synthetic_runs() if m.load.placement == SHARED]
    assert len(runs) == len(scorer_bench.plan(quick=False, isolated=False))

    r = scorer_bench.ratios(runs)

    assert not any(name.startswith("isolated_") for name in r)
    assert {g["placement"] for g in scorer_bench.goals(r)} == {SHARED}


def test_the_markdown_names_the_placements_and_the_cores() -> None:
    runs = synthetic_runs()
    r = scorer_bench.ratios(runs)
    result = {"machine": {"cores": 2, "cpu_model": "test", "memory_gib": 1, "date": "today", "python": "3",
                          "k6": "k6", "load_average_at_start": [0, 0, 0]},
              "duration_s_per_load": 15, "quick": False, "model_uri": "file:///m", "events_file": "e",
              "ratios": r, "goals": scorer_bench.goals(r), "runs": [m.row() for m in runs],
              "placement_cores": {"server": [0], "k6_and_valkey": [1]}}

    text = scorer_bench.markdown(result)

    assert ("| isolated | >= 4x naive at saturation, single events | 4.63x (ours, single events, 64 VUs [isolated] "
            "over naive, single events, 16 VUs [isolated]) | yes |") in text
    assert ("| shared | >= 4x naive at saturation, single events | 4.0x (ours (2 workers), single events, 128 VUs "
            "over naive, single events, 16 VUs) | yes |") in text
    assert ("| shared | ours (2 workers), single events | 2,600 (12.0) | 2,800 (20.0) | 3,700 (40.0) "
            "| **4,200** (80.0) |") in text
    assert "| isolated | naive, single events | **820** (35.0) | 800 (55.0) | 790 (95.0) | 780 (190.0) |" in text
    assert "| isolated | p99 <= 5 ms at 1000 events/s | 4.0 ms (ours at 1000/s [isolated]) | yes |" in text
    assert "cores [0]; k6 and valkey-server on cores [1]" in text
    assert ("0.360 ms of server CPU per event unpinned, 0.220 ms with its worker pinned to one core, 0.240 ms on a "
            "core of its own") in text


def test_isolated_rows_repeat_shared_comparisons_under_their_own_labels() -> None:
    isolated = scorer_bench.isolated_plan()
    shared = {load.label: load for load in scorer_bench.plan(quick=False, isolated=False)}

    by_label = {load.label: load for load in isolated}

    for load in isolated:
        assert load.placement == ISOLATED
        plain = load.label.removesuffix(" [isolated]")
        if load.group == "sweep":  # the isolated 32-VU row at another concurrency
            base = plain.rsplit(", ", 1)[0]
            assert replace(by_label[f"{base} [isolated]"], label=load.label, vus=load.vus, group="sweep") == load
        elif load.batch == 1:
            assert replace(shared[plain], label=load.label, placement=ISOLATED) == load


def test_the_sweep_gives_naive_and_each_compared_scorer_every_concurrency() -> None:
    levels: dict[tuple[str, str], list[int]] = {}
    for load in scorer_bench.plan(quick=False, isolated=True):
        if load.group in ("saturation", "sweep"):
            levels.setdefault((load.placement, load.server), []).append(load.vus)

    swept = {SHARED: {"naive", "ours_pinned", "ours_2_workers"}, ISOLATED: {"naive", "ours"}}
    for (placement, server), vus in levels.items():
        expected = [16, 32, 64, 128] if server in swept[placement] else [32]
        assert sorted(vus) == expected, (placement, server)


def test_rounds_alternate_their_order() -> None:
    a, b, c = (scorer_bench.Load(x, "ours", "closed") for x in "abc")
    assert [load.label for load in scorer_bench.in_rounds([a, b, c], 3)] == list("abccbaabc")
    assert scorer_bench.in_rounds([a, b], 1) == [a, b]


def test_merged_rounds_give_medians_sums_and_each_round() -> None:
    load = scorer_bench.Load("ours at 1000/s", "ours", "open", rate=1000)
    rounds = [replace(measured(load, eps, p99, cpu), dropped_iterations=drop, batch_sizes={"<=1": 10, "<=2": n})
              for eps, p99, cpu, drop, n in ((1000, 4.0, 0.8, 0, 1), (990, 9.0, 0.9, 7, 2), (1000, 5.0, 1.0, 0, 3))]
    other = measured(scorer_bench.Load("naive at 1000/s", "naive", "open", rate=1000), 900)

    merged = scorer_bench.merge_rounds([rounds[0], other, rounds[1], rounds[2]])

    assert [m.load.label for m in merged] == ["ours at 1000/s", "naive at 1000/s"]
    ours = merged[0]
    assert (ours.events_per_s, ours.p99_ms, ours.cpu_ms_per_event) == (1000, 5.0, 0.9)
    assert ours.dropped_iterations == 7 and ours.events_scored == sum(m.events_scored for m in rounds)
    assert ours.batch_sizes == {"<=1": 30, "<=2": 6}
    assert [r["p99_ms"] for r in ours.rounds] == [4.0, 9.0, 5.0]
    assert merged[1] is other  # a single round stays as measured


def test_the_markdown_shows_each_round() -> None:
    load = scorer_bench.Load("ours, single events", "ours", "closed")
    row = scorer_bench.merge_rounds([measured(load, 2500), measured(load, 2600)])[0].row()
    assert scorer_bench._rounds_cell(row) == "2,500 / 2,600"
    assert scorer_bench._rounds_text(2).startswith(", 2 rounds in alternating order")


def test_every_load_starts_on_an_empty_state_store_with_the_library_kept(tmp_path: Path) -> None:
    from valkey import Valkey

    from state_service.library import library_version
    from state_service.store import StateStore

    with ValkeyServer(tmp_path / "valkey") as server:
        with StateStore(server.admin_url) as admin:
            admin.ensure_library()
        client = Valkey.from_url(server.admin_url)
        client.mset({f"hs-key-{i}": b"x" * 100 for i in range(5000)})
        rewrites_before = int(client.info("persistence")["aof_rewrites"])
        scorer_bench.empty_state(server.admin_url)
        assert client.dbsize() == 0
        persistence = client.info("persistence")
        assert int(persistence["aof_rewrites"]) > rewrites_before
        assert not persistence["aof_rewrite_in_progress"]
        assert client.fcall_ro("hs_library_version", 0, library_version()) == library_version().encode()
        client.close()

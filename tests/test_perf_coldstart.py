"""Cold-start bookkeeping: a real scorer's start, split into phases from its own marks, adds up to the total."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace

import pytest

from functions.generator.config import GeneratorConfig
from functions.generator.events import write_jsonl
from perf.coldstart import (
    POINTS,
    ColdStarts,
    fork_launcher,
    fresh_launcher,
    load_events,
    phase_breakdown,
    timeline_points,
    top_level_import_times,
    total_seconds,
    unique_frames_mb,
)
from state_service.server import ValkeyServer

pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(replace(GeneratorConfig.preset("quick", seed=5), days=1), path, progress=False)
    return load_events(path, count=20)


def run_trial(valkey_url: str, events: list[dict], model_uri: str, mode: str):  # noqa: ANN201
    async def go():  # noqa: ANN202
        async with ColdStarts(valkey_url, events) as runner:
            if mode == "fresh":
                trial, _ = await runner.trial(fresh_launcher(), "fresh", model_uri)
                return trial
            zygote = await fork_launcher(model_uri, valkey_url)
            try:
                trial, _ = await runner.trial(zygote, "fork", model_uri)
                return trial
            finally:
                await zygote.stop()

    return asyncio.run(go())


def test_phases_of_a_real_fresh_cold_start_add_up_to_spawn_to_first_reply(
        valkey_server: ValkeyServer, events: list[dict], model_uri: str) -> None:
    trial = run_trial(valkey_server.url, events, model_uri, "fresh")
    assert list(trial.phases) == list(POINTS[1:])  # every mark of a fresh start was seen, in order
    assert sum(trial.phases.values()) == pytest.approx(trial.total_s, abs=1e-9)
    assert trial.total_s == pytest.approx(trial.points["reply"] - trial.points["spawn"], abs=1e-12)


def test_a_forked_instance_skips_the_prefork_phases_and_still_adds_up(
        valkey_server: ValkeyServer, events: list[dict], model_uri: str) -> None:
    trial = run_trial(valkey_server.url, events, model_uri, "fork")
    assert not {"start", "imports", "fetch", "checksum", "model_load", "warmup"} & set(trial.phases)
    assert {"serving", "valkey", "ready", "first_inference", "first_reply", "reply"} <= set(trial.phases)
    assert sum(trial.phases.values()) == pytest.approx(trial.total_s, abs=1e-9)


def test_model_marks_logged_together_are_spread_back_by_their_durations() -> None:
    marks = {"start": {"t": 100.0}, "imports": {"t": 102.0},
             "fetch": {"t": 102.5, "seconds": 0.3}, "checksum": {"t": 102.5, "seconds": 0.05},
             "model_load": {"t": 102.5, "seconds": 0.1}, "warmup": {"t": 102.6}, "valkey": {"t": 102.7}}
    points = timeline_points(99.9, marks, 102.8, 102.81, 102.83)
    assert points["model_load"] == 102.5
    assert points["checksum"] == pytest.approx(102.4)
    assert points["fetch"] == pytest.approx(102.35)
    phases = phase_breakdown(points)
    assert phases["model_load"] == pytest.approx(0.1)
    assert phases["checksum"] == pytest.approx(0.05)
    assert sum(phases.values()) == pytest.approx(total_seconds(points))


def test_a_timeline_without_spawn_or_reply_is_refused() -> None:
    with pytest.raises(ValueError, match="spawn and reply"):
        phase_breakdown({"start": 1.0, "reply": 2.0})


def test_import_self_times_are_summed_per_top_level_package() -> None:
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       100 |        100 |     torch._C\n"
              "import time:       500 |       2000 | torch\n"
              "import time:        50 |         70 | granian\n"
              "not an import line\n")
    assert top_level_import_times(stderr) == {"torch": 600.0, "granian": 50.0}


def test_pages_a_forked_child_writes_count_as_its_unique_memory() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        own = bytearray(os.urandom(24 * 2**20))  # noqa: F841 - resident while the parent measures
        os.write(write_end, b"x")
        time.sleep(30)
        os._exit(0)
    try:
        os.read(read_end, 1)
        (unique,) = unique_frames_mb([pid], [os.getpid()])
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert unique >= 24


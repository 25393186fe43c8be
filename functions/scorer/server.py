"""Process lifecycle: ``prefork`` (imports, model fetch, checksum, load, warm-up) then ``serve`` (Valkey, HTTP).

The split is what fork mode needs: a zygote runs ``prefork`` once and forks instances that only ``serve``.
``prefork`` opens no socket and starts no thread, so nothing is shared by accident across a fork. The HTTP server
is granian (a Rust server; the perf notes measured Flask at ~2.8x gunicorn's requests/s on it) in WSGI mode.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from functions.logs import configure_logging
from functions.scorer import affinity
from functions.scorer.config import ScorerConfig
from functions.scorer.phases import mark_phase

log = logging.getLogger("functions.scorer")


@dataclass
class Prepared:
    config: ScorerConfig
    predictor: object  # functions.model.package.Predictor, or None without MODEL_URI
    metrics_dir: Path | None = None  # multiprocess metrics files, created by prefork and removed after serving


def prefork(config: ScorerConfig | None = None) -> Prepared:
    """Everything that can be shared copy-on-write by forked instances."""
    configure_logging()
    mark_phase("start")
    import granian.server  # noqa: F401 - the server module too: ~14 ms a forked instance no longer pays
    import torch  # noqa: F401 - the bulk of a fresh start (about 2 s and 270 MB), timed as the "imports" phase

    config = config or ScorerConfig.from_env()
    metrics_dir = None
    if config.workers > 1:
        # Before the modules that define metrics are imported: their values must live in the shared files.
        from functions.scorer.metrics import use_multiprocess_metrics

        directory, created = use_multiprocess_metrics()
        metrics_dir = directory if created else None

    from functions.model.package import compile_step, load_predictor, warm_up
    from functions.model.threads import set_intra_op_threads
    from functions.scorer import app, service  # noqa: F401 - imported here so forked instances inherit them

    # One intra-op thread, set before the pool starts: forking after a multi-threaded pool has started deadlocks.
    set_intra_op_threads(config.torch_threads)
    mark_phase("imports")
    predictor = None
    if config.model_uri:
        predictor = load_predictor(config.model_uri, cache_dir=config.model_cache_dir)
        for phase in ("fetch", "checksum", "model_load"):
            mark_phase(phase, seconds=predictor.timings.get(phase))
        if config.compile_step:
            predictor.compiled_step = compile_step(predictor.model)
        predictor.use_numpy_step(config.numpy_step_max)
        warm_up(predictor)
        mark_phase("warmup")
        log.info("model loaded", extra={"model": predictor.namespace, "timings": predictor.timings})
    else:
        log.warning("MODEL_URI is not set: readiness stays false and requests get 503")
    return Prepared(config, predictor, metrics_dir)


def build_service(prepared: Prepared):  # noqa: ANN201 - ScorerService, imported late to keep prefork lean
    """Per-process resources: a fresh Valkey connection pool and fresh random state (after fork, both must be new)."""
    import torch

    from functions.scorer.service import ScorerService
    from state_service.store import StateStore

    random.seed()
    torch.seed()
    hidden_size = prepared.predictor.spec.hidden_size if prepared.predictor else 64
    store = StateStore.from_env(hidden_size=hidden_size)  # VALKEY_URL, VALKEY_TIMEOUT_S, VALKEY_POOL_SIZE, ...
    service = ScorerService(prepared.config, prepared.predictor, store)
    ready, detail = service.ready()
    mark_phase("valkey", ready=ready, detail=detail)
    return service


def tune_gc(gen0_threshold: int) -> None:
    """Freeze what start-up allocated (the model, torch, the app) out of the collector's reach, and collect the
    young generation less often. Full collections otherwise walk torch's whole heap; frozen objects are also never
    written by the collector, which keeps pages shared after a fork. No collection first: in a forked instance it
    would walk, and copy, every page shared with the zygote. 0 leaves the interpreter's settings alone."""
    if gen0_threshold <= 0:
        return
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def serve(prepared: Prepared) -> int:
    """Serve HTTP on ``$PORT`` in this process until SIGTERM, then drain in-flight requests and return 0.

    Instance settings (``PORT``, ``K_*``, tuning) are read again here: in fork mode one zygote prepares once and
    every forked instance gets its own environment. The model stays the one ``prefork`` loaded."""
    from granian import Granian
    from granian.constants import Interfaces

    from functions.scorer.app import create_app
    from functions.scorer.metrics import MULTIPROC_ENV

    config = ScorerConfig.from_env()
    prepared = Prepared(config, prepared.predictor, prepared.metrics_dir)
    if config.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        log.warning("SCORER_WORKERS > 1 in an instance prepared for one worker: /metrics shows one worker's values")
    cpus = affinity.allowed_cpus()
    pin = affinity.should_pin(config.pin_workers, config.workers, cpus)
    # granian forks its worker from this process: the loaded model is inherited, not reloaded.
    multiprocessing.set_start_method("fork", force=True)
    started = multiprocessing.Value("i", 0)  # workers started so far, shared across the fork: each takes a core

    def load_app(_target: str):  # noqa: ANN202 - runs inside the worker process
        if pin:
            with started.get_lock():
                index = started.value
                started.value += 1
            cpu = affinity.worker_cpu(index, cpus)
            # Before granian starts this worker's threads, which then inherit the core.
            affinity.pin_threads(os.getpid(), {cpu})
            log.info("worker pinned", extra={"worker": index, "cpu": cpu, "allowed": cpus})
        app = create_app(build_service(prepared))
        tune_gc(config.gc_gen0_threshold)
        return app

    server = Granian(
        target="functions.scorer",
        address="0.0.0.0",
        port=config.port,
        interface=Interfaces.WSGI,
        workers=config.workers,
        blocking_threads=config.http_threads,
        backlog=2048,
        log_enabled=False,
    )
    log.info("serving", extra={"port": config.port, "workers": config.workers, "threads": config.http_threads,
                               "metrics_dir": os.environ.get(MULTIPROC_ENV)})
    try:
        server.serve(target_loader=load_app)
    finally:
        if prepared.metrics_dir is not None:
            shutil.rmtree(prepared.metrics_dir, ignore_errors=True)
    return 0

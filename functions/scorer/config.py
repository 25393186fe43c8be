"""The scorer's configuration, read once from the environment as Knative passes it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value not in ("0", "false", "off", "no")


@dataclass(frozen=True)
class ScorerConfig:
    port: int = 8080
    model_uri: str = ""
    model_cache_dir: Path | None = None
    max_batch: int = 256  # events per micro-batch: past ~256 the step's per-event cost stops falling
    http_threads: int = 32  # request threads: concurrent requests are what micro-batching gathers
    workers: int = 1  # Knative scales out by instances; one worker per instance keeps one batcher per instance
    pin_workers: str = "auto"  # functions/scorer/affinity.py: each worker on one core (auto: when the cores are ours)
    torch_threads: int = 1  # torch's and BLAS's intra-op threads: batches are small, more would fight the HTTP threads
    microbatch: bool = True
    compile_step: bool = False  # TorchScript-trace the step at start (~50 ms): no gain measured end to end
    # Batches of up to this many events take the numpy form of the step (functions/model/numpy_step.py): below it a
    # torch step is mostly per-op dispatch. At 64 events both cost the same per event. 0 = torch for every batch.
    numpy_step_max: int = 64
    conflict_attempts: int = 8
    retry_after_s: int = 1
    # Allocations between young-generation collections (CPython's default is 700). A request allocates thousands
    # of short-lived objects, and collections, mostly of a heap that holds torch, were ~12 % of batch CPU.
    gc_gen0_threshold: int = 20_000
    service: str = "scorer"
    revision: str = "scorer-local"
    configuration: str = "scorer"

    @classmethod
    def from_env(cls) -> ScorerConfig:
        env = os.environ
        cache = env.get("MODEL_CACHE_DIR")
        return cls(
            port=_int("PORT", 8080),
            model_uri=env.get("MODEL_URI", ""),
            model_cache_dir=Path(cache) if cache else None,
            max_batch=_int("SCORER_MAX_BATCH", cls.max_batch),
            http_threads=_int("SCORER_HTTP_THREADS", cls.http_threads),
            workers=_int("SCORER_WORKERS", cls.workers),
            pin_workers=env.get("SCORER_PIN_WORKERS", "").strip().lower() or cls.pin_workers,
            torch_threads=_int("TORCH_NUM_THREADS", cls.torch_threads),
            microbatch=_flag("SCORER_MICROBATCH", True),
            compile_step=_flag("SCORER_COMPILE_STEP", cls.compile_step),
            numpy_step_max=_int("SCORER_NUMPY_STEP_MAX", cls.numpy_step_max),
            conflict_attempts=_int("SCORER_CONFLICT_ATTEMPTS", cls.conflict_attempts),
            retry_after_s=_int("SCORER_RETRY_AFTER_S", cls.retry_after_s),
            gc_gen0_threshold=_int("SCORER_GC_GEN0_THRESHOLD", cls.gc_gen0_threshold),
            service=env.get("K_SERVICE", cls.service),
            revision=env.get("K_REVISION", cls.revision),
            configuration=env.get("K_CONFIGURATION", cls.configuration),
        )

    @property
    def source(self) -> str:
        """The ``source`` of reply events: which service and revision scored it."""
        return f"/knative/{self.service}/{self.revision}"

"""Model-as-a-package, the Predictor side: weights as safetensors plus the manifest's feature spec.

The registry (``functions.registry``) stores and verifies files; this module knows which files make a model and
turns a verified package back into a ready ``FraudGRU``. Never pickle: safetensors holds plain tensors only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from functions.model.features import (
    EntityContext,
    EventColumns,
    FeatureArrays,
    Features,
    FeatureSpec,
    encode_features,
)
from functions.model.gru import FraudGRU, StepArrays, StepResult

if TYPE_CHECKING:
    from functions.model.numpy_step import NumpyStep

WEIGHTS_FILE = "model.safetensors"


class ModelPackageError(Exception):
    """A package that does not hold a loadable model (missing weights, spec mismatch)."""


def model_files(model: FraudGRU) -> dict[str, bytes]:
    """The files that make a package: the weights, contiguous and detached."""
    tensors = {name: t.detach().contiguous().clone() for name, t in model.state_dict().items()}
    return {WEIGHTS_FILE: save(tensors)}


@dataclass
class Predictor:
    """A loaded, verified model and what the scorer needs to know about it."""

    model: FraudGRU
    name: str
    version: str
    manifest: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    compiled_step: Callable[[torch.Tensor, torch.Tensor, Features], StepResult] | None = None
    # The numpy form of the step (functions/model/numpy_step.py) and the largest batch it takes; 0 = never.
    small_batch_step: NumpyStep | None = None
    small_batch_max: int = 0

    def step(self, cards: torch.Tensor, merchants: torch.Tensor, features: Features) -> StepResult:
        """The model's pure step: small batches through its numpy form once ``use_numpy_step`` has run, the others
        through torch (the compiled form once ``compile_step`` has run)."""
        if self.small_batch_step is not None and len(features) <= self.small_batch_max:
            return self.small_batch_step(cards, merchants, features)
        with torch.inference_mode():
            return (self.compiled_step or self.model.step)(cards, merchants, features)

    def step_arrays(self, cards: np.ndarray, merchants: np.ndarray, features: FeatureArrays) -> StepArrays:
        """``step`` on numpy arrays, as the scorer folds: small batches never become tensors; the others are
        viewed as tensors (no copy) for torch."""
        if self.small_batch_step is not None and len(features) <= self.small_batch_max:
            return self.small_batch_step.arrays(cards, merchants, features)
        return self.step(torch.from_numpy(cards), torch.from_numpy(merchants), features.to_torch()).arrays()

    def use_numpy_step(self, max_batch: int) -> None:
        """Batches of up to ``max_batch`` events take the numpy form of the step; 0 keeps torch for all."""
        from functions.model.numpy_step import NumpyStep

        self.small_batch_step = NumpyStep(self.model) if max_batch > 0 else None
        self.small_batch_max = max_batch

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    @property
    def namespace(self) -> str:
        """State keys carry it, so a new model version never reads an old version's states."""
        return f"{self.name}@{self.version}"


def build_model(directory: Path, manifest: dict[str, Any]) -> FraudGRU:
    """A FraudGRU from a verified package directory."""
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelPackageError(f"package has no {WEIGHTS_FILE}")
    try:
        spec = FeatureSpec.from_dict(manifest["feature_spec"])
    except (KeyError, TypeError) as exc:
        raise ModelPackageError(f"manifest has no usable feature_spec: {exc}") from None
    model = FraudGRU(spec)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise ModelPackageError(f"weights do not match the feature spec: {exc}") from None
    return model.eval()


def load_predictor(model_uri: str, *, cache_dir: Path | None = None) -> Predictor:
    """Fetch (file or S3), verify every checksum, and build the model. Phase timings are kept for cold starts."""
    from functions.registry import load_package

    package = load_package(model_uri, cache_dir=cache_dir)
    started = time.perf_counter()
    model = build_model(package.directory, package.manifest)
    timings = dict(package.timings)
    timings["model_load"] = time.perf_counter() - started
    return Predictor(model, package.ref.name, package.ref.version, package.manifest, timings)


class _TensorStep(torch.nn.Module):
    """``FraudGRU.step`` with plain tensor arguments, so that TorchScript can trace it."""

    def __init__(self, model: FraudGRU) -> None:
        super().__init__()
        self.model = model

    def forward(self, cards: torch.Tensor, merchants: torch.Tensor, event_numeric: torch.Tensor,
                channel: torch.Tensor, mcc: torch.Tensor, country: torch.Tensor, card_numeric: torch.Tensor,
                merchant_numeric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        features = Features(event_numeric, channel, mcc, country, card_numeric, merchant_numeric)
        result = self.model.step(cards, merchants, features)
        return result.card_states, result.merchant_states, result.scores, result.logits


def compile_step(model: FraudGRU) -> Callable[[torch.Tensor, torch.Tensor, Features], StepResult]:
    """The same pure step, traced and frozen by TorchScript: one call into torch instead of ~15 op dispatches, so
    ~20 us less per call at the scorer's small batches (84 against 64 us at batch 1) and one GIL release instead
    of one per op (each release lets another request thread in). Results are bit for bit the eager step's here; the
    parity test holds them within 1e-6. Tracing takes ~50 ms: ``check_trace=False`` skips torch's own re-run
    check, which imports torch.distributed and sympy (0.7 s of a fresh start) to compare what the test compares."""
    example = _example_features(model.spec, 3)
    hidden = torch.zeros(3, model.spec.hidden_size)
    with torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(_TensorStep(model).eval(), (hidden, hidden, *_fields(example)),
                                                  check_trace=False))
        # The profiling executor specialises the graph over its first calls: done here, before a zygote forks.
        for _ in range(3):
            traced(hidden, hidden, *_fields(example))

    def step(cards: torch.Tensor, merchants: torch.Tensor, features: Features) -> StepResult:
        return StepResult(*traced(cards, merchants, *_fields(features)))

    return step


def _fields(features: Features) -> tuple[torch.Tensor, ...]:
    return (features.event_numeric, features.channel, features.mcc, features.country, features.card_numeric,
            features.merchant_numeric)


def _example_features(spec: FeatureSpec, n: int) -> Features:
    events = EventColumns(np.ones(n), np.full(n, 1.7e9), np.full(n, 5411), np.ones(n, np.int64),
                          np.ones(n, np.int64))
    return encode_features(events, EntityContext.unseen(n), EntityContext.unseen(n), spec)


def warm_up(predictor: Predictor) -> None:
    """Run a step of each form the predictor uses, so the first real request does not pay for lazy initialisation
    (inside torch, and numpy's first BLAS calls)."""
    spec = predictor.spec
    for n in {1, predictor.small_batch_max + 1}:
        events = EventColumns(np.ones(n), np.zeros(n), np.full(n, -1), np.zeros(n, np.int64), np.zeros(n, np.int64))
        features = encode_features(events, EntityContext.unseen(n), EntityContext.unseen(n), spec)
        hidden = torch.zeros(n, spec.hidden_size)
        predictor.step(hidden, hidden, features)

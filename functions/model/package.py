"""Model-as-a-package, the Predictor side: weights as safetensors plus the manifest's feature spec.

The registry (``functions.registry``) stores and verifies files; this module knows which files make a model and
turns a verified package back into a ready ``FraudGRU``. Never pickle: safetensors holds plain tensors only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from functions.model.features import EntityContext, EventColumns, FeatureSpec, encode_features
from functions.model.gru import FraudGRU

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


def warm_up(model: FraudGRU) -> None:
    """Run one step so the first real request does not pay for lazy initialisation inside torch."""
    events = EventColumns(np.ones(1), np.zeros(1), np.full(1, -1), np.zeros(1, np.int64), np.zeros(1, np.int64))
    features = encode_features(events, EntityContext.unseen(1), EntityContext.unseen(1), model.spec)
    hidden = torch.zeros(1, model.spec.hidden_size)
    with torch.inference_mode():
        model.step(hidden, hidden, features)

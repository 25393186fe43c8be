"""The Trainer: generate or read a stream, train the GRU and the stateless baseline, evaluate on a later held-out
period, and publish the model package with its manifest."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from functions.model import FeatureSpec, FraudGRU
from functions.model.package import model_files
from functions.trainer.baseline import baseline_scores, train_baseline
from functions.trainer.metrics import quality, recall_by_scenario
from functions.trainer.stream import StreamData, build_stream
from functions.trainer.tbptt import run_stream


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "default"
    seed: int = 7
    epochs: int = 6
    learning_rate: float = 3e-3
    hidden_size: int = 64
    burn_in_days: int = 14  # S2/S3 frauds build up over the first weeks: no loss there, states still warm up
    train_fraction: float = 0.65  # of the days after burn-in; the rest, after a gap, is the held-out test period
    gap_days: int = 7  # labels arrive late: the test period starts a label delay after training ends
    pos_weight: float = 8.0
    baseline_epochs: int = 8
    threads: int = 2

    @classmethod
    def quick(cls, seed: int = 7) -> TrainConfig:
        return cls(preset="quick", seed=seed, epochs=3, baseline_epochs=4)


@dataclass
class TrainingReport:
    metrics: dict[str, float]
    by_scenario: dict[str, dict[str, float]]
    data_window: dict[str, Any]
    training_seconds: float
    events: int
    model_uri: str = ""
    lifecycle: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        m = self.metrics
        lines = [
            "| model | AUC-PR | recall @ 1% FPR |",
            "| --- | --- | --- |",
            f"| GRU (card + merchant state) | {m['auc_pr']:.3f} | {m['recall_at_1pct_fpr']:.3f} |",
            f"| stateless per-event baseline | {m['baseline_auc_pr']:.3f} | {m['baseline_recall_at_1pct_fpr']:.3f} |",
            "",
            "| scenario | GRU recall | baseline recall |",
            "| --- | --- | --- |",
        ]
        for name, row in sorted(self.by_scenario.items()):
            lines.append(f"| {name} | {row['gru']:.3f} | {row['baseline']:.3f} |")
        return "\n".join(lines)


def load_stream(config: TrainConfig, data_path: Path | None) -> tuple[Any, dict[str, Any]]:
    from functions import generator

    if data_path is not None:
        columns = generator.read_transactions_jsonl(data_path)
        return columns, {"source": str(data_path)}
    gen_config = generator.GeneratorConfig.preset(config.preset, seed=config.seed)
    columns, _meta = generator.generate_columns(gen_config)
    return columns, {"source": f"generator preset {config.preset!r}, seed {config.seed}"}


def split_days(data: StreamData, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, int, int]:
    last_day = int(data.day.max())
    cut = config.burn_in_days + int((last_day + 1 - config.burn_in_days) * config.train_fraction)
    test_start = cut + config.gap_days
    if test_start > last_day:
        raise ValueError(
            f"the stream covers {last_day + 1} days: too short for {config.burn_in_days} burn-in days, "
            f"a training period and a {config.gap_days}-day gap before a test period"
        )
    train = (data.day >= config.burn_in_days) & (data.day < cut)
    test = data.day >= test_start
    return train, test, cut, test_start


def train_gru(data: StreamData, train_mask: np.ndarray, cut_day: int, config: TrainConfig) -> FraudGRU:
    torch.manual_seed(config.seed)
    model = FraudGRU(FeatureSpec(hidden_size=config.hidden_size))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(config.pos_weight))
    target = torch.from_numpy(data.is_fraud.astype(np.float32))
    windows = [w for w in data.windows() if data.day[w[0]] < cut_day]
    progress = tqdm(total=config.epochs * len(windows), desc="training GRU", unit="day", leave=False)

    def learn(logits: torch.Tensor, window: np.ndarray) -> None:
        mask = torch.from_numpy(train_mask[window])
        if bool(mask.any()):
            optimiser.zero_grad()
            loss = loss_fn(logits[mask], target[torch.from_numpy(window)][mask])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            progress.set_postfix(loss=f"{loss.item():.4f}")
        progress.update()

    model.train()
    for _ in range(config.epochs):
        run_stream(model, data, windows=windows, on_window=learn, grad=True)
    progress.close()
    return model.eval()


def train(config: TrainConfig, data_path: Path | None = None) -> tuple[FraudGRU, TrainingReport]:
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    columns, source = load_stream(config, data_path)
    spec = FeatureSpec(hidden_size=config.hidden_size)
    data = build_stream(columns, spec)
    train_mask, test_mask, cut, test_start = split_days(data, config)
    model = train_gru(data, train_mask, cut, config)
    baseline = train_baseline(
        spec, data.features, data.is_fraud, np.flatnonzero(train_mask), epochs=config.baseline_epochs,
        learning_rate=config.learning_rate, pos_weight=config.pos_weight, seed=config.seed,
    )
    training_seconds = time.perf_counter() - started
    gru_scores = run_stream(model, data)[test_mask]
    base_scores = baseline_scores(baseline, data.features)[test_mask]
    labels = data.is_fraud[test_mask]
    gru_quality, base_quality = quality(labels, gru_scores), quality(labels, base_scores)
    gru_by, base_by = (recall_by_scenario(labels, s, data.scenario[test_mask]) for s in (gru_scores, base_scores))
    report = TrainingReport(
        metrics={
            **gru_quality,
            "baseline_auc_pr": base_quality["auc_pr"],
            "baseline_recall_at_1pct_fpr": base_quality["recall_at_1pct_fpr"],
        },
        by_scenario={name: {"gru": gru_by[name], "baseline": base_by.get(name, 0.0)} for name in gru_by},
        data_window={
            **source,
            "events": len(data),
            "days": int(data.day.max()) + 1,
            "burn_in_days": config.burn_in_days,
            "train_days": [config.burn_in_days, cut],
            "test_days": [test_start, int(data.day.max()) + 1],
            "test_events": int(test_mask.sum()),
            "test_frauds": int(labels.sum()),
        },
        training_seconds=training_seconds,
        events=len(data),
    )
    return model, report


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "hiddenstate": version("hiddenstate"),
    }


def manifest_fields(model: FraudGRU, config: TrainConfig, report: TrainingReport) -> dict[str, Any]:
    spec = model.spec
    return {
        "hidden_size": spec.hidden_size,
        "state_dtype": spec.state_dtype,
        "layout_version": spec.layout_version,
        "feature_spec": spec.to_dict(),
        "libraries": library_versions(),
        "training": {
            "seed": config.seed,
            "data_window": report.data_window,
            "epochs": config.epochs,
            "learning_rate": config.learning_rate,
            "config": asdict(config),
        },
        "metrics": report.metrics,
        "metrics_by_scenario": report.by_scenario,
        "lifecycle": {"training_seconds": round(report.training_seconds, 3)},
    }


def publish(model: FraudGRU, config: TrainConfig, report: TrainingReport, registry_uri: str, name: str,
            alias: str) -> str:
    """Write the package, load it back to time a restore, record that, then move the alias (after which the
    manifest is frozen). Returns the model URI the scorer accepts."""
    from functions.model.package import load_predictor
    from functions.registry import open_registry

    registry = open_registry(registry_uri)
    ref = registry.publish(name, model_files(model), manifest_fields(model, config, report))
    started = time.perf_counter()
    load_predictor(ref.uri())
    report.lifecycle["load_seconds"] = round(time.perf_counter() - started, 6)
    registry.update_lifecycle(name, ref.version, load_seconds=report.lifecycle["load_seconds"])
    registry.set_alias(name, alias, ref.version)
    return ref.uri(alias)

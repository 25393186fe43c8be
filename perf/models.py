"""Models for measurements that need a real package but not a trained one (cost does not depend on weights)."""

from __future__ import annotations

from pathlib import Path


def publish_untrained_model(registry_dir: Path, seed: int = 11, purpose: str = "untrained model") -> str:
    """Publish a seeded, untrained FraudGRU as ``fraud-gru@champion`` in a file registry; return its model URI.

    Its manifest says what it is: the metrics are zero and the data window names the purpose.
    """
    import torch

    from functions.model import FeatureSpec, FraudGRU
    from functions.model.package import model_files
    from functions.registry import open_registry

    torch.manual_seed(seed)
    model = FraudGRU(FeatureSpec())
    spec = model.spec
    fields = {
        "hidden_size": spec.hidden_size, "state_dtype": spec.state_dtype, "layout_version": spec.layout_version,
        "feature_spec": spec.to_dict(),
        "training": {"seed": seed, "data_window": {"source": purpose}, "epochs": 1, "learning_rate": 1e-3},
        "metrics": {"recall_at_1pct_fpr": 0.0, "baseline_recall_at_1pct_fpr": 0.0, "auc_pr": 0.0,
                    "baseline_auc_pr": 0.0},
        "lifecycle": {"training_seconds": 0.0},
    }
    ref = open_registry(registry_dir.as_uri()).publish("fraud-gru", model_files(model), fields, alias="champion")
    return ref.uri("champion")

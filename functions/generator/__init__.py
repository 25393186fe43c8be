"""Seeded, offline synthetic card transactions: the handbook's base layer and scenarios S1-S3, fraud that only a
sequence reveals, scheduled drift, delayed labels and a card lifecycle. See the README section "Synthetic
transactions".

>>> from functions.generator import GeneratorConfig, generate_columns
>>> columns, meta = generate_columns(GeneratorConfig.preset("tiny", seed=7))
>>> bool(len(columns) > 1000 and columns.is_fraud.any())
True
"""

from functions.generator.columns import GroundTruthMeta, TransactionColumns, generate_columns
from functions.generator.config import (
    DriftChange,
    GeneratorConfig,
    GeneratorConfigError,
    LabelDelay,
    PatternRates,
)
from functions.generator.events import (
    StreamFileError,
    default_truth_path,
    iter_events,
    read_transactions_jsonl,
    read_truth_meta,
    write_jsonl,
)

__all__ = [
    "DriftChange", "GeneratorConfig", "GeneratorConfigError", "GroundTruthMeta", "LabelDelay", "PatternRates",
    "StreamFileError", "TransactionColumns", "default_truth_path", "generate_columns", "iter_events",
    "read_transactions_jsonl", "read_truth_meta", "write_jsonl",
]

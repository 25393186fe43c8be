"""The Trainer: truncated BPTT over interleaved card and merchant sequences, evaluated against a stateless
baseline, published as a model package. Run it with ``python -m functions.trainer`` or ``hiddenstate train``."""

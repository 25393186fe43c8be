"""The scoring function: CloudEvents in, one GRU step on Valkey state, score CloudEvents out.

``python -m functions.scorer`` runs it; the local runtime's fork mode calls ``prefork()`` once and ``serve()`` in
each forked instance.
"""

from functions.scorer.server import prefork, serve

__all__ = ["prefork", "serve"]

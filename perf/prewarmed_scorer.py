"""The scorer with the two ``prefork()`` additions that perf/COLDSTART.md proposes, to measure them in fork mode
without changing the scorer: ``granian`` imported and numpy's global generator seeded once before any fork.

Fork-mode instances paid both in every child (``perf.fork_probe``): ``serve()`` imported granian (~14 ms; since commit
3386764 the scorer's ``prefork()`` imports it, so that half is now a no-op here), and the zygote's re-initialisation
seeds ``numpy.random``, whose first seed in a process costs ~10-20 ms (the children still re-seed from
``os.urandom``; only the one-off set-up moves into the zygote). ``perf.coldstart``
runs it as a second zygote: ``python -m knative.local.serving.zygote perf.prewarmed_scorer``.
"""

from __future__ import annotations

from functions.scorer import prefork as scorer_prefork
from functions.scorer import serve
from functions.scorer.server import Prepared

__all__ = ["prefork", "serve"]


def prefork() -> Prepared:
    prepared = scorer_prefork()
    import numpy
    from granian import Granian  # noqa: F401 - imported here so every forked instance inherits it

    numpy.random.seed(0)
    return prepared

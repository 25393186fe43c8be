"""The one-machine runtime: the same knative/ manifests, run as local processes with no cluster.

``serving`` reproduces Knative Serving's data path (activator, containerConcurrency, KPA autoscaler, scale to
zero) and ``eventing`` reproduces the in-memory broker and triggers. ``runtime`` starts everything together and
``cli`` exposes it as ``hiddenstate up | status | down``.
"""

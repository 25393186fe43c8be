"""Knative Serving on one machine: per-service activator/router, KPA autoscaler, and instances (fresh or fork)."""

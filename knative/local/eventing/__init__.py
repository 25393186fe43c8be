"""The eventing half of the one-machine runtime: broker ingress, Trigger filters, delivery with retries and dead
letters, reply routing (``LocalBroker``), and the ``send`` and ``tail`` commands."""

from knative.local.eventing.broker import LocalBroker
from knative.local.eventing.errors import EventingConfigError, UnsupportedFilter

__all__ = ["EventingConfigError", "LocalBroker", "UnsupportedFilter"]

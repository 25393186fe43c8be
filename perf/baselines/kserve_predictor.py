"""The KServe reference: the naive baseline's work per event inside KServe's own model server.

The perf notes report a KServe 0.21 custom predictor with the same GRU doing GET/step/SET at ~430 events/s. This
reproduces it with the ``kserve`` package as its documentation writes a custom predictor: a ``kserve.Model`` whose
synchronous ``predict`` does the work of ``perf.baselines.naive_step``, served by ``kserve.ModelServer`` (FastAPI on
uvicorn) with one worker process per core, like the naive baseline's gunicorn.

KServe decodes the CloudEvent itself (binary or structured mode, with its pinned CloudEvents SDK v1) and hands
``predict`` the event's data and the request headers; it answers with a CloudEvent whose data is ``predict``'s
dict. So it takes the same requests as our scorer at ``POST /v1/models/<name>:predict``.

It needs an environment of its own, because KServe 0.21 pins the CloudEvents SDK v1 and this project uses v2:
``perf/kserve_env.py`` builds it, and imports here are limited to what that environment has.

Run: ``<kserve env>/bin/python -m perf.baselines.kserve_predictor`` with ``PORT`` (default 8080), ``VALKEY_URL``,
``MODEL_URI``, ``KSERVE_WORKERS`` (default: one per core), ``KSERVE_MODEL_NAME`` (default ``fraud-gru``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kserve
import torch
import valkey
from kserve.errors import InvalidInput

from functions.model.package import Predictor, load_predictor
from perf.baselines.naive_step import score_one
from state_service.settings import DEFAULT_URL

DEFAULT_MODEL_NAME = "fraud-gru"


@dataclass(frozen=True)
class ReferenceTransaction:
    """The fields the naive step reads, taken from KServe's decoded event."""

    card_id: str
    merchant_id: str
    amount: float
    event_time_s: float
    mcc: int | None = None
    channel: str | None = None
    country: str | None = None


def reference_transaction(data: Any, headers: dict[str, str] | None) -> ReferenceTransaction:
    """The event's data plus its time. ``predict`` sees the request headers but not a structured event's
    attributes, so only binary mode (``ce-time``) carries the time this far; the benchmark sends binary mode. A
    field missing or of the wrong type is KServe's ``InvalidInput`` (HTTP 400)."""
    if not isinstance(data, dict):
        raise InvalidInput("the event's data must be a JSON object")
    time = (headers or {}).get("ce-time")
    if not time:
        raise InvalidInput("no ce-time header: send the event in binary mode")
    try:
        return ReferenceTransaction(
            card_id=str(data["card_id"]), merchant_id=str(data["merchant_id"]), amount=float(data["amount"]),
            event_time_s=datetime.fromisoformat(time).timestamp(), mcc=data.get("mcc"),
            channel=data.get("channel"), country=data.get("country"))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"bad transaction: {exc!r}") from None


class FraudGRUModel(kserve.Model):
    """One worker's model: the package from ``MODEL_URI`` and a Valkey client."""

    def __init__(self, name: str, model_uri: str, valkey_url: str) -> None:
        super().__init__(name)
        self.model_uri, self.valkey_url = model_uri, valkey_url
        self.predictor: Predictor | None = None
        self.client: valkey.Valkey | None = None

    def load(self) -> bool:
        self.predictor = load_predictor(self.model_uri)
        valkey.Valkey.from_url(self.valkey_url, socket_timeout=0.5).ping()
        self.ready = True
        return self.ready

    def __getstate__(self) -> dict[str, Any]:
        # KServe's worker processes are spawned and get the loaded model pickled; each opens its own connections.
        return {**self.__dict__, "client": None}

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        assert self.predictor is not None, "predict before load"
        if self.client is None:
            torch.set_num_threads(1)  # one worker per core: more intra-op threads would only fight each other
            self.client = valkey.Valkey.from_url(self.valkey_url, socket_timeout=0.5)
        t = reference_transaction(payload, headers)
        result = score_one(self.predictor, self.client, t)
        return {"card_id": t.card_id, "merchant_id": t.merchant_id, "score": result.score,
                "model": self.predictor.namespace, "card_seq": result.card_seq, "merchant_seq": result.merchant_seq}


def main() -> None:
    model_uri = os.environ.get("MODEL_URI")
    if not model_uri:
        sys.exit("error: MODEL_URI is not set (a model URI as printed by the trainer, file:// or s3://)")
    # KServe answers with a CloudEvent of these attributes (its defaults name KServe, not the scorer's contract).
    os.environ.setdefault("CE_TYPE", "dev.hiddenstate.score")
    os.environ.setdefault("CE_SOURCE", f"/knative/{os.environ.get('K_SERVICE', 'kserve-reference')}")
    model = FraudGRUModel(os.environ.get("KSERVE_MODEL_NAME", DEFAULT_MODEL_NAME), model_uri,
                          os.environ.get("VALKEY_URL") or DEFAULT_URL)
    model.load()
    kserve.ModelServer(http_port=int(os.environ.get("PORT", "8080")),
                       workers=int(os.environ.get("KSERVE_WORKERS") or os.cpu_count() or 1),
                       enable_grpc=False, enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()

"""The stream as contract CloudEvents: transactions and labels interleaved in time order, and its JSON-lines file.

``iter_events`` builds every event with the contract's own builders. ``write_jsonl`` writes the same events
through an orjson fast path (the SDK costs ~25 us an event); a test proves both give equal JSON for every event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from cloudevents.core.v1.event import CloudEvent
from tqdm import tqdm

from functions.contract import (
    JSON_CONTENT_TYPE,
    LABEL_TYPE,
    SPECVERSION,
    TRANSACTION_TYPE,
    Label,
    label_event,
    transaction_event,
)
from functions.generator.columns import GroundTruthMeta, TransactionColumns, generate_columns
from functions.generator.config import GeneratorConfig

TRANSACTION_SOURCE = "/hiddenstate/generator"
LABEL_SOURCE = "/hiddenstate/labels"
_CHUNK = 20_000


class StreamFileError(ValueError):
    """A JSON-lines stream that cannot be read back; the message names the file and line."""


@dataclass(frozen=True)
class StreamOrder:
    """Which event comes next: ``is_label`` and the transaction row it is about, plus the label's time."""

    is_label: np.ndarray
    row: np.ndarray
    time_s: np.ndarray

    def __len__(self) -> int:
        return len(self.row)


def stream_order(columns: TransactionColumns, end_s: float, *, labels: bool = True,
                 genuine_labels: bool = True) -> StreamOrder:
    """Merge transactions with the labels that become available before ``end_s``.

    Ties are broken by event id: a label's id ("label-tx-...") sorts before any transaction id ("tx-..."), and
    both kinds follow row order. A label is always strictly later than its transaction.
    """
    n = len(columns)
    rows = np.arange(n)
    if labels:
        wanted = columns.label_available_s < end_s
        if not genuine_labels:
            wanted &= columns.is_fraud
        label_rows = np.flatnonzero(wanted)
    else:
        label_rows = np.empty(0, np.int64)
    is_label = np.concatenate([np.zeros(n, bool), np.ones(len(label_rows), bool)])
    row = np.concatenate([rows, label_rows])
    time_s = np.concatenate([columns.time_s, columns.label_available_s[label_rows]])
    order = np.lexsort((row, ~is_label, time_s))
    return StreamOrder(is_label[order], row[order], time_s[order])


def _time_texts(time_s: np.ndarray) -> list[str]:
    text = np.datetime_as_string(np.round(time_s).astype("datetime64[s]"), unit="s")
    return [t + "Z" for t in text.tolist()]


def contract_events(columns: TransactionColumns, order: StreamOrder) -> Iterator[CloudEvent]:
    """Every event built by the contract's builders (validated on construction)."""
    for is_label, row, time_s in zip(order.is_label.tolist(), order.row.tolist(), order.time_s.tolist(),
                                     strict=True):
        event_id, time_text, data = columns.transaction(row)
        if is_label:
            labeled_at = datetime.fromtimestamp(time_s, UTC)
            yield label_event(Label(event_id, data["card_id"], bool(columns.is_fraud[row]), labeled_at),
                              source=LABEL_SOURCE)
        else:
            yield transaction_event(event_id, data, time=time_text, source=TRANSACTION_SOURCE,
                                    partitionkey=data["card_id"])


def iter_events(config: GeneratorConfig, *, labels: bool = True, genuine_labels: bool = True) -> Iterator[CloudEvent]:
    """Transactions and labels (fraud at report time; genuine at maturity unless ``genuine_labels=False``)
    interleaved in time order, as contract CloudEvents."""
    columns, meta = generate_columns(config)
    yield from contract_events(columns, stream_order(columns, meta.end_s, labels=labels,
                                                     genuine_labels=genuine_labels))


def json_lines(columns: TransactionColumns, order: StreamOrder) -> Iterator[bytes]:
    """The structured-mode JSON of every event (no newline), equal to the contract's ``structured_json``."""
    for lo in range(0, len(order), _CHUNK):
        is_label = order.is_label[lo:lo + _CHUNK].tolist()
        rows = order.row[lo:lo + _CHUNK]
        times = _time_texts(order.time_s[lo:lo + _CHUNK])
        ids = columns.event_id[rows].tolist()
        cards = columns.card_id[rows].tolist()
        merchants = columns.merchant_id[rows].tolist()
        amounts = columns.amount[rows].tolist()
        currencies = columns.currency[rows].tolist()
        mccs = columns.mcc[rows].tolist()
        channels = columns.channel[rows].tolist()
        countries = columns.country[rows].tolist()
        frauds = columns.is_fraud[rows].tolist()
        for k, label in enumerate(is_label):
            if label:
                event: dict[str, Any] = {
                    "id": f"label-{ids[k]}", "source": LABEL_SOURCE, "type": LABEL_TYPE, "specversion": SPECVERSION,
                    "time": times[k], "datacontenttype": JSON_CONTENT_TYPE, "subject": cards[k],
                    "data": {"transaction_id": ids[k], "card_id": cards[k], "is_fraud": frauds[k],
                             "labeled_at": times[k]},
                }
            else:
                event = {
                    "id": ids[k], "source": TRANSACTION_SOURCE, "type": TRANSACTION_TYPE, "specversion": SPECVERSION,
                    "time": times[k], "datacontenttype": JSON_CONTENT_TYPE, "partitionkey": cards[k],
                    "data": {"card_id": cards[k], "merchant_id": merchants[k], "amount": amounts[k],
                             "currency": currencies[k], "mcc": mccs[k], "channel": channels[k],
                             "country": countries[k]},
                }
            yield orjson.dumps(event)


def truth_lines(columns: TransactionColumns, meta: GroundTruthMeta) -> Iterator[bytes]:
    """The ground-truth sidecar: a ``meta`` line, then one line per transaction in stream order."""
    yield orjson.dumps({"meta": meta.to_dict()})
    for lo in range(0, len(columns), _CHUNK):
        part = slice(lo, lo + _CHUNK)
        for values in zip(
            columns.event_id[part].tolist(), columns.customer_id[part].tolist(), columns.is_fraud[part].tolist(),
            columns.scenario[part].tolist(), columns.instance_id[part].tolist(),
            columns.compromise_s[part].tolist(), columns.label_available_s[part].tolist(),
            np.round(columns.merchant_x[part], 3).tolist(), np.round(columns.merchant_y[part], 3).tolist(),
            columns.traveling[part].tolist(), strict=True,
        ):
            # orjson writes nan and inf as null: "no compromise" and "never labelled".
            yield orjson.dumps(dict(zip(_TRUTH_FIELDS, values, strict=True)))


_TRUTH_FIELDS = ("event_id", "customer_id", "is_fraud", "scenario", "instance_id", "compromise_s",
                 "label_available_s", "merchant_x", "merchant_y", "traveling")


def default_truth_path(path: str | Path) -> Path:
    """``stream.jsonl`` -> ``stream.truth.jsonl``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".truth.jsonl")


def write_jsonl(config: GeneratorConfig, path: str | Path, *, truth_path: str | Path | None = None,
                progress: bool = True, labels: bool = False, genuine_labels: bool = True) -> int:
    """Write the stream as structured CloudEvent JSON, one event per line; returns the number of events.

    ``labels`` interleaves label events; ``truth_path`` also writes the ground-truth sidecar.
    """
    columns, meta = generate_columns(config)
    order = stream_order(columns, meta.end_s, labels=labels, genuine_labels=genuine_labels)
    with open(path, "wb") as out, tqdm(total=len(order), unit="event", unit_scale=True, disable=not progress,
                                       desc="events") as bar:
        batch = []
        for line in json_lines(columns, order):
            batch.append(line)
            if len(batch) == _CHUNK:
                out.write(b"\n".join(batch) + b"\n")
                bar.update(len(batch))
                batch = []
        if batch:
            out.write(b"\n".join(batch) + b"\n")
            bar.update(len(batch))
    if truth_path is not None:
        with open(truth_path, "wb") as out:
            for line in truth_lines(columns, meta):
                out.write(line + b"\n")
    return len(order)


def read_truth_meta(truth_path: str | Path) -> dict[str, Any]:
    with open(truth_path, "rb") as f:
        return orjson.loads(f.readline())["meta"]


def read_transactions_jsonl(path: str | Path, truth_path: str | Path | None = None) -> TransactionColumns:
    """Read the transaction events of a stream file back into columns (label events are skipped).

    Ground truth (is_fraud, scenario, label time, customer, ...) comes from ``truth_path``, or from the default
    sidecar next to the file when it exists; without one, every transaction reads as genuine and unlabelled.
    """
    path = Path(path)
    fields: dict[str, list[Any]] = {k: [] for k in ("id", "time", "card_id", "merchant_id", "amount", "currency",
                                                    "mcc", "channel", "country")}
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
                if event.get("type") != TRANSACTION_TYPE:
                    continue
                data = event["data"]
                fields["id"].append(event["id"])
                fields["time"].append(event["time"])
                for name in ("card_id", "merchant_id", "amount"):
                    fields[name].append(data[name])
                fields["currency"].append(data.get("currency", ""))
                fields["mcc"].append(data.get("mcc", -1))
                fields["channel"].append(data.get("channel", ""))
                fields["country"].append(data.get("country", ""))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise StreamFileError(f"{path}:{number}: not a transaction event ({exc})") from None
    n = len(fields["id"])
    times = np.array([t.rstrip("Zz") for t in fields["time"]], "datetime64[s]").astype(np.int64).astype(np.float64)
    truth = _read_truth(truth_path if truth_path is not None else default_truth_path(path), fields["id"],
                        required=truth_path is not None)
    return TransactionColumns(
        event_id=np.array(fields["id"], object), time_s=times, card_id=np.array(fields["card_id"], object),
        merchant_id=np.array(fields["merchant_id"], object), amount=np.array(fields["amount"], np.float64),
        currency=np.array(fields["currency"], object), mcc=np.array(fields["mcc"], np.int64),
        channel=np.array(fields["channel"], object), country=np.array(fields["country"], object),
        is_fraud=truth.get("is_fraud", np.zeros(n, bool)),
        scenario=truth.get("scenario", np.full(n, "", object)),
        label_available_s=truth.get("label_available_s", np.full(n, np.inf)),
        customer_id=truth.get("customer_id", np.full(n, "", object)),
        instance_id=truth.get("instance_id"), compromise_s=truth.get("compromise_s"),
        merchant_x=truth.get("merchant_x"), merchant_y=truth.get("merchant_y"), traveling=truth.get("traveling"),
    )


def _read_truth(path: Path, event_ids: list[str], *, required: bool) -> dict[str, np.ndarray]:
    if not path.exists():
        if required:
            raise StreamFileError(f"ground-truth file {path} does not exist")
        return {}
    records: dict[str, dict[str, Any]] = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise StreamFileError(f"{path}:{number}: not JSON ({exc})") from None
            if "event_id" in record:
                records[record["event_id"]] = record
    missing = [e for e in event_ids if e not in records]
    if missing:
        raise StreamFileError(f"{path} has no ground truth for event {missing[0]!r} ({len(missing)} missing)")
    rows = [records[e] for e in event_ids]

    def column(name: str, dtype: Any, none: Any) -> np.ndarray:
        return np.array([none if r[name] is None else r[name] for r in rows], dtype)

    return {
        "is_fraud": column("is_fraud", bool, False), "scenario": column("scenario", object, ""),
        "label_available_s": column("label_available_s", np.float64, np.inf),
        "customer_id": column("customer_id", object, ""), "instance_id": column("instance_id", object, ""),
        "compromise_s": column("compromise_s", np.float64, np.nan),
        "merchant_x": column("merchant_x", np.float64, np.nan), "merchant_y": column("merchant_y", np.float64, np.nan),
        "traveling": column("traveling", bool, False),
    }

"""Where a fork-mode instance's start goes, step by step, without the HTTP server in the way.

Run as ``python -m perf.fork_probe TRIALS`` with ``MODEL_URI`` and ``VALKEY_URL`` set; ``perf.coldstart`` does it.
It does what the zygote does (the scorer's ``prefork()``), then forks ``TRIALS`` children one after another. Each
child replays an instance's start with a clock between the steps, and reports on a pipe:

- ``fork``: from the parent's ``os.fork()`` call to the child running;
- ``reinit``: the zygote's ``reinitialise_after_fork`` (signals, seeds, ``torch.set_num_threads``);
- ``granian_import``: ``from granian import Granian`` (the scorer's ``serve()`` imports it; ``prefork()`` does not);
- ``worker_fork``: one more ``os.fork()`` of this child, as granian does for its worker (the child exits at once);
- ``build_service``: the worker's ``build_service``: Valkey pool, Functions library check, readiness;
- ``first_score``: one transaction through ``ScorerService.score`` (micro-batcher, state read, step, CAS).

What this leaves out of an instance's real start, and ``perf.coldstart`` measures whole: granian's own start
(its Rust runtime, binding the port), the readiness probe's poll interval, and the HTTP round trip.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson

STEPS = ("fork", "reinit", "granian_import", "worker_fork", "build_service", "first_score")


def child(prepared: Any, forked_at: float, event: dict[str, Any], out: int) -> None:
    from functions.contract import validate_transaction_data  # noqa: F401 - imported by prefork already
    from functions.scorer.server import build_service
    from knative.local.serving.zygote import reinitialise_after_fork

    marks = {"start": forked_at, "fork": time.perf_counter()}
    reinitialise_after_fork({})
    marks["reinit"] = time.perf_counter()
    from granian import Granian  # noqa: F401 - what serve() imports

    marks["granian_import"] = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    marks["worker_fork"] = time.perf_counter()
    service = build_service(prepared)
    marks["build_service"] = time.perf_counter()
    from functions.contract import parse_http_request

    headers = {f"ce-{k}": str(v) for k, v in event.items() if k not in ("data", "datacontenttype")}
    headers["content-type"] = "application/json"
    service.score(parse_http_request(headers, orjson.dumps(event["data"])))
    marks["first_score"] = time.perf_counter()
    previous = marks["start"]
    steps = {}
    for step in STEPS:
        steps[step] = (marks[step] - previous) * 1000
        previous = marks[step]
    os.write(out, orjson.dumps(steps) + b"\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    trials = int(argv[0]) if argv else 5
    event = orjson.loads(sys.stdin.buffer.readline())
    from functions.scorer.server import prefork

    prepared = prefork()
    for n in range(trials):
        read_end, write_end = os.pipe()
        event_n = {**event, "id": f"{event['id']}-probe-{os.getpid()}-{n}"}
        forked_at = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            status = 0
            try:
                child(prepared, forked_at, event_n, write_end)
            except BaseException as exc:  # the child must not fall back into the loop
                print(f"probe child failed: {exc!r}", file=sys.stderr)
                status = 1
            finally:
                os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            line = reader.readline()
        os.waitpid(pid, 0)
        sys.stdout.write(line.decode() if line else '{"error": "the probe child reported nothing"}\n')
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of the isolated worker: ``python -m benchmark.worker FD``.

Reads one JSON request on stdin (including a nonce), then closes stdin, runs
:func:`benchmark.evaluation.run` and writes progress and the result as JSON lines tagged with the
nonce to file descriptor FD, a pipe only the parent reads. The candidate's own stdout and stderr go
to the log pipe, so a candidate that prints JSON cannot forge a result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys


def clean(value):
    """JSON-safe: non-finite floats become None (json would write NaN, which is not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def main() -> None:
    channel = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    request = json.loads(sys.stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    nonce = request.pop("nonce")

    def send(message: dict) -> None:
        channel.write(json.dumps(clean(dict(message, nonce=nonce)), allow_nan=False) + "\n")
        channel.flush()

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from .evaluation import run  # torch is imported only here, in the worker

    result = run(request, report=send)
    send({"type": "result", "result": result})
    channel.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip any exit handler a candidate registered


if __name__ == "__main__":
    main()

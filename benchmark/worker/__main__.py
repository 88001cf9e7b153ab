"""``python -m benchmark.worker FD``: one worker process (see :mod:`benchmark.protocol`).

Imports torch and the worker's modules first (the judge starts a worker before it needs it, so
this overlaps other work), then reads a WorkerRequest line on stdin, then Op lines; writes Message
lines on file descriptor FD, a pipe only the judge reads. The candidate's stdout and stderr go to
the log pipe.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    channel = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    from ..protocol import WorkerRequest
    from .serve import Worker  # torch is imported here, in the worker only

    line = sys.stdin.readline()
    if not line:  # the judge did not need this worker after all
        os._exit(0)
    Worker(WorkerRequest.from_json(line), channel, sys.stdin).run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip any exit handler a candidate registered


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Run the worker and append its whole-life resource use to a file.

For `disconnect-bench --worker-binary scripts/worker-rusage.py`, with
`WORKER_RUSAGE_BINARY` naming the real worker and `WORKER_RUSAGE_OUT` the file
(one JSON line per worker process: user and system CPU seconds, voluntary and
involuntary context switches). It counts what /proc cannot once the process
has gone: context switches, and CPU from start to exit. The benchmark's own
worker column reads 0 with this wrapper (it sees only this process); the
other columns are unaffected. SIGTERM and SIGINT are passed on, so the
benchmark's graceful stop still reaches the worker.
"""

import json
import os
import signal
import subprocess
import sys


def main() -> int:
    binary = os.environ["WORKER_RUSAGE_BINARY"]
    out = os.environ["WORKER_RUSAGE_OUT"]
    worker = subprocess.Popen([binary] + sys.argv[1:])
    for forwarded in (signal.SIGTERM, signal.SIGINT):
        signal.signal(forwarded, lambda number, _frame: worker.send_signal(number))
    # A signal handled meanwhile does not end the wait: Python retries it.
    _, status, usage = os.wait4(worker.pid, 0)
    with open(out, "a", encoding="utf-8") as file:
        record = {
            "binary": binary,
            "user_seconds": usage.ru_utime,
            "system_seconds": usage.ru_stime,
            "voluntary_context_switches": usage.ru_nvcsw,
            "involuntary_context_switches": usage.ru_nivcsw,
        }
        file.write(json.dumps(record) + "\n")
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())

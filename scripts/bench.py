#!/usr/bin/env python
"""Benchmarks of the pipeline against the usual approaches, side by side in one invocation.

    .venv/bin/python scripts/bench.py throughput [--json] [--quick]
    .venv/bin/python scripts/bench.py overhead [--json] [--quick]

throughput: a sandbox enforcing R requests/minute as a token bucket of one second's worth, latency uniform
0.5-2 s; runs `pipeline` (N `pipeline worker` processes, Postgres, Redis broker and gate), `celery_rate_limit`
(Celery `rate_limit` + autoretry on 429 with retry_backoff, same N, Celery's default prefork pool), `naive` (the
guide's sequential client with exponential backoff, fixed time) and `pipeline_hidden_limit` (the sandbox enforces
60% of the configured limit). overhead: a zero-latency unlimited sandbox: pipeline items/s beside a bare Celery
no-op task (the ratio) and a bare Celery task making the same sandbox call, on the same broker with the same
workers and pool; and `pipeline validate` + `pipeline submit` of a 100k-item manifest (time, peak RSS).

Figures come from the sandbox's own record of every request (arrival, answer, status): utilization =
successful requests per minute from the first request sent to the last / the provider's real limit.

Prints one JSON object with --json (`{"scenario", "machine", "runs": [...], "summary"}`), else a table.
Needs Postgres and Redis on localhost (BENCH_PG_ADMIN_URL, BENCH_REDIS_URL override). Every subprocess is
killed at the end, also on error or Ctrl-C; throwaway databases are dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import scenarios
from benchlib.infra import Processes
from benchlib.report import log, machine, table


def _terminate(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop processes and drop databases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["throughput", "overhead"])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="a tiny version (smoke test): a few items, 2 workers")
    ap.add_argument("--runs", default=None, help="comma-separated subset of runs (debugging)")
    ap.add_argument("--local-gate", action="store_true",
                    help="debugging only: no redis_url, each worker process has its own gate (not global)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="threads per worker process (pipeline and Celery runs); default 24 (overhead: 16)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, worker logs)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    only = set(args.runs.split(",")) if args.runs else None
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{args.scenario}-"))
    procs = Processes(workdir)
    info = machine()
    t0 = time.monotonic()
    result: dict[str, Any] = {"scenario": args.scenario, "machine": info, "quick": args.quick}
    try:
        if args.scenario == "throughput":
            tp = scenarios.QUICK_THROUGHPUT if args.quick else scenarios.Throughput()
            if args.concurrency:
                tp = dataclasses.replace(tp, concurrency=args.concurrency)
            result["params"] = tp.__dict__
            result["runs"] = scenarios.throughput(procs, workdir, tp, local_gate=args.local_gate, only=only)
            result["summary"] = scenarios.throughput_summary(result["runs"])
        else:
            ov = scenarios.QUICK_OVERHEAD if args.quick else scenarios.Overhead()
            if args.concurrency:
                ov = dataclasses.replace(ov, concurrency=args.concurrency)
            result["params"] = ov.__dict__
            result["runs"], result["summary"] = scenarios.overhead(procs, workdir, ov, local_gate=args.local_gate,
                                                                   only=only)
    finally:
        procs.stop_all()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_s"] = round(time.monotonic() - t0, 1)
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(table(result) + "\n")
    return 1 if any(r.get("error") for r in result["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())

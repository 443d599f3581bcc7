"""The usual approach, for comparison: a Celery app whose task POSTs generateContent with httpx, limited by
Celery's own `rate_limit` (per worker process) and retried on 429 by `autoretry_for` with `retry_backoff`;
plus a bare no-op task for the overhead scenario. Bench-only; run a worker with

    PYTHONPATH=scripts python -m benchlib.celery_bench --broker redis://... --sandbox http://... --rate 600/m

Outcomes are counted in the broker's Redis database (keys below) so the bench knows when all tasks ended.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

import httpx
import redis
from celery import Celery, Task

QUEUE = "bench"
GENERATE = "bench.generate"
NOOP = "bench.noop"
#: Redis counters of final outcomes
OK_KEY, FAILED_KEY, NOOP_KEY = "bench:ok", "bench:failed", "bench:noop"
MODEL = "gemini-3-pro-image-preview"
#: retries per task: Celery's default is 3, which drops most tasks at a 4x overshoot; 10 lets the run finish
MAX_RETRIES = 10
#: Celery's default retry_backoff_max is 600 s; 60 keeps the tail of a one-minute run within minutes
RETRY_BACKOFF_MAX_S = 60


class RateLimited(Exception):
    """The provider answered 429."""


def generate_body(prompt: str) -> dict[str, Any]:
    """The guide's native Gemini request, at 1K (the sandbox wants a real aspect ratio, not "auto")."""
    return {"contents": [{"parts": [{"text": prompt}]}],
            "generationConfig": {"responseModalities": ["IMAGE"],
                                 "imageConfig": {"aspectRatio": "1:1", "imageSize": "1K"}}}


def generate_url(sandbox_url: str) -> str:
    return f"{sandbox_url}/v1beta/models/{MODEL}:generateContent"


def make_app(broker_url: str, sandbox_url: str, rate_limit: str | None) -> Celery:
    app = Celery("bench", broker=broker_url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, task_ignore_result=True, task_serializer="json",
                    accept_content=["json"], broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False)
    local = threading.local()
    counters = redis.Redis.from_url(broker_url)

    def client() -> httpx.Client:
        c: httpx.Client | None = getattr(local, "client", None)
        if c is None:
            c = local.client = httpx.Client(timeout=180)
        return c

    class Counted(Task):  # type: ignore[misc]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            counters.incr(OK_KEY)

        def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            counters.incr(FAILED_KEY)

    @app.task(  # type: ignore[untyped-decorator]
        name=GENERATE, base=Counted, rate_limit=rate_limit, autoretry_for=(RateLimited,), retry_backoff=True,
        retry_backoff_max=RETRY_BACKOFF_MAX_S, max_retries=MAX_RETRIES)
    def generate(prompt: str) -> int:
        r = client().post(generate_url(sandbox_url), json=generate_body(prompt))
        if r.status_code == 429:
            raise RateLimited(r.text[:200])
        r.raise_for_status()
        return len(r.content)

    @app.task(name=NOOP)  # type: ignore[untyped-decorator]
    def noop() -> None:
        counters.incr(NOOP_KEY)

    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--broker", required=True)
    ap.add_argument("--sandbox", default="http://127.0.0.1:1")
    ap.add_argument("--rate", default=None, help="Celery rate_limit of the generate task, e.g. 600/m")
    ap.add_argument("--concurrency", type=int, default=24)
    ap.add_argument("--pool", default="threads", choices=["threads", "prefork"])
    ap.add_argument("--name", default="bench")
    args = ap.parse_args(argv)
    app = make_app(args.broker, args.sandbox, args.rate)
    app.worker_main(["worker", f"--pool={args.pool}", f"--concurrency={args.concurrency}", "-Q", QUEUE,
                     "--without-gossip", "--without-mingle", "-n", f"{args.name}@%h", "--loglevel=WARNING"])


if __name__ == "__main__":
    main()

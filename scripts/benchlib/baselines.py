"""The comparison runs: Celery with `rate_limit` and autoretry on 429 (N worker processes on the Redis
broker), the guide's sequential client with exponential backoff, and a bare Celery no-op task."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis
from celery import Celery

from benchlib import celery_bench
from benchlib.infra import Processes, cpu_delta, cpu_snapshot, redis_databases, wait_consumers
from benchlib.pipeline_run import bench_env

SCRIPTS = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def _start_celery_workers(procs: Processes, broker_url: str, *, workers: int, concurrency: int, workdir: Path,
                          sandbox_url: str | None = None, rate: str | None = None, pool: str = "threads") -> list[Any]:
    env = bench_env() | {"PYTHONPATH": str(SCRIPTS)}
    cmd = [sys.executable, "-m", "benchlib.celery_bench", "--broker", broker_url,
           "--concurrency", str(concurrency), "--pool", pool]
    if sandbox_url:
        cmd += ["--sandbox", sandbox_url]
    if rate:
        cmd += ["--rate", rate]
    return [procs.start(f"{workdir.name}-celery", [*cmd, "--name", f"bench{i}"], cwd=workdir, env=env)
            for i in range(workers)]


def _publish(broker_url: str, task_name: str, args_list: list[tuple[Any, ...]]) -> None:
    """Publish on one producer connection (the fast way, as the pipeline's dispatcher does), by task name from
    an app without tasks (registering the bench's tasks twice in one process makes Celery warn)."""
    app = Celery("bench-publisher", broker=broker_url, set_as_current=False)
    app.conf.update(task_serializer="json", task_ignore_result=True)
    try:
        with app.producer_or_acquire() as producer:
            for args in args_list:
                app.send_task(task_name, args, queue=celery_bench.QUEUE, producer=producer)
    finally:
        app.close()


def run_celery_generate(procs: Processes, sandbox_url: str, *, tasks: int, workers: int, concurrency: int,
                        rate: str | None, timeout_s: float, workdir: Path, pool: str) -> dict[str, Any]:
    """N Celery workers run `tasks` generate tasks (with `rate_limit=rate`, None: none) to the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    with redis_databases(1) as (broker_url,):
        ws = _start_celery_workers(procs, broker_url, workers=workers, concurrency=concurrency, workdir=workdir,
                                   sandbox_url=sandbox_url, rate=rate, pool=pool)
        counters = redis.Redis.from_url(broker_url)
        try:
            ready_s = wait_consumers(broker_url, workers, ws)
            cpu0 = cpu_snapshot([w.pid for w in ws])
            t_release = time.monotonic()
            _publish(broker_url, celery_bench.GENERATE,
                     [(f"Benchmark product photo of product number {i} on white marble",) for i in range(tasks)])
            ok = failed = 0
            timed_out = False
            while True:
                ok = int(counters.get(celery_bench.OK_KEY) or 0)
                failed = int(counters.get(celery_bench.FAILED_KEY) or 0)
                if ok + failed >= tasks:
                    break
                if time.monotonic() - t_release > timeout_s:
                    timed_out = True
                    break
                time.sleep(0.02)
            t_done = time.monotonic()
            cpu = cpu_delta(cpu0, cpu_snapshot([w.pid for w in ws]))
        finally:
            procs.stop(ws)
            counters.close()
    return {"t_release": t_release, "wall_s": t_done - t_release, "workers_ready_s": round(ready_s, 2),
            "ok": ok, "failed": failed, "unfinished": tasks - ok - failed, "timed_out": timed_out, "cpu_s": cpu}


class RateLimitError(Exception):
    pass


def exponential_backoff_retry(func: Callable[[], T], max_retries: int = 5, base_delay: float = 1,
                              sleep: Callable[[float], None] = time.sleep) -> T:
    """The guide's retry helper, as printed there (only `sleep` is injectable)."""
    for attempt in range(max_retries):
        try:
            return func()
        except RateLimitError:
            if attempt == max_retries - 1:
                raise
            delay = (base_delay * (2**attempt)) + random.uniform(0, 1)
            sleep(delay)
    raise Exception("Max retries exceeded")


def run_naive(sandbox_url: str, *, duration_s: float) -> dict[str, Any]:
    """The guide's sequential client (generate_image_native wrapped in exponential_backoff_retry) for a fixed
    time: items one after another until `duration_s` has passed."""
    url = celery_bench.generate_url(sandbox_url)
    client = httpx.Client(timeout=180)
    images = failed = 0

    def generate(prompt: str) -> bytes:
        r = client.post(url, json=celery_bench.generate_body(prompt))
        if r.status_code == 429:
            raise RateLimitError(r.text[:200])
        r.raise_for_status()
        return r.content

    t_release = time.monotonic()
    i = 0
    try:
        while time.monotonic() - t_release < duration_s:
            prompt = f"Benchmark product photo of product number {i} on white marble"
            try:
                exponential_backoff_retry(lambda p=prompt: generate(p))  # type: ignore[misc]
                images += 1
            except (RateLimitError, httpx.HTTPError):
                failed += 1
            i += 1
    finally:
        client.close()
    return {"t_release": t_release, "wall_s": time.monotonic() - t_release, "ok": images, "failed": failed}


def run_bare_celery(procs: Processes, *, tasks: int, workers: int, concurrency: int, timeout_s: float,
                    workdir: Path) -> dict[str, Any]:
    """N worker processes consuming `tasks` no-op tasks (each counts itself with one INCR)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with redis_databases(1) as (broker_url,):
        ws = _start_celery_workers(procs, broker_url, workers=workers, concurrency=concurrency, workdir=workdir)
        counters = redis.Redis.from_url(broker_url)
        try:
            wait_consumers(broker_url, workers, ws)
            cpu0 = cpu_snapshot([w.pid for w in ws])
            t0 = time.monotonic()
            _publish(broker_url, celery_bench.NOOP, [() for _ in range(tasks)])
            t_published = time.monotonic()
            done = 0
            while done < tasks and time.monotonic() - t0 < timeout_s:
                done = int(counters.get(celery_bench.NOOP_KEY) or 0)
                time.sleep(0.01)
            wall = time.monotonic() - t0
            cpu = cpu_delta(cpu0, cpu_snapshot([w.pid for w in ws]))
        finally:
            procs.stop(ws)
            counters.close()
    return {"tasks": tasks, "done": done, "wall_s": round(wall, 3), "publish_s": round(t_published - t0, 3),
            "items_per_s": round(done / wall, 1) if wall > 0 else 0.0, "cpu_s": cpu}

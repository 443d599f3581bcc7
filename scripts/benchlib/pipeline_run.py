"""One pipeline run: a throwaway Postgres database, two empty Redis databases (broker, admission gate), file
storage in a temp dir, N `pipeline worker` processes, `pipeline submit` of a generated manifest, and a poll of
the items table until every item is final."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml
from sqlalchemy import create_engine, text

from benchlib.infra import (
    Processes,
    cpu_delta,
    cpu_snapshot,
    redis_databases,
    run_measured,
    throwaway_database,
    wait_consumers,
)
from benchlib.recorder import RequestRecorder

PIPELINE = str(Path(sys.executable).parent / "pipeline")
FINAL = ("succeeded", "cached", "failed", "blocked", "cancelled")
#: the provider the bench configures (its gate key)
PROVIDER = "sandbox"
#: how often the items table is polled for completion
POLL_S = 0.1


@dataclass(frozen=True)
class PipelineSetup:
    items: int
    workers: int
    concurrency: int
    #: the limits the pipeline is told (provider config); the sandbox may enforce less
    config_rpm: int
    limit_concurrency: int = 64
    rpd: int = 1_000_000
    #: give up waiting for completion after this long
    timeout_s: float = 180.0
    #: debugging only: no redis_url, so each worker process has its own in-process gate (not global)
    local_gate: bool = False
    #: extra `worker:` settings for pipeline.yaml (none by default: the benchmark runs with the defaults)
    worker_settings: dict[str, Any] | None = None


def bench_env() -> dict[str, str]:
    """The environment for pipeline subprocesses: none of the caller's PIPELINE_* settings leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}


def write_config(path: Path, *, database_url: str, broker_url: str, gate_url: str | None, sandbox_url: str,
                 setup: PipelineSetup) -> Path:
    cfg: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": broker_url,
        "storage_url": f"file://{path.parent / 'output'}",
        "providers": {
            "sandbox": {"base_url": sandbox_url,
                        "limits": {"rpm": setup.config_rpm, "rpd": setup.rpd,
                                   "concurrency": setup.limit_concurrency}},
            "sandbox-batch": None,  # else every worker starts an in-process sandbox for it
        },
        "log_level": "WARNING",
    }
    if gate_url is not None:
        cfg["redis_url"] = gate_url
    if setup.worker_settings:
        cfg["worker"] = dict(setup.worker_settings)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def write_manifest(dirpath: Path, n: int, job: str) -> Path:
    """A manifest of `n` items with distinct prompts at 1K, items from a generated CSV."""
    data = dirpath / f"{job}.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title"])
        for i in range(n):
            w.writerow([f"item-{i:06d}", f"product number {i}"])
    manifest = dirpath / f"{job}.yaml"
    manifest.write_text(yaml.safe_dump({
        "job": job,
        "providers": ["sandbox"],
        "mode": "sync",
        "defaults": {"resolution": "1K", "aspect_ratio": "1:1", "format": "png"},
        "output": {"key": "bench/{{ job }}/{{ id }}.png"},
        "prompt": "Benchmark product photo of {{ title }} ({{ id }}) on white marble, soft studio light",
        "items_from": data.name,
    }, sort_keys=False), encoding="utf-8")
    return manifest


def item_counts(engine: Any) -> tuple[dict[str, int], int]:
    """Items by state, and the connections the workers hold to this database (ours excluded)."""
    with engine.connect() as c:
        counts = {str(s): int(n) for s, n in c.execute(text("SELECT state, count(*) FROM items GROUP BY state"))}
        conns = int(c.execute(text("SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()"))
                    .scalar_one())
    return counts, conns


def run_pipeline(procs: Processes, recorder: RequestRecorder, sandbox_url: str, setup: PipelineSetup,
                 workdir: Path) -> dict[str, Any]:
    """Run one pipeline job to the end against the sandbox at `sandbox_url`; returns raw timings and counts
    (the caller turns the recorder's records into figures)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench_env()
    with throwaway_database() as db_url, redis_databases(2) as (broker_url, gate_url):
        config = write_config(workdir / "pipeline.yaml", database_url=db_url, broker_url=broker_url,
                              gate_url=None if setup.local_gate else gate_url, sandbox_url=sandbox_url, setup=setup)
        manifest = write_manifest(workdir, setup.items, f"bench-{workdir.name}")
        up = run_measured([PIPELINE, "db", "upgrade", "--config", str(config)], cwd=workdir, env=env)
        if up.returncode != 0:
            raise RuntimeError(f"pipeline db upgrade failed: {up.output[-800:]}")
        workers = [procs.start(f"{workdir.name}-worker", [PIPELINE, "worker", "--config", str(config),
                                                          "--concurrency", str(setup.concurrency)],
                               cwd=workdir, env=env) for _ in range(setup.workers)]
        engine = create_engine(db_url, pool_size=1)
        gate_client = None if setup.local_gate else redis.Redis.from_url(gate_url)
        try:
            ready_s = wait_consumers(broker_url, setup.workers, workers)
            recorder.clear()
            cpu0 = cpu_snapshot([w.pid for w in workers])
            t_release = time.monotonic()
            sub = run_measured([PIPELINE, "submit", str(manifest), "--config", str(config), "--json"],
                               cwd=workdir, env=env)
            if sub.returncode != 0:
                raise RuntimeError(f"pipeline submit failed: {sub.output[-800:]}")
            job_id = json.loads(sub.output.strip().splitlines()[-1])["job_id"]
            counts: dict[str, int] = {}
            timed_out = False
            conns_peak = 0
            gate_rates: list[float | None] = []  # the gate's live rate (per minute) once a second
            next_gate_s = t_release
            t99: float | None = None
            while True:
                counts, conns = item_counts(engine)
                conns_peak = max(conns_peak, conns)
                final = sum(counts.get(s, 0) for s in FINAL)
                if t99 is None and final >= 0.99 * setup.items:
                    t99 = time.monotonic() - t_release
                if gate_client is not None and time.monotonic() >= next_gate_s:
                    next_gate_s += 1.0
                    gate_rates.append(gate_rate_per_min(gate_client, setup))
                if final >= setup.items:
                    break
                if time.monotonic() - t_release > setup.timeout_s:
                    timed_out = True
                    break
                dead = [w for w in workers if w.poll() is not None]
                if dead:
                    raise RuntimeError(f"a worker exited with code {dead[0].returncode} "
                                       f"(see {getattr(dead[0], 'log_path', 'its log')})")
                time.sleep(POLL_S)
            t_done = time.monotonic()
            cpu = cpu_delta(cpu0, cpu_snapshot([w.pid for w in workers]))
        finally:
            procs.stop(workers)
            if gate_client is not None:
                gate_client.close()
        time.sleep(1.0)  # Postgres flushes backend statistics at most once a second
        stats = db_stats(engine)
        engine.dispose()
    return {
        "job_id": job_id,
        "t_release": t_release,
        "wall_s": t_done - t_release,
        "submit_s": round(sub.wall_s, 2),
        "workers_ready_s": round(ready_s, 2),
        "counts": counts,
        "timed_out": timed_out,
        "t_99pct_s": None if t99 is None else round(t99, 2),
        "cpu_s": cpu,
        "pg_connections_peak": conns_peak,
        "pg": stats,
        "gate_rate_per_min_5s": gate_rates[::5],
    }


def gate_rate_per_min(client: redis.Redis[Any], setup: PipelineSetup) -> float | None:
    """The admission gate's live rate for the bench provider, through its public snapshot (None if unreadable)."""
    try:
        from pipeline.gate.base import GateLimits
        from pipeline.gate.redis import RedisGate

        limits = GateLimits(rpm=setup.config_rpm, rpd=setup.rpd, concurrency=setup.limit_concurrency)
        return round(RedisGate(client).snapshot(PROVIDER, limits).rate_per_min, 1)
    except Exception:
        return None


def db_stats(engine: Any) -> dict[str, int]:
    """Transactions committed in the run's database and row updates on items (the cost of churn: every gate
    refusal is a claim, a release and a re-dispatch)."""
    with engine.connect() as c:
        xact = c.execute(text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
        upd = c.execute(text("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'items'"))
        return {"xact_commit": int(xact.scalar_one()), "items_updates": int(upd.scalar_one())}

"""The two scenarios: `throughput` (pipeline, celery_rate_limit, naive, pipeline_hidden_limit side by side)
and `overhead` (pipeline items/s beside a bare Celery no-op task; validating and submitting a 100k manifest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import baselines, celery_bench
from benchlib.infra import Processes, run_measured, throwaway_database
from benchlib.pipeline_run import PIPELINE, PipelineSetup, bench_env, run_pipeline, write_config, write_manifest
from benchlib.recorder import figures
from benchlib.report import log
from benchlib.sandbox import RecordingSandbox, gemini_profile

FIGURES = ("images", "requests", "wall_s", "images_per_min", "utilization", "http_429", "p50_s", "p95_s")


@dataclass(frozen=True)
class Throughput:
    items: int = 600
    rpm: int = 600
    min_s: float = 0.5
    max_s: float = 2.0
    workers: int = 4
    concurrency: int = 24
    naive_s: float = 30.0
    #: the hidden-limit run's real limit, as a fraction of the configured one
    hidden_fraction: float = 0.6
    timeout_s: float = 150.0
    #: the Celery baseline's pool: Celery's default (prefork). Its threads pool releases rate-limited tasks at
    #: about one a second per worker on the Redis transport whatever the rate_limit, a quirk not a limiter
    celery_pool: str = "prefork"


QUICK_THROUGHPUT = Throughput(items=60, rpm=1200, min_s=0.05, max_s=0.2, workers=2, concurrency=8, naive_s=10.0,
                              timeout_s=60.0)


@dataclass(frozen=True)
class Overhead:
    items: int = 1000
    noop_tasks: int = 5000
    workers: int = 2
    concurrency: int = 16
    manifest_items: int = 100_000
    timeout_s: float = 180.0


QUICK_OVERHEAD = Overhead(items=100, noop_tasks=500, manifest_items=2000, timeout_s=60.0)


def _per_image(cpu_s: dict[str, float], images: int) -> dict[str, float] | None:
    return {k: round(v * 1000 / images, 1) for k, v in cpu_s.items()} if images else None


def _per_image_n(counts: dict[str, int], images: int) -> dict[str, float] | None:
    return {k: round(v / images, 1) for k, v in counts.items()} if images else None


def _wanted(only: set[str] | None, name: str) -> bool:
    return only is None or name in only


def _guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    log(f"run {name} ...")
    t0 = time.monotonic()
    try:
        run = {"name": name, **fn()}
    except Exception as e:
        run = {"name": name, **dict.fromkeys(FIGURES), "error": f"{type(e).__name__}: {e}"}
    log(f"run {name} done in {time.monotonic() - t0:.0f} s" + (f": ERROR {run['error']}" if run.get("error") else ""))
    return run


def _pipeline_run(procs: Processes, p: Throughput, workdir: Path, *, real_rpm: int, items: int,
                  local_gate: bool) -> dict[str, Any]:
    setup = PipelineSetup(items=items, workers=p.workers, concurrency=p.concurrency, config_rpm=p.rpm,
                          timeout_s=p.timeout_s, local_gate=local_gate)
    with RecordingSandbox(gemini_profile(rpm=real_rpm, min_s=p.min_s, max_s=p.max_s)) as sb:
        raw = run_pipeline(procs, sb.recorder, sb.url, setup, workdir)
        records = sb.recorder.records()
        ledger = sb.ledger()
    counts = raw["counts"]
    images = counts.get("succeeded", 0)
    return {
        **figures(records, real_rpm=real_rpm, images=images, wall_s=raw["wall_s"]),
        "items": items, "failed": counts.get("failed", 0), "unfinished": items - sum(
            counts.get(s, 0) for s in ("succeeded", "cached", "failed", "blocked", "cancelled")),
        "timed_out": raw["timed_out"], "t_99pct_s": raw["t_99pct_s"], "real_rpm": real_rpm, "config_rpm": p.rpm,
        "workers": p.workers,
        "concurrency": p.concurrency, "submit_s": raw["submit_s"], "workers_ready_s": raw["workers_ready_s"],
        "billed_images": ledger.get("billed_images"), "cpu_s": raw["cpu_s"],
        "cpu_ms_per_image": _per_image(raw["cpu_s"], images), "pg_connections_peak": raw["pg_connections_peak"],
        "pg_per_image": _per_image_n(raw["pg"], images), "gate_rate_per_min_5s": raw["gate_rate_per_min_5s"],
        "gate": "per-process (local, debug)" if local_gate else "redis",
    }


def throughput(procs: Processes, workdir: Path, p: Throughput, *, local_gate: bool = False,
               only: set[str] | None = None) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    if _wanted(only, "pipeline"):
        runs.append(_guarded("pipeline", lambda: _pipeline_run(procs, p, workdir / "pipeline", real_rpm=p.rpm,
                                                                items=p.items, local_gate=local_gate)))

    def celery() -> dict[str, Any]:
        with RecordingSandbox(gemini_profile(rpm=p.rpm, min_s=p.min_s, max_s=p.max_s)) as sb:
            raw = baselines.run_celery_generate(procs, sb.url, tasks=p.items, workers=p.workers,
                                                concurrency=p.concurrency, rate=f"{p.rpm}/m",
                                                timeout_s=p.timeout_s, workdir=workdir / "celery",
                                                pool=p.celery_pool)
            records = sb.recorder.records()
        return {**figures(records, real_rpm=p.rpm, images=raw["ok"], wall_s=raw["wall_s"]),
                "items": p.items, "failed": raw["failed"], "unfinished": raw["unfinished"],
                "timed_out": raw["timed_out"], "real_rpm": p.rpm, "workers": p.workers,
                "concurrency": p.concurrency, "workers_ready_s": raw["workers_ready_s"],
                "rate_limit": f"{p.rpm}/m per worker process", "pool": p.celery_pool,
                "max_retries": celery_bench.MAX_RETRIES, "cpu_s": raw["cpu_s"],
                "cpu_ms_per_image": _per_image(raw["cpu_s"], raw["ok"])}

    if _wanted(only, "celery_rate_limit"):
        runs.append(_guarded("celery_rate_limit", celery))

    def naive() -> dict[str, Any]:
        with RecordingSandbox(gemini_profile(rpm=p.rpm, min_s=p.min_s, max_s=p.max_s)) as sb:
            raw = baselines.run_naive(sb.url, duration_s=p.naive_s)
            records = sb.recorder.records()
        return {**figures(records, real_rpm=p.rpm, images=raw["ok"], wall_s=raw["wall_s"]),
                "failed": raw["failed"], "real_rpm": p.rpm, "workers": 1, "concurrency": 1,
                "note": f"sequential for {p.naive_s:.0f} s; figures are rates"}

    if _wanted(only, "naive"):
        runs.append(_guarded("naive", naive))
    hidden_rpm = round(p.rpm * p.hidden_fraction)
    hidden_items = round(p.items * p.hidden_fraction)  # about as long a run as the others
    if _wanted(only, "pipeline_hidden_limit"):
        runs.append(_guarded("pipeline_hidden_limit", lambda: _pipeline_run(
            procs, p, workdir / "hidden", real_rpm=hidden_rpm, items=hidden_items, local_gate=local_gate)))
    return runs


def throughput_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["name"]: r for r in runs}
    out: dict[str, Any] = {}
    pl = by.get("pipeline")
    if pl and pl.get("utilization") is not None:
        out["pipeline_target"] = {"utilization": pl["utilization"], "http_429": pl["http_429"],
                                  "met": pl["utilization"] >= 0.96 and pl["http_429"] == 0}
    hd = by.get("pipeline_hidden_limit")
    if hd and hd.get("utilization") is not None:
        out["hidden_limit_target"] = {"utilization": hd["utilization"], "http_429_pct": hd["http_429_pct"],
                                      "met": hd["utilization"] >= 0.90 and hd["http_429_pct"] <= 2.0}
    return out


def overhead(procs: Processes, workdir: Path, p: Overhead, *, local_gate: bool = False,
             only: set[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    runs: list[dict[str, Any]] = []

    def pipeline() -> dict[str, Any]:
        setup = PipelineSetup(items=p.items, workers=p.workers, concurrency=p.concurrency, config_rpm=1_000_000,
                              limit_concurrency=1000, timeout_s=p.timeout_s, local_gate=local_gate)
        with RecordingSandbox(gemini_profile(rpm=None)) as sb:
            raw = run_pipeline(procs, sb.recorder, sb.url, setup, workdir / "pipeline")
            records = sb.recorder.records()
        images = raw["counts"].get("succeeded", 0)
        processing_s = raw["wall_s"] - raw["submit_s"]  # from the submit's commit to the last item final
        return {**figures(records, real_rpm=0, images=images, wall_s=raw["wall_s"]), "items": p.items,
                "items_per_s": round(images / processing_s, 1) if processing_s > 0 else None,
                "processing_s": round(processing_s, 2), "t_99pct_s": raw["t_99pct_s"], "submit_s": raw["submit_s"],
                "workers": p.workers,
                "concurrency": p.concurrency, "timed_out": raw["timed_out"],
                "gate": "per-process (local, debug)" if local_gate else "redis", "cpu_s": raw["cpu_s"],
                "cpu_ms_per_image": _per_image(raw["cpu_s"], images), "pg_connections_peak": raw["pg_connections_peak"]}

    def noop() -> dict[str, Any]:
        raw = baselines.run_bare_celery(procs, tasks=p.noop_tasks, workers=p.workers, concurrency=p.concurrency,
                                        timeout_s=p.timeout_s, workdir=workdir / "noop")
        return {"images": None, "requests": 0, "wall_s": raw["wall_s"], "images_per_min": None,
                "utilization": None, "http_429": 0, "p50_s": None, "p95_s": None, "items": raw["tasks"],
                "done": raw["done"], "items_per_s": raw["items_per_s"], "publish_s": raw["publish_s"],
                "workers": p.workers, "concurrency": p.concurrency, "cpu_s": raw["cpu_s"],
                "cpu_ms_per_task": _per_image(raw["cpu_s"], raw["done"])}

    def http() -> dict[str, Any]:
        with RecordingSandbox(gemini_profile(rpm=None)) as sb:
            raw = baselines.run_celery_generate(procs, sb.url, tasks=p.items, workers=p.workers,
                                                concurrency=p.concurrency, rate=None, timeout_s=p.timeout_s,
                                                workdir=workdir / "http", pool="threads")
            records = sb.recorder.records()
        return {**figures(records, real_rpm=0, images=raw["ok"], wall_s=raw["wall_s"]), "items": p.items,
                "items_per_s": round(raw["ok"] / raw["wall_s"], 1) if raw["wall_s"] > 0 else None,
                "workers": p.workers, "concurrency": p.concurrency, "cpu_s": raw["cpu_s"],
                "cpu_ms_per_image": _per_image(raw["cpu_s"], raw["ok"]),
                "note": "the same sandbox call from a bare Celery task (no DB, storage, cache, budget or gate)"}

    if _wanted(only, "pipeline"):
        runs.append(_guarded("pipeline", pipeline))
    if _wanted(only, "celery_noop"):
        runs.append(_guarded("celery_noop", noop))
    if _wanted(only, "celery_http"):
        runs.append(_guarded("celery_http", http))
    if _wanted(only, "submit_100k"):
        runs.append(_guarded(f"submit_{p.manifest_items // 1000}k", lambda: _big_submit(workdir / "big", p)))
    by = {r["name"]: r for r in runs}
    summary: dict[str, Any] = {}
    a, b = by.get("pipeline", {}).get("items_per_s"), by.get("celery_noop", {}).get("items_per_s")
    if a and b:
        summary["overhead_ratio"] = {"value": round(a / b, 3), "target": ">= 0.5", "met": a / b >= 0.5}
    c = by.get("celery_http", {}).get("items_per_s")
    if a and c:
        summary["ratio_vs_celery_http"] = round(a / c, 3)
    big = next((r for r in runs if r["name"].startswith("submit_") and not r.get("error")), None)
    if big:
        summary["big_submit"] = {"items": big["items"], "validate_plus_submit_s": big["wall_s"],
                                 "peak_rss_mb": big["peak_rss_mb"], "target": "<= 60 s, < 400 MB",
                                 "met": big["wall_s"] <= 60 and big["peak_rss_mb"] < 400}
    return runs, summary


def _big_submit(workdir: Path, p: Overhead) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench_env()
    with throwaway_database() as db_url:
        setup = PipelineSetup(items=p.manifest_items, workers=0, concurrency=1, config_rpm=600)
        config = write_config(workdir / "pipeline.yaml", database_url=db_url, broker_url="redis://127.0.0.1:1/0",
                              gate_url=None, sandbox_url="http://127.0.0.1:1", setup=setup)
        manifest = write_manifest(workdir, p.manifest_items, "big")
        up = run_measured([PIPELINE, "db", "upgrade", "--config", str(config)], cwd=workdir, env=env)
        if up.returncode != 0:
            raise RuntimeError(f"db upgrade failed: {up.output[-500:]}")
        val = run_measured([PIPELINE, "validate", str(manifest), "--config", str(config)], cwd=workdir, env=env)
        if val.returncode != 0:
            raise RuntimeError(f"validate failed: {val.output[-500:]}")
        sub = run_measured([PIPELINE, "submit", str(manifest), "--config", str(config)], cwd=workdir, env=env)
        if sub.returncode != 0:
            raise RuntimeError(f"submit failed: {sub.output[-500:]}")
    return {"images": None, "requests": 0, "wall_s": round(val.wall_s + sub.wall_s, 2), "images_per_min": None,
            "utilization": None, "http_429": 0, "p50_s": None, "p95_s": None, "items": p.manifest_items,
            "validate_s": round(val.wall_s, 2), "submit_s": round(sub.wall_s, 2),
            "validate_peak_rss_mb": round(val.peak_rss_mb, 1), "submit_peak_rss_mb": round(sub.peak_rss_mb, 1),
            "peak_rss_mb": round(max(val.peak_rss_mb, sub.peak_rss_mb), 1)}

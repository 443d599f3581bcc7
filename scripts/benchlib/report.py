"""Machine facts for the JSON, progress lines on stderr, and the readable table."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import redis
from sqlalchemy import create_engine, text

from benchlib.infra import PG_ADMIN, REDIS_BASE


def log(msg: str) -> None:
    sys.stderr.write(f"bench: {msg}\n")
    sys.stderr.flush()


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _mem_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    import celery

    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "mem": f"{_mem_gb()} GB",
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu": _cpu_model(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "celery": celery.__version__,
    }
    try:
        info["redis"] = redis.Redis.from_url(REDIS_BASE).info("server").get("redis_version")
    except redis.RedisError:
        info["redis"] = None
    try:
        eng = create_engine(PG_ADMIN)
        with eng.connect() as c:
            info["postgres"] = str(c.execute(text("SHOW server_version")).scalar())
        eng.dispose()
    except Exception:
        info["postgres"] = None
    return info


COLUMNS = [("name", "{}"), ("images", "{}"), ("requests", "{}"), ("wall_s", "{:.1f}"),
           ("images_per_min", "{:.1f}"), ("utilization", "{:.3f}"), ("http_429", "{}"), ("p50_s", "{:.2f}"),
           ("p95_s", "{:.2f}")]


def table(result: dict[str, Any]) -> str:
    columns = COLUMNS + ([("items_per_s", "{:.1f}")] if any("items_per_s" in r for r in result["runs"]) else [])
    rows = [[name for name, _ in columns]]
    notes: list[str] = []
    for run in result["runs"]:
        row = []
        for name, fmt in columns:
            v = run.get(name)
            row.append("-" if v is None else fmt.format(v))
        rows.append(row)
        if run.get("error"):
            notes.append(f"{run['name']}: ERROR {run['error']}")
        elif run.get("note"):
            notes.append(f"{run['name']}: {run['note']}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = [f"scenario {result['scenario']} on {result['machine']['cores']} cores, "
             f"load {result['machine']['load_avg_start']}"]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths,
                                                                                                  strict=True))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += notes
    for k, v in (result.get("summary") or {}).items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines)

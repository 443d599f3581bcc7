"""Throwaway services and subprocesses for one benchmark invocation: a Postgres database per run, empty
Redis databases flushed after use, and every child process killed at the end (process groups by id)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

#: admin connection for CREATE/DROP DATABASE (env BENCH_PG_ADMIN_URL overrides)
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
#: Redis server without a database index (env BENCH_REDIS_URL overrides)
REDIS_BASE = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
#: Redis database indexes the bench may use (only empty ones are taken; tests use 9, the default config 0)
REDIS_DBS = range(10, 16)
#: how long stop() gives a process group to exit after SIGTERM before SIGKILL
STOP_GRACE_S = 5.0


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh Postgres database; dropped (with its connections) afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def redis_databases(n: int) -> Iterator[list[str]]:
    """`n` empty Redis databases (urls), flushed afterwards."""
    client = redis.Redis.from_url(REDIS_BASE)
    try:
        free = [db for db in REDIS_DBS if not redis.Redis.from_url(f"{REDIS_BASE}/{db}").dbsize()]
        if len(free) < n:
            raise RuntimeError(f"need {n} empty Redis databases among {list(REDIS_DBS)}, found {free}")
        urls = [f"{REDIS_BASE}/{db}" for db in free[:n]]
        try:
            yield urls
        finally:
            for url in urls:
                with contextlib.suppress(redis.RedisError):
                    redis.Redis.from_url(url).flushdb()
    finally:
        client.close()


def blocked_consumers(redis_url: str) -> int:
    """Connections to this Redis database currently waiting in BRPOP: one per ready Celery consumer."""
    db = int(redis_url.rsplit("/", 1)[1])
    client = redis.Redis.from_url(REDIS_BASE)
    try:
        return sum(1 for c in client.client_list() if int(c.get("db", -1)) == db and c.get("cmd") == "brpop")
    finally:
        client.close()


def wait_consumers(redis_url: str, n: int, procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 90) -> float:
    """Wait until `n` Celery consumers listen on the broker; returns the seconds waited."""
    t0 = time.monotonic()
    while blocked_consumers(redis_url) < n:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"worker exited with code {dead[0].returncode} before it was ready "
                               f"(see {getattr(dead[0], 'log_path', 'its log')})")
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"only {blocked_consumers(redis_url)} of {n} workers ready after {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - t0


class Processes:
    """Every subprocess this invocation started, each in its own process group, so stop_all() ends them and
    their children even on error. Output goes to log files in `log_dir`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: Sequence[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"{name}-{len(self._procs)}.log"
        with open(log_path, "wb") as log:
            p = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        p.log_path = log_path  # type: ignore[attr-defined]
        self._procs.append(p)
        return p

    def stop(self, procs: Sequence[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            # anything the process left in its group (it should have none) goes too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        self.stop(self._procs)
        self._procs = [p for p in self._procs if p.poll() is None]


@dataclass(frozen=True)
class Measured:
    returncode: int
    wall_s: float
    #: peak resident set size of that process alone (os.wait4's rusage), MB
    peak_rss_mb: float
    output: str


def run_measured(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], timeout_s: float = 600) -> Measured:
    """Run a command to the end; its wall time and its own peak RSS (from os.wait4, not RUSAGE_CHILDREN,
    which mixes in every other child of this process)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.monotonic()
        p = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            while True:
                pid, status, usage = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    break
                if time.monotonic() - t0 > timeout_s:
                    os.killpg(p.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(p.pid, 0)
                    break
                time.sleep(0.02)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            raise
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text_out = out.read().decode("utf-8", "replace")
    return Measured(p.returncode, wall, usage.ru_maxrss / 1024, text_out)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> Iterator[tuple[int, str, int, float]]:
    """(pid, comm, process group, cpu seconds) of every process we can read."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): pgrp is field 5, utime/stime are fields 14/15
        yield int(entry.name), comm, int(fields[2]), (int(fields[11]) + int(fields[12])) / _CLK_TCK


CpuSnapshot = dict[int, tuple[str, float]]


def cpu_snapshot(pgids: Sequence[int]) -> CpuSnapshot:
    """CPU seconds used so far, per process, labelled: "workers" (our worker process groups), "postgres" and
    "redis" (every such process on the machine: shared with anything else running), and this process as
    "bench_and_sandbox" (pid 0)."""
    groups = set(pgids)
    snap: CpuSnapshot = {}
    for pid, comm, pgrp, cpu in _proc_stats():
        if pgrp in groups:
            snap[pid] = ("workers", cpu)
        elif comm.startswith("postgres"):
            snap[pid] = ("postgres", cpu)
        elif comm.startswith("redis-server"):
            snap[pid] = ("redis", cpu)
    t = os.times()
    snap[0] = ("bench_and_sandbox", t.user + t.system)
    return snap


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per label between two snapshots; a process that ended in between is not counted."""
    out = {"workers": 0.0, "postgres": 0.0, "redis": 0.0, "bench_and_sandbox": 0.0}
    for pid, (label, cpu) in after.items():
        prev = before.get(pid)
        out[label] += cpu - (prev[1] if prev is not None and prev[0] == label else 0.0)
    return {k: round(v, 2) for k, v in out.items()}

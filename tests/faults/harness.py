"""A real cluster for fault tests: a config file, `pipeline submit`, `pipeline worker` subprocesses, and the
figures every fault test ends with.

Figures (one line per test, also appended to .pipeline/fault-figures.txt):
    items         items of the job
    lost          items not in a final state, or succeeded/cached without their output object in the bucket
    duplicated    items with two ledger 'image' rows (succeeded twice) + output keys written with two different
                  contents (the bucket is versioned, so every write of a key is visible)
    billed        images the sandbox billed (its ledger)
    extra_billed  billed - images actually needed (succeeded items; cache hits need none)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(Path(sys.executable).parent / "pipeline")
FIGURES_FILE = ROOT / ".pipeline" / "fault-figures.txt"
FINAL = ("succeeded", "cached", "failed", "blocked", "cancelled")
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class Figures:
    fault: str
    items: int
    lost: int
    duplicated: int
    billed: int
    extra_billed: int

    def line(self) -> str:
        return (f"fault={self.fault} items={self.items} lost={self.lost} duplicated={self.duplicated} "
                f"billed={self.billed} extra_billed={self.extra_billed}")


def record(fig: Figures, capsys: Any, detail: str = "") -> None:
    """Print the figure line (past pytest's capture) and append it to the figures file, with `detail` (what
    the test observed besides the figures) as a trailing comment there."""
    line = fig.line()
    with capsys.disabled():
        sys.stdout.write(f"\n{line}\n")
        sys.stdout.flush()
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES_FILE.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}{'  # ' + detail if detail else ''}\n")


class Bucket:
    """A versioned bucket on an S3 endpoint, read with boto3 to check outputs."""

    def __init__(self, endpoint_url: str, name: str, prefix: str = "runs") -> None:
        self.endpoint_url = endpoint_url
        self.name = name
        self.prefix = prefix
        self.client = boto3.session.Session(**{
            "aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1",
        }).client("s3", endpoint_url=endpoint_url)

    def create(self) -> Bucket:
        self.client.create_bucket(Bucket=self.name)
        self.client.put_bucket_versioning(Bucket=self.name, VersioningConfiguration={"Status": "Enabled"})
        return self

    @property
    def storage_url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def versions(self) -> dict[str, set[str]]:
        """Every key under the prefix -> the distinct ETags (contents) it was ever written with."""
        out: dict[str, set[str]] = {}
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.name,
                                                                               Prefix=self.prefix + "/"):
            for v in page.get("Versions", []):
                out.setdefault(v["Key"][len(self.prefix) + 1:], set()).add(v["ETag"])
        return out

    def writes(self) -> Counter[str]:
        """How many times each key was written."""
        n: Counter[str] = Counter()
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.name,
                                                                               Prefix=self.prefix + "/"):
            for v in page.get("Versions", []):
                n[v["Key"][len(self.prefix) + 1:]] += 1
        return n

    def close(self) -> None:
        self.client.close()


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Cluster:
    """One test's cluster: its working directory (pipeline.yaml, spool, logs) and its worker processes."""

    tmp: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    _engine: Engine | None = None

    def __post_init__(self) -> None:
        base = {k: v for k, v in os.environ.items()
                if not (k.startswith("PIPELINE_") or k.startswith("AWS_") or k.endswith("_API_KEY"))}
        self.env = base | S3_ENV | self.env
        self.write_config()

    def write_config(self) -> None:
        (self.tmp / "pipeline.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))

    # -- CLI and workers -------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PIPELINE, *args], cwd=self.tmp, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def submit(self, manifest: dict[str, Any], name: str = "job.yaml") -> int:
        (self.tmp / name).write_text(yaml.safe_dump(manifest, sort_keys=False))
        res = self.cli("submit", name, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        return int(json.loads(res.stdout.strip().splitlines()[-1])["job_id"])

    def start_worker(self, concurrency: int = 4, extra_env: dict[str, str] | None = None,
                     args: list[str] | None = None) -> Worker:
        n = len(self.workers)
        log = self.tmp / f"worker-{n}.log"
        with log.open("wb") as f:
            proc = subprocess.Popen([PIPELINE, "worker", "--concurrency", str(concurrency), *(args or [])],
                                    cwd=self.tmp,
                                    env=self.env | (extra_env or {}), stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        w = Worker(proc, log)
        self.workers.append(w)
        return w

    def kill(self, w: Worker) -> None:
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(timeout=10)

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {w.log.name}\n{w.log_text()}" for w in self.workers)

    # -- the database ----------------------------------------------------------------------------

    @property
    def db(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.config["database_url"], pool_pre_ping=True, pool_size=2)
        return self._engine

    def q(self, sql: str, **params: Any) -> list[Any]:
        for attempt in range(30):  # the database may be restarting under a fault test
            try:
                with self.db.connect() as c:
                    return list(c.execute(text(sql), params))
            except Exception:
                if attempt == 29:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def counts(self, job_id: int) -> Counter[str]:
        return Counter({s: n for s, n in self.q(
            "SELECT state, count(*) FROM items WHERE job_id = :j GROUP BY state", j=job_id)})

    def wait_final(self, job_id: int, timeout_s: float, *, bucket: Bucket | None = None) -> Counter[str]:
        """Wait until every item is final (and, with `bucket`, every succeeded/cached output is there)."""
        deadline = time.monotonic() + timeout_s
        while True:
            c = self.counts(job_id)
            if all(s in FINAL for s in c) and (bucket is None or not missing_outputs(self, job_id, bucket)):
                return c
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not final after {timeout_s} s: {dict(c)}\n{self.logs()[-6000:]}")
            time.sleep(0.5)

    def wait_progress(self, job_id: int, done: int, timeout_s: float = 60) -> None:
        """Wait until at least `done` items are final."""
        deadline = time.monotonic() + timeout_s
        while sum(n for s, n in self.counts(job_id).items() if s in FINAL) < done:
            assert time.monotonic() < deadline, f"fewer than {done} items final after {timeout_s} s\n" + \
                self.logs()[-4000:]
            time.sleep(0.2)

    def owner_pid(self, owner: str | None) -> int | None:
        m = re.match(r"^.*-(\d+)-[0-9a-f]{8}$", owner or "")
        return int(m.group(1)) if m else None

    def close(self) -> None:
        self.stop_workers()
        if self._engine is not None:
            self._engine.dispose()


@contextlib.contextmanager
def cluster(tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> Iterator[Cluster]:
    tmp.mkdir(parents=True, exist_ok=True)
    c = Cluster(tmp, config, env or {})
    try:
        yield c
    finally:
        c.close()


def base_config(database_url: str, broker_url: str, storage_url: str, sandbox_url: str, *,
                gate_url: str | None = None, **worker: Any) -> dict[str, Any]:
    """Cluster config. The gate is in Redis: `gate_url`, or the broker's Redis when the broker is Redis (no
    `redis_url`, so each worker gates in-process, until the shared Redis gate exists)."""
    cfg: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": broker_url,
        "storage_url": storage_url,
        "providers": {"sandbox": {"base_url": sandbox_url, "limits": {"rpm": 60000, "concurrency": 64}}},
        "worker": {"lease_s": 10, "max_attempts": 6, "backoff_base_s": 0.2, "backoff_cap_s": 2.0,
                   "queued_timeout_s": 30, "max_queued": 48, **worker},
    }
    if shared_gate_available():
        cfg["redis_url"] = gate_url or broker_url
    return cfg


def shared_gate_available() -> bool:
    return (ROOT / "pipeline" / "gate" / "redis.py").exists()


def manifest(name: str, n: int, *, prompt: str = "Studio photo of {{ title }}", **extra: Any) -> dict[str, Any]:
    items = [{"id": f"p{i:04d}", "title": f"product number {i}"} for i in range(n)]
    return {"job": name, "providers": ["sandbox"], "defaults": {"resolution": "1K", "aspect_ratio": "1:1"},
            "output": {"key": "out/{{ job }}/{{ id }}.png"}, "prompt": prompt, "items": items, **extra}


def missing_outputs(c: Cluster, job_id: int, bucket: Bucket) -> list[str]:
    keys = {k for (k,) in c.q("SELECT output_key FROM items WHERE job_id = :j AND state IN ('succeeded', 'cached')",
                                j=job_id)}
    return sorted(keys - set(bucket.versions()))


def figures(fault: str, c: Cluster, job_id: int, bucket: Bucket, billed: int) -> Figures:
    """The figure line's numbers. Also checks that the finished job holds no budget reservation and no
    pending cache reservation (a leak would block later work)."""
    reserved = c.q("SELECT reserved_usd FROM jobs WHERE id = :j", j=job_id)[0][0]
    assert reserved == 0, f"job {job_id} still holds {reserved} USD of budget reservations"
    held = c.q("SELECT count(*) FROM items WHERE job_id = :j AND reserved_usd <> 0", j=job_id)[0][0]
    assert held == 0, f"{held} items still hold budget reservations"
    rows = c.q("SELECT state, output_key FROM items WHERE job_id = :j", j=job_id)
    versions = bucket.versions()
    not_final = sum(1 for state, _ in rows if state not in FINAL)
    no_output = sum(1 for state, key in rows if state in ("succeeded", "cached") and key not in versions)
    twice = c.q("SELECT item_id FROM ledger WHERE job_id = :j AND kind = 'image' GROUP BY item_id "
                "HAVING count(*) > 1", j=job_id)
    rewritten = sum(1 for _, key in rows if len(versions.get(key, ())) > 1)
    needed = sum(1 for state, _ in rows if state == "succeeded")
    return Figures(fault, len(rows), not_final + no_output, len(twice) + rewritten, billed, billed - needed)

"""Secrets: a cluster run with sentinel API keys, then a scan of everything the run produced. The keys are
really sent (the sandbox only accepts the good one), one provider gets a wrong key (auth failure: provider
paused, items failed) and one is a hostile endpoint that echoes every header it receives back in its error
bodies and in a text-only answer. The sentinel (and its base64 form) must appear in no worker log line
(DEBUG, text and JSON formats), no database row (every table, every column), no report format, no broker
message or Redis key (Redis MONITOR sees every command), no exception text and no metrics line."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pipeline.sandbox.server import start_sandbox
from tests.faults.harness import Bucket, Cluster, base_config, cluster, manifest
from tests.faults.private import PrivateRedis, free_port

MARK = "SENTINEL"
GOOD = f"sk-{MARK}-good-{uuid.uuid4().hex}"
BAD = f"sk-{MARK}-bad-{uuid.uuid4().hex}"
OPENAI = f"sk-{MARK}-oai-{uuid.uuid4().hex}"
ECHO = f"sk-{MARK}-echo-{uuid.uuid4().hex}"


def needles() -> list[str]:
    """What must never be found: the marker itself (catches partial keys), every key and its base64 form."""
    out = [MARK, MARK.lower()]
    for key in (GOOD, BAD, OPENAI, ECHO):
        out += [key, base64.b64encode(key.encode()).decode()[:-4], key[-16:]]
    return out


def leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {n!r} at ...{text[max(0, text.find(n) - 80):text.find(n) + 40]!r}..."
            for n in needles() if n in text]


class _Echo(BaseHTTPRequestHandler):
    """A hostile Gemini endpoint: every answer quotes the request headers (the key among them). The key
    lands right at the point where the adapter cuts long provider messages, to catch a half-redacted key."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace")
        key = self.headers.get("x-goog-api-key", "")
        echoed = f"{'x' * 285}{key} headers: {dict(self.headers)!r}"
        if "text-only" in body:
            payload: dict[str, Any] = {"candidates": [{"content": {"parts": [{"text": f"I saw {key}. {echoed}"}]},
                                                       "finishReason": "STOP"}]}
            status = 200
        elif "invalid" in body:
            payload = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": f"bad key {key} {echoed}"}}
            status = 400
        else:
            payload = {"error": {"code": 500, "status": "INTERNAL", "message": echoed}}
            status = 500
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo-Key", key)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _echo_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class BrokerTap:
    """Redis MONITOR on the broker: every command any client sends (messages, gate scripts, keys)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=None)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> BrokerTap:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with self.client.monitor() as m:
                for cmd in m.listen():
                    self.lines.append(str(cmd.get("command", "")))
                    if self._stop.is_set():
                        return
        except (redis.RedisError, ValueError, OSError):
            return

    def stop(self) -> str:
        self._stop.set()
        self.client.ping()  # one more command wakes the monitor loop
        self._thread.join(timeout=5)
        self.client.close()
        return "\n".join(self.lines)


def decoded_messages(monitor_text: str) -> str:
    """The bodies of kombu messages (base64 JSON) found in the MONITOR stream, decoded."""
    out = []
    for line in monitor_text.splitlines():
        start = line.find('{"body"')
        if start < 0:
            continue
        try:
            msg = json.loads(line[start:].rsplit("}", 1)[0] + "}")
            out.append(base64.b64decode(msg["body"]).decode(errors="replace"))
        except (ValueError, KeyError):
            continue
    return "\n".join(out)


def dump_redis(url: str) -> str:
    r = redis.Redis.from_url(url)
    parts = []
    try:
        for key in r.scan_iter(count=1000):
            kind = r.type(key).decode()
            value: Any = {"string": r.get, "list": lambda k: r.lrange(k, 0, -1), "hash": r.hgetall,
                          "set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1, withscores=True)}.get(
                kind, lambda k: None)(key)
            parts.append(f"{key!r} {kind} {value!r}")
    finally:
        r.close()
    return "\n".join(parts)


def dump_database(c: Cluster) -> str:
    tables = [t for (t,) in c.q("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert {"jobs", "items", "attempts", "ledger", "provider_states"} <= set(tables), tables
    return "\n".join(f"{t}: {row[0]}" for t in tables for row in c.q(f'SELECT t::text FROM "{t}" t'))


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_no_secret_anywhere(tmp_path: Path, fault_pg_url: str, private_redis: PrivateRedis, bucket: Bucket) -> None:
    echo_gen = _echo_server()
    echo_url = next(echo_gen)
    sandbox = start_sandbox({"seed": 9, "protocols": {
        "gemini": {"latency": {"min_s": 0.05, "max_s": 0.2}, "api_keys": [GOOD]},
        "openai": {"latency": {"min_s": 0.05, "max_s": 0.2}, "api_keys": [OPENAI]}}})
    cfg = base_config(fault_pg_url, private_redis.url, bucket.storage_url, sandbox.url, max_attempts=2)
    cfg["providers"] = {
        "sandbox": {**cfg["providers"]["sandbox"], "api_key_env": "GEMINI_API_KEY"},
        "sandbox-badkey": {"kind": "sandbox", "base_url": sandbox.url, "api_key_env": "SECOND_API_KEY",
                           "prices": {"1K": "0.134"}},
        "sandbox-openai": {"kind": "openai-images", "base_url": sandbox.url, "api_key_env": "OPENAI_API_KEY",
                           "prices": {"1K": "0.09"}},
        "hostile": {"kind": "gemini", "base_url": echo_url, "api_key_env": "HOSTILE_API_KEY",
                    "prices": {"1K": "0.05"}},
    }
    cfg["log_level"] = "DEBUG"
    env = {"AWS_ENDPOINT_URL_S3": bucket.endpoint_url, "GEMINI_API_KEY": GOOD, "SECOND_API_KEY": BAD,
           "OPENAI_API_KEY": OPENAI, "HOSTILE_API_KEY": ECHO}
    tap = BrokerTap(private_redis.url).start()
    metrics_port = free_port()
    found: list[str] = []
    try:
        with cluster(tmp_path, cfg, env) as c:
            good = manifest("secrets-good", 12)
            good["items"][0]["prompt"] = "retry me [sandbox:500x1]"
            good["items"][1]["prompt"] = "blocked [sandbox:block-prompt]"
            badkey = manifest("secrets-badkey", 3, providers=["sandbox-badkey"], prompt="Bad {{ title }}")
            openai = manifest("secrets-openai", 3, providers=["sandbox-openai"], prompt="OAI {{ title }}")
            jobs = [c.submit(good, "good.yaml"), c.submit(badkey, "bad.yaml"), c.submit(openai, "oai.yaml")]
            hostile = manifest("secrets-hostile", 3, providers=["hostile"], prompt="Echo {{ title }}")
            hostile["items"][1]["prompt"] = "text-only please"
            hostile["items"][2]["prompt"] = "invalid please"
            jobs.append(c.submit(hostile, "hostile.yaml"))
            c.start_worker(concurrency=4, args=["--metrics-port", str(metrics_port)])
            c.start_worker(concurrency=4, extra_env={"PIPELINE_LOG_FORMAT": "json"})
            for job_id in jobs:
                c.wait_final(job_id, 120)
            assert c.counts(jobs[0])["succeeded"] == 11 and c.counts(jobs[2])["succeeded"] == 3
            assert c.counts(jobs[1]) == {"failed": 3} and c.counts(jobs[3]) == {"failed": 3}
            errors = c.q("SELECT error_class, error_detail FROM attempts WHERE error_detail IS NOT NULL")
            classes = {cls for cls, _ in errors}
            assert {"auth", "unavailable", "content_blocked", "invalid_request"} <= classes, classes
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text

            before = dump_database(c)  # rerun and cancel below rewrite failure reasons: keep them first
            assert "API key not valid" in before and "bad key ***" in before, "the error texts were expected"
            outputs: dict[str, str] = {"metrics": metrics, "database before rerun": before}
            commands = [["status", str(j), "--json"] for j in jobs] + [["report", str(j), "--json"] for j in jobs]
            for n, job_id in enumerate((jobs[1], jobs[3])):  # the jobs with error texts, in every format
                commands += [["status", str(job_id)], ["report", str(job_id)],
                             ["report", str(job_id), "--by", "day", "--csv", f"r{n}.csv"],
                             ["report", str(job_id), "--html", f"r{n}.html"]]
            commands += [["providers"], ["providers", "--json"], ["report", "--by", "provider", "--json"],
                         ["rerun", str(jobs[3]), "--failed"], ["cancel", str(jobs[3])]]
            for args in commands:
                res = c.cli(*args)
                outputs[" ".join(args)] = res.stdout + res.stderr
            for f in sorted(tmp_path.glob("r*.csv")) + sorted(tmp_path.glob("r*.html")):
                outputs[f.name] = f.read_text(errors="replace")
            assert any(f.suffix == ".html" for f in tmp_path.glob("r*.html")), "no HTML report written"
            c.stop_workers()
            logs = {w.log.name: w.log_text() for w in c.workers}
            assert all(len(text) > 10_000 for text in logs.values()), "DEBUG logs were expected"
            assert any('"level": "DEBUG"' in text for text in logs.values()), "no JSON log lines"
            database = dump_database(c)
            for name, text in {**logs, **outputs, "database": database}.items():
                found += leaks(name, text)
            for reason, in c.q("SELECT failure_reason FROM items WHERE failure_reason IS NOT NULL"):
                found += leaks("items.failure_reason", reason)
            for _, detail in errors:
                found += leaks("attempts.error_detail", detail)
        monitor = tap.stop()
        assert "LPUSH" in monitor.upper() or "lpush" in monitor, "the tap saw no broker message"
        found += leaks("broker (MONITOR)", monitor)
        found += leaks("broker messages (decoded)", decoded_messages(monitor))
        found += leaks("redis keys", dump_redis(private_redis.url))
        assert not found, "secret found:\n" + "\n".join(found[:20])
    finally:
        if tap._thread.is_alive():
            tap.stop()
        sandbox.stop()
        next(echo_gen, None)

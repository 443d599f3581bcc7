"""The Prometheus collector (values read from the database at scrape time) and its HTTP server.

    pipeline_images{provider,state}                      gauge    items in a final state ("cache" for cached)
    pipeline_cost_usd_total{provider}                     counter  USD billed, from the ledger
    pipeline_provider_requests_total{provider,outcome}    counter  provider calls by attempt outcome
    pipeline_provider_rate_limited_total{provider}        counter  calls answered 429 (rate limited)
    pipeline_provider_request_duration_seconds{provider}  histogram  call latency
    pipeline_queue_depth                                  gauge    items published, not yet claimed
    pipeline_running_items                                gauge    items claimed by a worker
    pipeline_due_items                                    gauge    pending items whose time has come
    pipeline_job_budget_used_usd{job}                     gauge    spent by a recent job (+ _reserved_usd, _max_usd)
    pipeline_budget_used_usd{period}                      gauge    global day/month spend (+ _cap_usd)
    pipeline_metrics_database_up                          gauge    0 when the last scrape could not read the database
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from pipeline.clock import utcnow
from pipeline.errors import InputError
from pipeline.metrics.queries import DURATION_BUCKETS_S, Snapshot, snapshot

log = logging.getLogger("pipeline.metrics")

#: a snapshot is reused for scrapes within this long (several Prometheus servers, or a dashboard refresh)
MAX_AGE_S = 2.0


class PipelineCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime] = utcnow,
                 max_age_s: float = MAX_AGE_S, *, budget_timezone: str = "UTC") -> None:
        self.sessions = sessions
        self.budget_timezone = budget_timezone
        self.clock = clock
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._cached: tuple[float, Snapshot] | None = None

    def _snapshot(self) -> Snapshot | None:
        with self._lock:
            now_m = time.monotonic()
            if self._cached is not None and now_m - self._cached[0] < self.max_age_s:
                return self._cached[1]
            try:
                with self.sessions() as s:
                    snap = snapshot(s, self.clock(), budget_timezone=self.budget_timezone)
            except Exception as e:  # the scrape still answers, saying the database is down
                log.warning("metrics: database not readable: %s: %s", type(e).__name__, e)
                return None
            self._cached = (now_m, snap)
            return snap

    def collect(self) -> Iterable[Metric]:
        snap = self._snapshot()
        up = GaugeMetricFamily("pipeline_metrics_database_up", "1 when the database answered the last scrape")
        up.add_metric([], 0 if snap is None else 1)
        yield up
        if snap is not None:
            yield from metrics_of(snap)


def metrics_of(snap: Snapshot) -> Iterable[Metric]:
    images = GaugeMetricFamily("pipeline_images", "Items in a final state, by provider (cache for cached items)",
                               labels=["provider", "state"])
    for (provider, state), n in sorted(snap.images.items()):
        images.add_metric([provider, state], n)
    yield images
    cost = CounterMetricFamily("pipeline_cost_usd", "USD billed by providers (ledger)", labels=["provider"])
    for provider, usd in sorted(snap.cost_usd.items()):
        cost.add_metric([provider], float(usd))
    yield cost
    requests = CounterMetricFamily("pipeline_provider_requests", "Provider calls by attempt outcome",
                                   labels=["provider", "outcome"])
    for (provider, outcome), n in sorted(snap.requests.items()):
        requests.add_metric([provider, outcome], n)
    yield requests
    limited = CounterMetricFamily("pipeline_provider_rate_limited", "Provider calls answered 429",
                                  labels=["provider"])
    for provider, n in sorted(snap.rate_limited.items()):
        limited.add_metric([provider], n)
    yield limited
    hist = HistogramMetricFamily("pipeline_provider_request_duration_seconds", "Provider call latency",
                                 labels=["provider"])
    for provider, d in sorted(snap.durations.items()):
        buckets = [(repr(float(b)), float(n)) for b, n in zip(DURATION_BUCKETS_S, d.buckets, strict=True)]
        hist.add_metric([provider], [*buckets, ("+Inf", float(d.count))], d.sum_s)
    yield hist
    for name, doc, value in (("pipeline_queue_depth", "Items published to the broker, not yet claimed", snap.queued),
                             ("pipeline_running_items", "Items claimed by a worker", snap.running),
                             ("pipeline_due_items", "Pending items whose next attempt is due", snap.due)):
        g = GaugeMetricFamily(name, doc)
        g.add_metric([], value)
        yield g
    used = GaugeMetricFamily("pipeline_job_budget_used_usd", "USD spent by a job", labels=["job"])
    reserved = GaugeMetricFamily("pipeline_job_budget_reserved_usd", "USD reserved by a job's calls in flight",
                                 labels=["job"])
    cap = GaugeMetricFamily("pipeline_job_budget_max_usd", "A job's budget (budget.max_usd)", labels=["job"])
    for j in snap.jobs:
        used.add_metric([j.job], float(j.spent_usd))
        reserved.add_metric([j.job], float(j.reserved_usd))
        if j.max_usd is not None:
            cap.add_metric([j.job], float(j.max_usd))
    yield from (used, reserved, cap)
    p_used = GaugeMetricFamily("pipeline_budget_used_usd", "USD spent in the current global period",
                               labels=["period"])
    p_cap = GaugeMetricFamily("pipeline_budget_cap_usd", "The global period's cap", labels=["period"])
    for p in snap.periods:
        p_used.add_metric([p.period], float(p.spent_usd))
        if p.cap_usd is not None:
            p_cap.add_metric([p.period], float(p.cap_usd))
    yield from (p_used, p_cap)


@dataclass
class MetricsServer:
    port: int
    stop: Callable[[], None]


def serve_metrics(sessions: sessionmaker[Session], port: int, addr: str = "0.0.0.0", *,
                  budget_timezone: str = "UTC") -> MetricsServer:
    """Serve /metrics on addr:port from a daemon thread (port 0: any free port). `stop()` shuts it down."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(sessions, budget_timezone=budget_timezone))
    ProcessCollector(registry=registry)
    try:
        httpd, thread = start_http_server(port, addr, registry)
    except OSError as e:
        raise InputError(f"cannot serve metrics on {addr}:{port}: {e.strerror or e}", where="--metrics-port") from None

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    return MetricsServer(port=int(httpd.server_port), stop=stop)

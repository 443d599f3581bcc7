"""Use cases the CLI (and tests) call: load and expand a manifest, submit it, estimate it, run it here, run
the beat.

Thin glue over manifest/, core/, runtime; the CLI only parses arguments and renders results. Importing this
module loads neither Celery nor boto3 (`pipeline validate` needs neither): the processing loop and the S3
client are imported where they are used.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.config import Settings
from pipeline.core import submit as submit_mod
from pipeline.core.costs import list_cost
from pipeline.db.models import Item, Job
from pipeline.errors import InputError, StorageError
from pipeline.manifest import ItemSpec, Manifest, expand_items, load_manifest
from pipeline.money import ZERO, usd
from pipeline.providers.checks import first_refusal
from pipeline.providers.kie_refs import check_manifest as check_references
from pipeline.providers.pricing import table_cost
from pipeline.references import resolve_reference
from pipeline.reports.queries import JobSummary, job_summary
from pipeline.runtime import SPOOL_ROOT, Runtime, lazy_s3_reader, open_runtime
from pipeline.schedules.beat import ScheduleTicker
from pipeline.schedules.cron import Run, manual_run_vars
from pipeline.schedules.fire import Fire, LoadedRun, LoadRun
from pipeline.states import ItemState
from pipeline.storage.spooled import scan_spools

log = logging.getLogger("pipeline.services")


@dataclass(frozen=True)
class Loaded:
    manifest: Manifest
    specs: list[ItemSpec]
    job: submit_mod.JobSpec


def load(path: Path, settings: Settings, *, extra_vars: Mapping[str, object] | None = None,
         job_suffix: str | None = None, s3_get: Callable[[str, str], bytes] | None = None) -> Loaded:
    """Load, validate and expand a manifest; every provider it names must be configured. Writes nothing.
    s3:// references are read with the AWS credentials from the environment. Templates always see `run_date`,
    `run_at` and `schedule` (a schedule passes its own in `extra_vars`; by hand: today, "manual"); `job_suffix`
    makes the job `<job>-<suffix>` (a scheduled run)."""
    if s3_get is None:
        s3_get = lazy_s3_reader()
    manifest = load_manifest(path, extra_vars=extra_vars)
    tz = manifest.schedule.timezone if manifest.schedule else None
    run: dict[str, Any] = {"extra_vars": {**manual_run_vars(utcnow(), tz), **manifest.extra_vars}}
    if job_suffix:
        run["job"] = f"{manifest.job}-{job_suffix}"
    manifest = manifest.model_copy(update=run)
    for name in manifest.providers:
        if name not in settings.providers:
            raise InputError(f"unknown provider {name!r} (configured: {', '.join(sorted(settings.providers))})",
                             where=f"{path}: providers")
    check_job_settings(manifest, settings, utcnow())
    check_output_root(settings)
    def fetch(source: str, base: Path) -> Any:
        return resolve_reference(source, base, s3_get=s3_get, allow_private=settings.allow_private_references)

    specs = expand_items(manifest, fetch_reference=fetch)
    check_references(settings, manifest.providers, (len(spec.references) for spec in specs),
                     where=f"{path}: providers")
    refused = first_refusal(
        (settings.provider(n) for n in manifest.providers),
        ((s.key, s.resolution, s.aspect_ratio, [r.size_bytes for r in s.references]) for s in specs))
    if refused:
        raise InputError(refused, where=f"{path}: providers")
    job = submit_mod.JobSpec(
        name=manifest.job, providers=list(manifest.providers), mode=manifest.mode,
        batch=use_batch(manifest, settings, path),
        manifest=manifest.model_dump(mode="json", exclude={"items"}), manifest_path=str(path.resolve()),
        region=manifest.region, max_usd=manifest.budget.max_usd if manifest.budget else None,
        max_price_usd=manifest.max_price, deadline_at=manifest.deadline_at(),
        exclusive_keys=not (manifest.output and manifest.output.shared),
    )
    return Loaded(manifest, specs, job)


def check_job_settings(manifest: Manifest, settings: Settings, now: datetime) -> None:
    """What the manifest alone cannot tell: its region must be one its providers define, and an absolute deadline
    must not have passed."""
    if manifest.region is not None:
        known = sorted({r for n in manifest.providers for r in settings.provider(n).regions})
        if manifest.region not in known:
            offered = f"they define {', '.join(known)}" if known else "they define no regions"
            raise InputError(f"region {manifest.region!r} is not a region of this job's providers ({offered}; "
                             "see `regions:` in the provider config)", where=manifest.where("region"))
    if manifest.deadline is not None:
        deadline = manifest.deadline_at(now)
        if deadline is not None and deadline <= now:
            raise InputError(f"deadline {deadline:%Y-%m-%d %H:%M} UTC has already passed",
                             where=manifest.where("deadline"))


def check_output_root(settings: Settings) -> None:
    """Refuse (exit 2) a storage location the images could not be stored in safely, before anything is paid:
    for file storage, a symbolic link leading out of the root or `_cache`/`_thumbs` being links. Reads only; S3
    needs the network and is checked when a runtime opens."""
    from pipeline.storage.factory import open_storage

    if settings.storage_url.strip().lower().startswith("s3:"):
        return
    try:
        open_storage(settings.storage_url).check_location()
    except StorageError as e:
        raise InputError(str(e), where=f"storage_url {settings.storage_url}") from None


def use_batch(manifest: Manifest, settings: Settings, path: Path, now: datetime | None = None) -> bool:
    """Batch tier for `mode: batch`, and for `mode: auto` when the deadline is at least the batch turnaround
    away and the job lists a batch provider. `mode: batch` without a batch provider is an input error."""
    batch_names = [n for n in manifest.providers if settings.provider(n).kind == "gemini-batch"]
    if manifest.mode == "batch":
        if not batch_names:
            raise InputError("mode: batch needs a batch provider in providers (e.g. google-batch)",
                             where=f"{path}: mode")
        return True
    if manifest.mode == "auto" and batch_names:
        deadline = manifest.deadline_at(now)
        turnaround = timedelta(hours=settings.batch.turnaround_h)
        return deadline is not None and deadline - (now or utcnow()) >= turnaround
    return False


@dataclass(frozen=True)
class ProviderEstimate:
    provider: str
    images: int
    cost_usd: Decimal | None  # None: the provider has no price for some resolution used
    list_cost_usd: Decimal
    unpriced: tuple[str, ...]


def estimate(loaded: Loaded, settings: Settings, providers: list[str] | None = None) -> list[ProviderEstimate]:
    """Cost of the whole job on each provider (the job's own, or all configured): no provider is called."""
    names = providers or list(loaded.manifest.providers)
    out = []
    for name in names:
        cfg = settings.provider(name)
        total, lst, unpriced = ZERO, ZERO, set()
        for spec in loaded.specs:
            n_refs = len(spec.references)
            lst += list_cost(spec.resolution, n_refs)
            price = table_cost(cfg, spec.resolution, n_refs)
            if price is None:
                unpriced.add(spec.resolution)
                continue
            total += price
        out.append(ProviderEstimate(name, len(loaded.specs), None if unpriced else usd(total), usd(lst),
                                    tuple(sorted(unpriced))))
    return out


@contextlib.contextmanager
def local_sandbox_for(settings: Settings, names: list[str]) -> Iterator[dict[str, dict[str, Any]]]:
    """Start an in-process sandbox for the providers that have no base_url (the sandbox presets)."""
    needed = [n for n in names if not settings.provider(n).base_url]
    if not needed:
        yield {}
        return
    from pipeline.sandbox.server import start_sandbox

    server = start_sandbox()
    try:
        yield {n: {"base_url": server.url} for n in needed}
    finally:
        server.stop()


def submit(rt: Runtime, loaded: Loaded, now: datetime) -> submit_mod.SubmitResult:
    return submit_mod.submit(rt.sessions, loaded.job, loaded.specs, now)


def summary(rt: Runtime, job_id: int, since: datetime | None = None, *, with_spool: bool = False) -> JobSummary:
    """The job's summary; `with_spool` also tells which succeeded items wait in this host's spools (paid, not
    stored yet), for status, the end of a run and the reports."""
    with rt.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        out = job_summary(s, job, since=since)
    if with_spool:
        add_spool_state(rt.sessions, out)
    return out


#: item ids listed for spooled items (all are counted)
SPOOLED_SHOWN = 20


def add_spool_state(sessions: Any, summ: JobSummary, root: Path = SPOOL_ROOT) -> JobSummary:
    """Fill `spooled_items`/`spooled_keys`: the job's succeeded and cached items whose output key waits in a spool
    under `root` (this host's `.pipeline/spool/`: a disk-full or outage spooled them after they were paid)."""
    keys = sorted(scan_spools(root).keys())
    spooled: list[str] = []
    if keys:
        with sessions() as s:
            for i in range(0, len(keys), 1000):
                spooled.extend(s.scalars(select(Item.key).where(
                    Item.job_id == summ.job_id, Item.output_key.in_(keys[i:i + 1000]),
                    Item.state.in_([ItemState.SUCCEEDED, ItemState.CACHED]))))
    summ.spooled_items = len(spooled)
    summ.spooled_keys = sorted(spooled)[:SPOOLED_SHOWN]
    return summ


def flush_spool(rt: Runtime) -> None:
    """Try once more to store what this process spooled (end of a run); a store still refusing keeps it."""
    flush = getattr(rt.storage, "flush", None)
    if flush is None:
        return
    try:
        flush()
    except StorageError as e:
        log.warning("spooled images not uploaded: %s", e)


def process_here(rt: Runtime, job_id: int, *, concurrency: int | None = None,
                 on_progress: Callable[[JobSummary], None] | None = None, poll_s: float = 0.25) -> JobSummary:
    """Process a job to the end in this process: an in-process Celery worker on the configured broker, the
    dispatcher and sweeper driven from this thread. Returns the final summary."""
    from pipeline.processing import processing_loop

    conc = concurrency or rt.settings.worker.concurrency
    with processing_loop(rt, max_queued=min(rt.settings.worker.max_queued, conc * 2), job_id=job_id,
                         consume_here=conc, dispatch_thread=False) as loop:
        last = 0.0
        while True:
            loop.background.tick()
            now_m = time.monotonic()
            if now_m - last >= poll_s:
                last = now_m
                snap = summary(rt, job_id)
                if on_progress is not None:
                    on_progress(snap)
                if snap.finished:
                    loop.background.finish()  # the job is marked done and notified now, not by the next process
                    return snap
            time.sleep(0.02)


def open_for(settings: Settings, job_providers: list[str]) -> tuple[Runtime, contextlib.ExitStack]:
    """Open a runtime, starting an in-process sandbox first when the job needs one."""
    stack = contextlib.ExitStack()
    try:
        overrides = stack.enter_context(local_sandbox_for(settings, job_providers))
        rt = open_runtime(settings, provider_overrides=overrides)
        stack.callback(rt.close)
    except BaseException:
        stack.close()
        raise
    return rt, stack


def schedule_loader(settings: Settings) -> LoadRun:
    """How a real beat loads a scheduled run: `load` with the run's template variables and job suffix."""

    def load_run(path: Path, run: Run) -> LoadedRun:
        return load(path, settings, extra_vars=run.template_vars(), job_suffix=run.job_suffix)

    return load_run


#: how often the beat looks for due schedules
SCHEDULE_INTERVAL_S = 1.0


def run_beat(settings: Settings, *, on_fire: Callable[[Fire], None] | None = None,
             stop: threading.Event | None = None, on_ready: Callable[[], None] | None = None) -> None:
    """The `pipeline beat` process, until `stop` is set (or KeyboardInterrupt): the processing loop's background
    duties in a thread and, in the main thread, a look for due schedules every SCHEDULE_INTERVAL_S. In the
    embedded mode (memory:// broker) no other process can take the beat's messages, so it also consumes them."""
    from pipeline.processing import processing_loop

    stop = stop or threading.Event()
    names = sorted(n for n, p in settings.providers.items() if p.kind == "sandbox")
    rt, stack = open_for(settings, names if settings.embedded else [])
    with stack, processing_loop(rt, max_queued=settings.worker.max_queued,
                                consume_here=settings.worker.concurrency if settings.embedded else None):
        ticker = ScheduleTicker(rt.sessions, schedule_loader(rt.settings), rt.ctx.clock, on_fire)
        if on_ready is not None:
            on_ready()
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.is_set():
                ticker.tick()
                stop.wait(SCHEDULE_INTERVAL_S)

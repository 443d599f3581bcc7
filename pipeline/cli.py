"""The `pipeline` command: parses arguments, calls services, renders with rich. Nothing else lives here.

Exit codes: 0 ok, 1 some items failed or were blocked, 2 invalid input (nothing written).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from pipeline import services
from pipeline.clock import utcnow
from pipeline.config import Settings, load_settings
from pipeline.errors import InputError, PipelineError
from pipeline.reports import render
from pipeline.reports.queries import JobSummary, Totals
from pipeline.runtime import Runtime, open_runtime

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Batch image generation pipeline.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(db_app, name="db")
out = Console()
err = Console(stderr=True)

T = TypeVar("T")
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="pipeline.yaml to read (default: ./pipeline.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def fail(e: PipelineError) -> NoReturn:
    err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2 if isinstance(e, InputError) else 1)


def guarded(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except PipelineError as e:
        fail(e)


def settings_from(config: Path | None) -> Settings:
    from pipeline.logging_setup import configure_logging

    s = guarded(lambda: load_settings(config))
    guarded(lambda: configure_logging(s))
    return s


def money(v: Any) -> str:
    return f"${v:,.2f}" if not isinstance(v, str) else v


def render_summary(s: JobSummary, *, scope: str = "") -> None:
    render.render_summary(out, s, scope=scope)


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


@app.command()
def validate(manifest: Path, config: ConfigOpt = None) -> None:
    """Check a manifest (and its references and templates) without writing anything."""
    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    out.print(f"[green]ok[/] {manifest}: job {loaded.manifest.job!r}, {len(loaded.specs)} items, "
              f"providers {', '.join(loaded.manifest.providers)}")


@app.command()
def estimate(manifest: Path, config: ConfigOpt = None, as_json: JsonOpt = False,
             all_providers: Annotated[bool, typer.Option("--all", help="every configured provider")] = False) -> None:
    """Images and cost of a manifest on each provider. No provider is called."""
    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    names = sorted(settings.providers) if all_providers else None
    rows = guarded(lambda: services.estimate(loaded, settings, names))
    if as_json:
        emit_json({"job": loaded.manifest.job, "images": len(loaded.specs), "providers": [
            {"provider": r.provider, "images": r.images,
             "cost_usd": None if r.cost_usd is None else f"{r.cost_usd:.2f}",
             "list_cost_usd": f"{r.list_cost_usd:.2f}", "unpriced": list(r.unpriced)} for r in rows]})
        return
    t = Table(title=f"estimate for {loaded.manifest.job} ({len(loaded.specs)} images)", title_justify="left")
    for col in ("provider", "images", "cost", "list price", "saved"):
        t.add_column(col, justify="left" if col == "provider" else "right")
    for r in rows:
        cost = "unpriced " + ",".join(r.unpriced) if r.cost_usd is None else money(r.cost_usd)
        saved = "" if r.cost_usd is None else money(r.list_cost_usd - r.cost_usd)
        t.add_row(r.provider, str(r.images), cost, money(r.list_cost_usd), saved)
    out.print(t)


@app.command()
def run(manifest: Path, config: ConfigOpt = None, as_json: JsonOpt = False,
        concurrency: Annotated[int | None, typer.Option(help="worker threads")] = None) -> None:
    """Submit a manifest and process it to the end in this process, with a progress bar."""
    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    rt, stack = guarded(lambda: services.open_for(settings, list(loaded.manifest.providers)))
    with stack:
        started = utcnow()
        res = guarded(lambda: services.submit(rt, loaded, started))
        if not as_json:
            out.print(f"job {res.job_id} {res.name}: {len(loaded.specs)} items ({res.summary()})")
        final = _process_with_progress(rt, res.job_id, len(loaded.specs), as_json=as_json, concurrency=concurrency)
        this_run = services.summary(rt, res.job_id, since=started)
    if as_json:
        emit_json(this_run.as_json())
    else:
        render_summary(this_run, scope=" — this run")
        t = this_run.totals
        if t.images == 0 and t.cache_hits > 0:
            out.print(f"[green]nothing new generated:[/] all {t.cache_hits} images came from the cache, "
                      f"$0.00 spent, {money(t.saved_usd)} saved against the list price")
    raise typer.Exit(1 if final.counts["failed"] or final.counts["blocked"] else 0)


class JobProgress:
    """The progress bar of `run`, `rerun` and `status --watch` (on stderr; disabled with --json)."""

    def __init__(self, label: str, total: int | None, *, disable: bool = False) -> None:
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err, disable=disable)
        self._task = self._bar.add_task(label, total=total, detail="")

    def __enter__(self) -> JobProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def update(self, s: JobSummary) -> None:
        c = s.counts
        done = sum(c[k] for k in ("succeeded", "cached", "failed", "blocked", "cancelled"))
        self._bar.update(self._task, total=sum(c.values()), completed=done,
                         detail=f"ok {c['succeeded']} cached {c['cached']} failed {c['failed']} "
                                f"running {c['running']} ${s.totals.cost_usd:.2f}")


def _process_with_progress(rt: Runtime, job_id: int, total: int, *, as_json: bool,
                           concurrency: int | None = None) -> JobSummary:
    """Process a job here to the end, with a progress bar."""
    with JobProgress(f"job {job_id}", total, disable=as_json) as bar:
        return services.process_here(rt, job_id, concurrency=concurrency, on_progress=bar.update)


@app.command()
def submit(manifest: Path, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Submit a manifest; workers (`pipeline worker`) process it. Prints the job id at once."""
    settings = settings_from(config)
    loaded = guarded(lambda: services.load(manifest, settings))
    rt = guarded(lambda: open_runtime(settings))
    try:
        res = guarded(lambda: services.submit(rt, loaded, utcnow()))
        if as_json:
            emit_json({**services.summary(rt, res.job_id).as_json(), "new": res.new, "changed": res.changed,
                       "unchanged": res.unchanged, "cached_expected": res.cached})
        else:
            out.print(f"{res.job_id}")
            err.print(f"job {res.job_id} {res.name}: {res.summary()}")
    finally:
        rt.close()


def _with_runtime(config: Path | None, fn: Callable[[Runtime], T], *, migrate: bool = True) -> T:
    settings = settings_from(config)
    rt = guarded(lambda: open_runtime(settings, migrate_db=migrate, check_storage=False))
    try:
        return guarded(lambda: fn(rt))
    finally:
        rt.close()


def _job_id(rt: Runtime, ref: str) -> int:
    from pipeline.core.control import find_job

    with rt.sessions() as s:
        return find_job(s, ref).id


@app.command()
def status(job: str, config: ConfigOpt = None, as_json: JsonOpt = False,
           watch: Annotated[bool, typer.Option("--watch", help="live progress until the job ends")] = False) -> None:
    """A job's state, counts and cost."""

    def show(rt: Runtime) -> JobSummary:
        job_id = _job_id(rt, job)
        if watch and not as_json:
            with JobProgress(job, None) as bar:
                while True:
                    s = services.summary(rt, job_id)
                    bar.update(s)
                    if s.finished or s.state in ("paused", "cancelled"):
                        break
                    time.sleep(1)
        return services.summary(rt, job_id)

    s = _with_runtime(config, show)
    emit_json(s.as_json()) if as_json else render_summary(s)


@app.command()
def rerun(job: str, config: ConfigOpt = None,
          failed: Annotated[bool, typer.Option("--failed", help="failed and blocked items (default)")] = False,
          items: Annotated[str | None, typer.Option("--items", help="comma-separated item ids")] = None,
          all_items: Annotated[bool, typer.Option("--all", help="every final item")] = False,
          force: Annotated[bool, typer.Option("--force", help="bypass the cache (pays again)")] = False,
          rejected: Annotated[bool, typer.Option("--rejected", help="items rejected in review: regenerated with "
                                                 "their edited prompts, old images kept")] = False) -> None:
    """Put items of a job back to pending (failed and blocked by default). Workers process them; in the
    embedded mode (memory broker) they are processed here, with a progress bar, as `run` does."""
    from pipeline.core.control import rerun as do_rerun

    if rejected:
        if failed or items or all_items or force:
            fail(InputError("--rejected goes alone (it bypasses the cache for those items)", where="--rejected"))
        from pipeline.commands.review import rerun_rejected

        rerun_rejected(job, config)
        return

    if force and not all_items and not items:
        fail(InputError("--force needs --all or --items", where="--force"))
    if sum([failed, bool(items), all_items]) > 1:
        fail(InputError("choose one of --failed, --items, --all", where="rerun"))
    keys = [k.strip() for k in items.split(",") if k.strip()] if items else []
    settings = settings_from(config)
    providers = _job_providers(settings, job)
    rt, stack = guarded(lambda: services.open_for(settings, providers if settings.embedded else []))
    with stack:
        started = utcnow()
        job_id, n = guarded(lambda: do_rerun(rt.sessions, job, started, failed=failed, items=keys,
                                             all_items=all_items, force=force))
        out.print(f"job {job_id}: {n} items back to pending")
        if not settings.embedded or n == 0:
            return
        final = _process_with_progress(rt, job_id, n, as_json=False)
        render_summary(services.summary(rt, job_id, since=started), scope=" — this rerun")
    raise typer.Exit(1 if final.counts["failed"] or final.counts["blocked"] else 0)


def _job_providers(settings: Settings, ref: str) -> list[str]:
    """The providers a job uses (to start an in-process sandbox for it), read without migrating anything."""
    from pipeline.core.control import find_job
    from pipeline.db.session import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as s:
            return list(find_job(s, ref).providers)
    except PipelineError as e:
        fail(e)
    except SQLAlchemyError as e:  # no database (or no tables) yet
        fail(InputError(f"cannot read the database: {type(e).__name__}", where="database_url"))
    finally:
        engine.dispose()


@app.command()
def cancel(job: str, config: ConfigOpt = None) -> None:
    """Cancel a job: nothing new starts; calls in flight finish and are recorded."""
    from pipeline.core.batch import cancel_job_batches
    from pipeline.core.control import cancel as do_cancel

    def go(rt: Runtime) -> tuple[int, int, int]:
        job_id, n = do_cancel(rt.sessions, job, utcnow())
        return job_id, n, cancel_job_batches(rt.ctx, rt.batch_client, job_id, utcnow())

    job_id, n, batches = _with_runtime(config, go)
    out.print(f"job {job_id}: cancelled, {n} items not started" + (f", {batches} batches cancelled" if batches else ""))


@app.command()
def pause(job: str, config: ConfigOpt = None) -> None:
    """Pause a job: nothing new starts until `pipeline resume`."""
    from pipeline.core.control import set_paused

    job_id = _with_runtime(config, lambda rt: set_paused(rt.sessions, job, utcnow(), paused=True))
    out.print(f"job {job_id}: paused")


@app.command()
def resume(job: str, config: ConfigOpt = None) -> None:
    """Resume a paused job."""
    from pipeline.core.control import set_paused

    job_id = _with_runtime(config, lambda rt: set_paused(rt.sessions, job, utcnow(), paused=False))
    out.print(f"job {job_id}: active")


@app.command()
def report(job: Annotated[str | None, typer.Argument()] = None, config: ConfigOpt = None, as_json: JsonOpt = False,
           by: Annotated[str, typer.Option("--by", help="provider | day | tag | resolution | job")] = "provider",
           since: Annotated[str | None, typer.Option(help="YYYY-MM-DD or ISO time")] = None,
           until: Annotated[str | None, typer.Option(help="YYYY-MM-DD or ISO time")] = None,
           csv_file: Annotated[Path | None, typer.Option("--csv", help="write CSV to this file")] = None,
           html_file: Annotated[Path | None, typer.Option("--html", help="write the job's HTML page here")] = None,
           gallery: Annotated[int, typer.Option(help="images in the HTML gallery", min=0)] = 200) -> None:
    """Cost report: a job's summary, or the ledger grouped by provider, day, tag, resolution or job."""
    from pipeline.reports.html import write_html
    from pipeline.reports.jobpage import build_job_page
    from pipeline.reports.queries import GROUPINGS, job_summary, ledger_report, ledger_totals

    if by not in GROUPINGS:
        fail(InputError(f"unknown grouping {by!r} (one of {', '.join(GROUPINGS)})", where="--by"))
    if html_file is not None and job is None:
        fail(InputError("--html needs a JOB", where="--html"))
    t0 = _parse_time(since, "--since")
    t1 = _parse_time(until, "--until")

    def build(rt: Runtime) -> tuple[JobSummary | None, dict[str, Totals], Totals]:
        job_id = _job_id(rt, job) if job else None
        with rt.sessions() as s:
            rows = ledger_report(s, by, job_id=job_id, since=t0, until=t1)
            total = ledger_totals(s, job_id=job_id, since=t0, until=t1)
            summ = None
            if job_id is not None:
                from pipeline.db.models import Job

                summ = job_summary(s, s.get_one(Job, job_id), since=t0, until=t1)
        if html_file is not None and job_id is not None:
            page = build_job_page(rt.sessions, rt.storage, job_id, utcnow(), since=t0, until=t1,
                                  gallery_limit=gallery)
            size = write_html(html_file, page)
            err.print(f"wrote {html_file} ({size / 1024:,.0f} KiB, {len(page.thumbs)} thumbnails)")
        return summ, rows, total

    summ, rows, total = _with_runtime(config, build)
    if csv_file is not None:
        render.write_csv(csv_file, by, rows)
    if as_json:
        emit_json(render.report_json(summ, by, rows, total, since=t0, until=t1))
    else:
        render.render_report(out, summ, by, rows, total)


def _parse_time(v: str | None, where: str) -> datetime | None:
    if v is None:
        return None
    try:
        return datetime.fromisoformat(v).replace(tzinfo=None)
    except ValueError:
        fail(InputError(f"not a date or ISO time: {v!r}", where=where))


@app.command()
def worker(config: ConfigOpt = None,
           concurrency: Annotated[int | None, typer.Option(help="threads (default: config worker.concurrency)")] = None,
           metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="serve Prometheus /metrics "
                                                            "on this port")] = None,
           ) -> None:
    """Run a worker: Celery consumer (threads pool) plus dispatcher, sweeper and lease renewal."""
    from pipeline.background import Background
    from pipeline.worker import make_celery, node_name, publisher

    settings = settings_from(config)
    names = sorted(n for n, p in settings.providers.items() if not p.base_url)
    rt, stack = guarded(lambda: services.open_for(settings, names))
    conc = concurrency or settings.worker.concurrency
    with stack:
        app_ = make_celery(rt.settings, lambda: rt.ctx)
        bg = Background(rt, publisher(app_), max_queued=settings.worker.max_queued)
        if metrics_port is not None:
            from pipeline.metrics.collector import serve_metrics

            stack.callback(guarded(lambda: serve_metrics(rt.sessions, metrics_port)).stop)
        bg.start()
        try:
            app_.worker_main(["worker", "--pool=threads", f"--concurrency={conc}", "--loglevel=INFO",
                              "--without-gossip", "--without-mingle", "-Q", "pipeline", f"--hostname={node_name()}"])
        finally:
            bg.stop()


@app.command()
def beat(config: ConfigOpt = None) -> None:
    """Fire scheduled runs (`pipeline schedule`) and run the periodic duties without consuming tasks: dispatcher,
    sweeper and spool flushing. Any number of beats may run (each scheduled run fires once); workers also
    dispatch, a beat keeps due items flowing when workers are busy or scaled to zero."""
    from pipeline.schedules.beat import run_beat
    from pipeline.schedules.fire import Fire

    def show(f: Fire) -> None:
        where = f"job {f.job_name} (id {f.job_id}): {f.detail}" if f.job_id is not None else f.detail
        err.print(f"beat: schedule {f.schedule} {f.fire_time:%Y-%m-%d %H:%M} UTC {f.outcome} {where}",
                  highlight=False, markup=False)

    settings = settings_from(config)
    guarded(lambda: run_beat(settings, on_fire=show,
                             on_ready=lambda: err.print("beat: firing schedules, dispatching due items; Ctrl-C "
                                                        "to stop")))


@app.command()
def sandbox(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8090,
            host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
            profile: Annotated[Path | None, typer.Option(help="sandbox profile YAML")] = None) -> None:
    """Run the provider simulator (Gemini, batch, OpenAI images, Replicate, Kie.ai task API wire formats)."""
    from pipeline.sandbox.profile import load_profile
    from pipeline.sandbox.server import serve_forever

    prof = guarded(lambda: load_profile(profile)) if profile else None
    serve_forever(prof, host, port)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply the database migrations (Postgres or SQLite)."""
    _with_runtime(config, lambda rt: None, migrate=True)
    out.print("database at head")


def _register_area_commands() -> None:
    """Commands defined next to their area (pipeline/commands/*.py), one line each."""
    importlib.import_module("pipeline.commands.providers").register(app)
    importlib.import_module("pipeline.commands.probe").register(app)
    importlib.import_module("pipeline.commands.schedule").register(app)
    importlib.import_module("pipeline.commands.callbacks").register(app)
    importlib.import_module("pipeline.commands.review").register(app)


_register_area_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

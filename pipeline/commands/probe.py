"""`pipeline probe PROVIDER`: the baseline stability test (success rate, latency, errors, rate headroom, cost),
run as a small real job in this process, after showing the estimated cost and asking."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.commands import common
from pipeline.commands.common import ConfigOpt, JsonOpt
from pipeline.reports.probe import ProbeResult

#: the most images one probe may ask for
MAX_PROBE_IMAGES = 1000


def register(app: typer.Typer) -> None:
    app.command()(probe)


def probe(provider: Annotated[str, typer.Argument(help="configured provider name")],
          n: Annotated[int, typer.Option("--n", help="images (distinct prompts)", min=1,
                                         max=MAX_PROBE_IMAGES)] = 50,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before spending")] = False,
          resolution: Annotated[str, typer.Option(help="1K | 2K | 4K")] = "1K",
          concurrency: Annotated[int, typer.Option(help="worker threads", min=1, max=256)] = 4,
          config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Baseline stability test of one provider on the same code path as real jobs: n distinct prompts, then
    success rate, latency p50/p95/max, error classes, observed rate against the configured limit, and cost."""
    from pipeline import services
    from pipeline.clock import utcnow
    from pipeline.config import RESOLUTIONS
    from pipeline.errors import InputError
    from pipeline.gate.base import GateLimits
    from pipeline.reports.probe import probe_result, write_probe_manifest
    from pipeline.reports.queries import JobSummary

    settings = common.settings_from(config)
    if provider not in settings.providers:
        common.fail(InputError(f"unknown provider {provider!r} (configured: {', '.join(sorted(settings.providers))})",
                               where="PROVIDER"))
    if resolution not in RESOLUTIONS:
        common.fail(InputError(f"resolution must be one of {', '.join(RESOLUTIONS)}", where="--resolution"))
    now = utcnow()
    with tempfile.TemporaryDirectory(prefix="pipeline-probe-") as tmp:
        path = write_probe_manifest(Path(tmp), provider, n, resolution, now)
        loaded = common.guarded(lambda: services.load(path, settings))
    est = common.guarded(lambda: services.estimate(loaded, settings, [provider]))[0]
    cost = "unpriced (" + ", ".join(est.unpriced) + ")" if est.cost_usd is None else common.money(est.cost_usd)
    question = (f"probe {provider}: {n} images at {resolution} as job {loaded.manifest.job}, estimated {cost} "
                f"(official list price {common.money(est.list_cost_usd)}). Spend it?")
    if yes:
        common.err.print(question.replace(" Spend it?", ""), highlight=False)
    elif not typer.confirm(question, err=True):
        common.err.print("probe not started: nothing was submitted or spent")
        raise typer.Exit(1)

    rt, stack = common.guarded(lambda: services.open_for(settings, [provider]))
    with stack:
        res = common.guarded(lambda: services.submit(rt, loaded, utcnow()))
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=common.err,
                      disable=as_json) as bar:
            task = bar.add_task(res.name, total=n, detail="")

            def progress(s: JobSummary) -> None:
                c = s.counts
                done = sum(c[k] for k in ("succeeded", "cached", "failed", "blocked", "cancelled"))
                bar.update(task, completed=done, detail=f"ok {c['succeeded']} failed {c['failed']}")

            services.process_here(rt, res.job_id, concurrency=concurrency, on_progress=progress)
        limit_rpm = GateLimits.from_provider(rt.ctx.providers.config(provider)).rate_per_s * 60.0
        with rt.sessions() as s:
            result = probe_result(s, res.job_id, res.name, settings.provider(provider), limit_rpm, est.cost_usd)
    if as_json:
        common.emit_json(result.as_json())
    else:
        _render(result)


def _render(r: ProbeResult) -> None:
    from pipeline.reports.render import error_classes, pct, secs

    st = r.stats
    lat = r.latency()
    items = ", ".join(f"{k} {v}" for k, v in r.items.items() if v)
    common.out.print(f"[bold]probe of {r.provider}[/] (job {r.job_id} {r.job}): {items}", highlight=False)
    t = Table(title="baseline stability", title_justify="left", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("requests", f"{st.requests} finished, {st.in_flight} unsettled (retries included)")
    t.add_row("success rate", f"{pct(st.success_rate)} ({st.succeeded}/{st.requests})")
    t.add_row("latency", f"min {secs(lat['min'])} · p50 {secs(lat['p50'])} · p95 {secs(lat['p95'])} · "
                         f"max {secs(lat['max'])} (successful calls)")
    t.add_row("error classes", error_classes(st.error_classes))
    t.add_row("429s", f"{st.http_429} ({pct(st.rate_429)} of requests)")
    achieved = "-" if r.achieved_rpm is None else f"{r.achieved_rpm:,.1f}/min over {r.wall_s:,.1f}s"
    head = "-" if r.headroom is None else f"{pct(r.headroom)} below the configured {r.configured_rpm}/min"
    t.add_row("rate achieved", f"{achieved}; busiest minute {r.busiest_minute} calls; "
                               f"peak {r.peak_concurrency} in flight")
    t.add_row("rate headroom", f"{head} (gate limit {r.gate_limit_rpm:,.1f}/min)")
    est = "-" if r.estimated_usd is None else common.money(r.estimated_usd)
    t.add_row("cost", f"{common.money(r.totals.cost_usd)} (estimated {est}, official list price "
                      f"{common.money(r.totals.list_cost_usd)})")
    common.out.print(t)

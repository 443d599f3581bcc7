"""`pipeline providers`: each provider's state, live gate rate and stability; `pipeline providers resume NAME`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pipeline.commands import common
from pipeline.commands.common import ConfigOpt, JsonOpt
from pipeline.reports.health import ProviderHealth
from pipeline.reports.render import error_classes, esc, pct, secs


def register(app: typer.Typer) -> None:
    group = typer.Typer(invoke_without_command=True, help="Providers: state, live gate rate, stability; "
                        "`providers resume NAME` clears a paused provider.")
    group.callback()(show)
    group.command("resume")(resume)
    app.add_typer(group, name="providers")


def show(ctx: typer.Context, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Each provider's state (ok, paused, parked until T), live gate rate against its limit, and success rate,
    p50/p95 latency, error classes and 429 rate over the last hour and day."""
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.clock import utcnow
    from pipeline.reports.health import provider_health
    from pipeline.runtime import open_runtime

    settings = common.settings_from(config)
    note: str | None = None
    try:
        rt = open_runtime(settings, migrate_db=False, check_storage=False)
    except Exception as e:  # no database yet: still show the configuration
        rows = [ProviderHealth(name, cfg) for name, cfg in sorted(settings.providers.items())]
        note = f"no state or stability: {e}"
    else:
        try:
            rows, note = common.guarded(lambda: provider_health(rt.ctx, utcnow()))
        finally:
            rt.close()
    if as_json:
        common.emit_json({"providers": [h.as_json() for h in rows], "note": note})
        return
    common.out.print(_overview(rows))
    for label, title in (("1h", "last hour"), ("1d", "last day")):
        active = [h for h in rows if h.windows.get(label) and h.windows[label].requests + h.windows[label].in_flight]
        if active:
            common.out.print(_stability(f"stability, {title}", label, active))
        else:
            common.out.print(f"[dim]stability, {title}: no calls[/]")
    if settings.embedded:
        common.out.print("[dim]gate: in-process (embedded mode); its live rate exists only inside a running "
                      "`pipeline run`, so the configured rate is shown[/]")
    if note:
        common.err.print(f"[yellow]{note}[/]", highlight=False)


def _overview(rows: list[ProviderHealth]) -> Table:
    t = Table(title="providers", title_justify="left")
    for col in ("name", "kind", "state", "gate rate/min", "in flight", "today", "1h req", "1h ok", "1h 429",
                "1d req", "1d ok", "1d 429"):
        t.add_column(col, justify="left" if col in ("name", "kind", "state") else "right")
    for h in rows:
        cfg = h.config
        state = esc(h.state_text + (f" ({h.reason})" if h.reason else ""))  # a provider's reason: data
        colour = "green" if h.state == "ok" else "red" if h.state == "paused" else "yellow"
        g = h.gate
        if g is not None:
            rate = f"{g.rate_per_min:,.1f} / {g.limit_per_min:,.1f}"
            flight, today = f"{g.in_flight}/{g.concurrency}", f"{g.today:,}/{g.daily_limit:,}"
        else:
            rate, flight, today = esc(h.gate_error or "-"), "-", "-"
        w1, wd = h.windows.get("1h"), h.windows.get("1d")
        t.add_row(esc(h.name), cfg.kind if cfg else "(not configured)", f"[{colour}]{state}[/]", rate, flight, today,
                  str(w1.requests) if w1 else "-", pct(w1.success_rate) if w1 else "-",
                  pct(w1.rate_429) if w1 else "-", str(wd.requests) if wd else "-",
                  pct(wd.success_rate) if wd else "-", pct(wd.rate_429) if wd else "-")
    return t


def _stability(title: str, label: str, rows: list[ProviderHealth]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("provider", "requests", "in flight", "success", "p50", "p95", "max", "429s", "429 rate", "errors"):
        t.add_column(col, justify="left" if col in ("provider", "errors") else "right")
    for h in rows:
        st = h.windows[label]
        t.add_row(esc(h.name), str(st.requests), str(st.in_flight), pct(st.success_rate), secs(st.p50_ms),
                  secs(st.p95_ms), secs(st.max_ms), str(st.http_429), pct(st.rate_429),
                  esc(error_classes(st.error_classes)))
    return t


def resume(name: Annotated[str, typer.Argument(help="provider to resume")], config: ConfigOpt = None) -> None:
    """Clear a paused (or parked) provider: new calls may go to it again at once."""
    from pipeline.clock import utcnow
    from pipeline.core.providers_state import all_states
    from pipeline.core.providers_state import resume as do_resume
    from pipeline.errors import InputError
    from pipeline.runtime import Runtime

    def go(rt: Runtime) -> str | None:
        if name not in rt.settings.providers:
            raise InputError(f"unknown provider {name!r} (configured: {', '.join(sorted(rt.settings.providers))})",
                             where="NAME")
        with rt.sessions() as s:
            row = all_states(s).get(name)
            before = None if row is None or row.status == "ok" else f"{row.status}: {row.reason or ''}"
        do_resume(rt.sessions, name, utcnow())
        rt.gate.park(name, 0.0, "")  # lift a park held in the gate too
        return before

    before = common.with_runtime(config, go)
    common.out.print(f"provider {esc(name)}: ok" + (f" (was {esc(before)})" if before else " (was not paused)"),
                  highlight=False)

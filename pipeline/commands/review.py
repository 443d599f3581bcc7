"""Reviewing a run from the command line, and the review web app:

    pipeline review JOB --approve a,b --reject c [--clear d] [--note TEXT]
    pipeline review JOB --prompt ITEM "new prompt"
    pipeline rerun JOB --rejected          (the --rejected branch of `rerun`: `rerun_rejected` below)
    pipeline export JOB --approved [--csv FILE] [--zip FILE]
    pipeline serve [--host 127.0.0.1] [--port 8080]
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands import common
from pipeline.commands.common import ConfigOpt
from pipeline.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("review")(review)
    app.command("export")(export)
    app.command("serve")(serve)


def review(job: Annotated[str, typer.Argument(help="job id or name")], config: ConfigOpt = None,
           approve: Annotated[str | None, typer.Option("--approve", help="comma-separated item ids")] = None,
           reject: Annotated[str | None, typer.Option("--reject", help="comma-separated item ids")] = None,
           clear: Annotated[str | None, typer.Option("--clear", help="back to unreviewed: item ids")] = None,
           note: Annotated[str | None, typer.Option("--note", help="a note kept with this verdict")] = None,
           prompt: Annotated[tuple[str, str] | None, typer.Option(
               "--prompt", metavar="ITEM TEXT", help="edit an item's prompt (used when it is regenerated)")] = None,
           ) -> None:
    """Approve or reject items of a job (with an optional note), or edit one item's prompt."""
    from pipeline.clock import utcnow
    from pipeline.review.state import review as do_review
    from pipeline.review.state import set_prompt, split_keys
    from pipeline.runtime import Runtime

    lists = {"approve": split_keys(approve), "reject": split_keys(reject), "clear": split_keys(clear)}
    if prompt is not None and any(lists.values()):
        common.fail(InputError("--prompt edits one item; review items in another call", where="--prompt"))
    if prompt is None and not any(lists.values()):
        common.fail(InputError("give --approve, --reject or --clear item ids, or --prompt ITEM TEXT", where="review"))
    if prompt is not None:
        key, text = prompt

        def edit(rt: Runtime) -> tuple[int, str]:
            return set_prompt(rt.sessions, job, key, text, utcnow())

        job_id, name = common.with_runtime(config, edit)
        common.out.print(f"job {job_id} {name}: prompt of {key} saved; `pipeline rerun {name} --rejected` uses it "
                      "when the item is rejected", highlight=False, markup=False, soft_wrap=True)
        return
    res = common.with_runtime(config, lambda rt: do_review(rt.sessions, job, utcnow(), note=note, **lists))
    parts = [f"{len(v)} {k}" for k, v in (("approved", res.approved), ("rejected", res.rejected),
                                            ("cleared", res.cleared)) if v]
    common.out.print(f"job {res.job_id} {res.job_name}: {', '.join(parts)}", highlight=False, markup=False,
                  soft_wrap=True)


def rerun_rejected(job: str, config: Path | None) -> None:
    """`pipeline rerun JOB --rejected`: regenerate the rejected items (old images kept as history, edited prompts
    applied, the cache bypassed for them only); processed here in the embedded mode, by the workers otherwise."""
    from pipeline import services
    from pipeline.clock import utcnow
    from pipeline.review.regenerate import regenerate_rejected

    settings = common.settings_from(config)
    providers = common.job_providers(settings, job)
    rt, stack = common.guarded(lambda: services.open_for(settings, providers if settings.embedded else []))
    with stack:
        started = utcnow()
        res = common.guarded(lambda: regenerate_rejected(rt.sessions, rt.storage, job, started))
        common.out.print(f"job {res.job_id}: {len(res.keys)} rejected items back to pending, the cache bypassed for "
                      f"them (old images kept as history: {res.kept}; with an edited prompt: {res.edited})",
                      highlight=False, markup=False, soft_wrap=True)
        if not settings.embedded or not res.keys:
            return
        final = common.process_with_progress(rt, res.job_id, len(res.keys), as_json=False)
        common.render_summary(services.summary(rt, res.job_id, since=started), scope=" — this rerun")
    raise typer.Exit(1 if final.counts["failed"] or final.counts["blocked"] else 0)


def export(job: Annotated[str, typer.Argument(help="job id or name")], config: ConfigOpt = None,
           approved: Annotated[bool, typer.Option("--approved", help="the approved items (required)")] = False,
           csv_file: Annotated[Path | None, typer.Option("--csv", help="write the manifest as CSV here")] = None,
           zip_file: Annotated[Path | None, typer.Option("--zip", help="write the images and manifest here")] = None,
           ) -> None:
    """Export the approved set: a JSON manifest of output keys and URLs on stdout, or --csv FILE, or --zip FILE
    (the images under images/ plus manifest.json and manifest.csv)."""
    from pipeline.clock import utcnow
    from pipeline.core.control import find_job
    from pipeline.review import export as exporting
    from pipeline.runtime import Runtime

    if not approved:
        common.fail(InputError("say what to export: --approved", where="export"))
    for f in (csv_file, zip_file):
        if f is not None and not f.parent.is_dir():
            common.fail(InputError("no such directory", where=str(f.parent)))

    def go(rt: Runtime) -> tuple[dict[str, object], int]:
        now = utcnow()
        with rt.sessions() as s:
            j = find_job(s, job)
            rows = list(exporting.approved_rows(s, j.id))
        if csv_file is not None:
            _write_atomically(csv_file, "w", lambda f: exporting.write_csv(rows, f))
        images = 0
        if zip_file is not None:
            counter: list[int] = []
            _write_atomically(zip_file, "wb", lambda f: counter.append(exporting.write_zip(rt.storage, j, rows, f,
                                                                                             now)))
            images = counter[0]
        return exporting.manifest_json(j, rows, now), images

    manifest, images = common.with_runtime(config, go)
    if csv_file is None and zip_file is None:
        common.emit_json(manifest)
        return
    for f, what in ((csv_file, "manifest"), (zip_file, f"{images} images and manifest")):
        if f is not None:
            common.err.print(f"wrote {f}: {what} of {manifest['count']} approved items of job {manifest['job']}",
                          highlight=False, markup=False, soft_wrap=True)


def _write_atomically(path: Path, mode: str, write: Callable[..., None]) -> None:
    """Write to a temporary file beside `path`, then rename: a failed export leaves nothing behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if "b" in mode:
            with os.fdopen(fd, "wb") as fb:
                write(fb)
        else:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as ft:
                write(ft)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def serve(host: Annotated[str, typer.Option(help="interface to bind (a token is required off loopback)")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port")] = 8080, config: ConfigOpt = None,
          worker: Annotated[bool | None, typer.Option(
              "--worker/--no-worker", help="process items here too (default: in the embedded mode only)")] = None,
          ) -> None:
    """The review web app: jobs with live progress, a job's gallery (approve, reject, edit prompts, regenerate,
    export) and the providers' health. Binds to 127.0.0.1 unless told otherwise; any other address needs
    serve.token (or PIPELINE_SERVE_TOKEN)."""
    from pipeline import services
    from pipeline.web.server import check_bind
    from pipeline.web.server import serve as run_app

    settings = common.settings_from(config)
    token = common.guarded(lambda: check_bind(host, settings))
    here = settings.embedded if worker is None else worker
    names = sorted(n for n, p in settings.providers.items() if not p.base_url) if here else []
    rt, stack = common.guarded(lambda: services.open_for(settings, names))
    with stack:
        def ready(url: str) -> None:
            common.err.print(f"review app on {url} ({'token required' if token else 'no token: loopback only'}; "
                          f"{'items are processed here' if here else 'workers process regenerated items'}); "
                          "Ctrl-C to stop", highlight=False, markup=False)

        run_app(rt, host, port, token, worker=here, on_ready=ready)

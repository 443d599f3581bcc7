"""`pipeline callbacks [--port N]`: receive task-API completion callbacks (Kie.ai callBackUrl) into the database.

Run it where `public_base_url` (config) reaches it, e.g. behind the deployment's reverse proxy: tasks are sent
`<public_base_url>/callbacks/<provider>/<token>`. Without `public_base_url` nothing is sent there and tasks are
only polled.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.commands import common
from pipeline.commands.common import ConfigOpt


def register(app: typer.Typer) -> None:
    app.command()(callbacks)


def callbacks(port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8091,
              host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
              config: ConfigOpt = None) -> None:
    """Receive task completion callbacks (Kie.ai) and store them for the polling workers."""
    from pipeline.callbacks import serve_callbacks

    settings = common.settings_from(config)
    if not settings.public_base_url:
        common.out.print("[yellow]note[/] public_base_url is not set: no task is sent a callback URL yet")
    common.out.print(f"receiving callbacks on http://{host}:{port}/callbacks/<provider>/<token>")
    common.guarded(lambda: serve_callbacks(settings.database_url, host, port, pool_size=settings.worker.db_pool_size))

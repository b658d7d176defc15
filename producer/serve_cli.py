"""``imggen keys`` and ``imggen api``: API keys, and serving the HTTP API."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from producer.cli import _fail, _print_json, out

app = typer.Typer()

keys_app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="Sees every key's jobs, the workers, the dashboard.")
    ] = False,
) -> None:
    """Make an API key and print it. It is shown this once: only its hash is stored."""
    from producer.db import session_scope
    from producer.keys import create_key as make
    from producer.settings import get_settings

    try:
        with session_scope(get_settings().resolved_database_url) as session:
            _, key = make(session, name, admin=admin)
    except ValueError as exc:
        raise _fail(str(exc), code=2) from None
    out.print(key, highlight=False)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="API processes.")] = 1,
    print_openapi: Annotated[
        bool, typer.Option("--openapi", help="Print the OpenAPI spec, exit.")
    ] = False,
) -> None:
    """Serve the HTTP API (FastAPI under uvicorn)."""
    if print_openapi:
        from producer.api import create_app

        _print_json(create_app().openapi())
        return
    import uvicorn

    if workers > 1:
        from producer.metrics import multiprocess_dir

        # Every API process counts into one folder, so /metrics answers for all of them.
        os.environ.update(multiprocess_dir(dict(os.environ)))
    from producer.logs import uvicorn_config
    from producer.settings import get_settings

    uvicorn.run(
        "producer.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=uvicorn_config(get_settings().log_format),
    )

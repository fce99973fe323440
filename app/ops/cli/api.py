"""`jobq api`: the academies' HTTP API (app.api) on uvicorn; `jobq run` and docker-compose start
it through this command."""

from __future__ import annotations

from typing import Annotated

import typer

from app.ops.cli.common import fail


def register(app: typer.Typer) -> None:
    app.command("api")(api)


def api(
    address: Annotated[str | None, typer.Option(
        "--address", help="Listen here (JOBQ_API_ADDRESS, default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(
        "--port", help="Listen on this port (JOBQ_API_PORT, default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Processes (JOBQ_API_WORKERS, default 1).")] = None,
    access_log: Annotated[bool, typer.Option(help="Log each request.")] = True,
) -> None:
    """Serve the HTTP API: /v1/..., its OpenAPI document at /openapi.json, docs at /docs."""
    import uvicorn

    from app.api.auth import check_settings
    from app.core.logs import configure_logging
    from app.core.settings import settings

    configure_logging()
    try:
        settings.require_database_url()
        settings.require_broker_url()
        check_settings()
    except Exception as exc:
        raise fail(str(exc), 2) from None
    uvicorn.run("app.api.server:create_app", factory=True,
                host=address or settings.api_address, port=port or settings.api_port,
                workers=workers or settings.api_workers, access_log=access_log,
                log_config=None, proxy_headers=False, server_header=False,
                # Open event streams would otherwise hold a stop for their whole lifetime.
                # Annotated int, but uvicorn only hands it to asyncio.wait_for: a float is fine.
                timeout_graceful_shutdown=settings.api_shutdown_seconds)  # type: ignore[arg-type]

"""The interactive docs, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), on assets shipped in
``app/api/static/`` and served by the API itself: FastAPI's own pages load them from a CDN, and
are blank on a machine without internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = "/docs-assets"


def install(api: FastAPI) -> None:
    """``/docs``, ``/redoc`` and their assets under ``/docs-assets`` (``api`` made with
    ``docs_url=None, redoc_url=None``)."""
    api.mount(ASSETS, StaticFiles(directory=STATIC), name="docs-assets")
    openapi_url = api.openapi_url or "/openapi.json"

    @api.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{api.title}: API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url=None)

    @api.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url, title=f"{api.title}: API reference",
            redoc_js_url=f"{ASSETS}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False)

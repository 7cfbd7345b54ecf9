"""The live dashboard at `/`: static HTML, CSS and JavaScript shipped in `rohde/server/dashboard/`.

The page holds no data of its own: it reads everything from the REST routes and `/ws`, with the read
token taken from its own URL (`/?token=...`), so the page and its files are open like `/docs`. Only the
listed files are served (no directory listing, no path from the client reaches the file system), with a
Content-Security-Policy that lets the page load and connect to this server only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
DASHBOARD_PAGE = "index.html"
# The page's own files, by the name it loads them with, and their media types.
DASHBOARD_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}

# 'self' covers ws:// and wss:// to this host and port in current browsers; the page loads nothing else.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URL may carry the read token
    "Cache-Control": "no-cache",  # a new server version's page is never mixed with an old script
}


def add_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at `/` and its files under `/dashboard/`; neither is in the OpenAPI document."""

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD_DIR / DASHBOARD_PAGE, media_type="text/html", headers=_HEADERS)

    @app.get("/dashboard/{name}", include_in_schema=False)
    def dashboard_asset(name: str) -> FileResponse:
        if name not in DASHBOARD_ASSETS:
            raise HTTPException(404, detail="No such dashboard file.")
        return FileResponse(DASHBOARD_DIR / name, media_type=DASHBOARD_ASSETS[name], headers=_HEADERS)

"""The live dashboard: `GET /` is its page, `/dashboard/{file}` its script and style sheet.

The files are plain static HTML, JavaScript modules and CSS in `dashboard/` (no build step,
nothing from a CDN). Only the files found there at start-up are served, by name, so nothing
else on disk is reachable through this path. The page is held to its own origin by its
Content-Security-Policy: scripts, styles and connections (REST and the WebSocket) from the
gateway only, and no inline script at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from services.gateway.errors import NotFound

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
PAGE = "index.html"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SECURITY_HEADERS: Mapping[str, str] = {
    # 'self' in connect-src covers ws:// and wss:// to the same host (CSP Level 3).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (Last-Modified), so a new gateway's files show at once.
    "Cache-Control": "no-cache",
}


def _assets(directory: Path) -> dict[str, tuple[Path, str]]:
    return {
        path.name: (path, _TYPES[path.suffix])
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in _TYPES
    }


def _file(path: Path, content_type: str) -> web.FileResponse:
    return web.FileResponse(path, headers={**_SECURITY_HEADERS, "Content-Type": content_type})


def setup(app: web.Application, directory: Path = DASHBOARD_DIR) -> None:
    assets = _assets(directory)
    if PAGE not in assets:
        raise RuntimeError(f"the dashboard's {PAGE} is missing from {directory}")

    async def page(request: web.Request) -> web.FileResponse:
        return _file(*assets[PAGE])

    async def asset(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        if name not in assets:
            raise NotFound(f"no dashboard file {name[:100]!r}")
        return _file(*assets[name])

    app.router.add_get("/", page)
    app.router.add_get("/dashboard/{name}", asset)

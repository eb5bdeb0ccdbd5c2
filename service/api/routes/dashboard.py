"""The web dashboard: static files (no build step) served by the API itself.

`/` is the single page (hash routes: `#/jobs`, `#/job/ID`, `#/compare?ids=..`, `#/datasets`,
`#/new`); `/ui/...` its scripts, styles and the vendored uPlot. The files hold no data: every
number on the page comes from the same `/v1` endpoints a script calls, with the same key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The security headers come from service.api.headers (every response); the page's files are revalidated.
HEADERS = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=HEADERS)


class DashboardFiles(StaticFiles):
    """The page's own files, revalidated on each load (an upgrade shows at once)."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def mount(app) -> None:
    app.include_router(router)
    app.mount("/ui", DashboardFiles(directory=STATIC_DIR), name="ui")

"""The API's documentation page, `/docs` (Swagger UI), served from the vendored swagger-ui-dist
(no CDN), reading `/openapi.json`. No inline script, so it works offline and under
`script-src 'self'`: it is served under the dashboard's policy (`service.api.headers.CSP`, on every
response). `/redoc` now answers with a redirect
to it: ReDoc's bundle always fetches its logo from a CDN."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.api.routes.dashboard import STATIC_DIR

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> FileResponse:
    return FileResponse(STATIC_DIR / "docs" / "swagger.html", media_type="text/html")


@router.get("/redoc")
async def redoc() -> RedirectResponse:
    return RedirectResponse("/docs", status_code=308)

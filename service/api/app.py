"""The FastAPI application: `create_app()` (uvicorn: `service.api.app:create_app --factory`).

It admits, records (through the control plane's lifecycle) and enqueues; it never imports
torch or the worker.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dcl_core.errors import UserError
from dcl_core.field_hints import with_field_hints
from dcl_core.jobs import JOB_TYPES, Refusal
from service.api.admission import TooMany
from service.api.deps import FieldError, too_many
from service.api.guards import RejectOddUrls
from service.api.headers import SecurityHeaders
from service.api.openapi import install as install_openapi
from service.api.routes import (
    artifacts, dashboard, datasets, docs, events, explore, health, jobs, models, previews, webhooks,
)
from service.control.lifecycle import Refused
from service.control.plane import ControlPlane
from service.control.settings import Settings, get_settings

log = logging.getLogger("service")


def field_path(loc: tuple | list) -> str:
    """("body", "pretrain", "config", "batch_size") -> "config.batch_size" (no "body", no union tag)."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
        if parts and parts[0] in JOB_TYPES:
            parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def validation_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """`detail`: one line a person reads ("config.batch_size: Input should be ..."); `errors`: each problem."""
    items = []
    for err in errors:
        loc = list(err.get("loc", ()))
        if err.get("type") == "extra_forbidden" and len(loc) > 2 and loc[0] == "body" and loc[1] in JOB_TYPES:
            err = with_field_hints([err], [JOB_TYPES[loc[1]].spec], skip=2)[0]  # "did you mean 'batch_size'?"
        if err.get("type") == "json_invalid":  # the loc is a character offset, not a field
            loc = ["body"]
            err = {**err, "msg": f"{err.get('msg')} at character {err['loc'][-1]}; send a JSON object"}
        value = err.get("input")
        if isinstance(value, float) and not math.isfinite(value):  # not "should be <= 10" for a NaN
            err = {**err, "msg": f"must be a finite number, got {value}", "type": "finite_number"}
        items.append({"loc": loc, "field": field_path(loc), "msg": str(err.get("msg", "invalid")),
                      "type": err.get("type", "value_error")})
    detail = "; ".join(f"{e['field']}: {e['msg']}" for e in items) or "invalid request"
    return {"detail": detail, "errors": items}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(list(exc.errors())), status_code=422)

    @app.exception_handler(FieldError)
    async def _field(request: Request, exc: FieldError) -> JSONResponse:
        return JSONResponse(validation_body([{"loc": exc.loc, "msg": exc.message}]), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if exc.detail is not None else "error"
        body = {"detail": detail, "errors": []} if exc.status_code == 422 else {"detail": detail}  # one 422 shape
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Refusal)
    async def _refusal(request: Request, exc: Refusal) -> JSONResponse:
        if exc.status == 422:
            return JSONResponse(validation_body([{"loc": ["body", *exc.field.split(".")], "msg": exc.message}]),
                                status_code=422)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(TooMany)
    async def _too_many(request: Request, exc: TooMany) -> JSONResponse:
        return await _http(request, too_many(str(exc), exc.retry_after_s))

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404 if exc.missing else 409)

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "errors": []}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return JSONResponse({"detail": "client disconnected"}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the server log has the details"}, status_code=500
        )


class LatencyMiddleware:
    """Records each request's time to its response's first byte, by route template."""

    def __init__(self, app, histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed_send(message):
            if message["type"] == "http.response.start":
                route = scope.get("route")
                self.histogram.labels(
                    scope["method"], getattr(route, "path", "<unmatched>"), str(message["status"])
                ).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.plane.storage.clean_uploads()
        # What is loaded by now (FastAPI, pydantic, SQLAlchemy, Celery: some 100k objects) lives as
        # long as the process. Frozen, it is left out of full collections, which under polling load
        # otherwise walk it every few seconds (~90 ms on a 2-core machine, paid by every request
        # in flight; ~25 ms frozen).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        app.state.plane.close()

    app = FastAPI(
        title="dcl-service",
        version="0.1.0",
        description="Self-supervised contrastive pretraining (DCL, DCLW, SimCLR) as a service: upload "
        "images, submit a job, follow it, download the encoder.",
        lifespan=lifespan,
        docs_url=None,  # served from vendored files by routes/docs.py, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.plane = ControlPlane(settings, resend_in_background=True)
    app.state.key_owners = settings.api_key_hashes()
    app.state.operator_owners = settings.operator_owners()
    app.state.registry, latency = health.make_registry(app.state)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(LatencyMiddleware, histogram=latency)
    app.add_middleware(RejectOddUrls)
    app.add_middleware(SecurityHeaders)  # outermost: error answers get the headers too
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(artifacts.router)
    app.include_router(previews.router)
    app.include_router(explore.router)
    app.include_router(models.router)
    app.include_router(webhooks.router)
    app.include_router(docs.router)
    dashboard.mount(app)
    return app

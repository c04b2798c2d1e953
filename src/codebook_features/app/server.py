"""The app factory: a FastAPI app over one code browser (a store, and a model when given), with
the JSON API, the pages and their assets. No state lives in modules; each app has its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from codebook_features._version import __version__
from codebook_features.app.api import api_router
from codebook_features.app.browser import CodeBrowser
from codebook_features.app.config import LOCAL_HOSTS, ServeConfig
from codebook_features.app.errors import status_of
from codebook_features.app.pages import error_page, page_router
from codebook_features.errors import CodebookError

STATIC = Path(__file__).parent / "static"
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""Pages run only our own script and styles: even text that slipped past escaping could not
run."""
LOCAL_NAMES = [*LOCAL_HOSTS, "[::1]"]
"""Host names a server bound to this machine answers to."""


def create_app(
    config: ServeConfig | str, model: Any = None, tokenizer: Any = None, *, warm: bool = True
) -> FastAPI:
    """The browser app for ``config`` (or a store directory); ``model`` and ``tokenizer``
    (already loaded) are used as given, else the model ``config.model`` names is loaded."""
    if isinstance(config, (str, Path)):
        config = ServeConfig(store=str(config))
    if model is not None:
        if tokenizer is None:
            raise CodebookError("give the model's tokenizer along with the model")
        browser = CodeBrowser(config, model, tokenizer)
    else:
        browser = CodeBrowser.load(config)
    if warm:
        browser.warm()
    app = FastAPI(
        title="codebook-features browser",
        version=__version__,
        description="Search the codes of a recorded store, read code pages, browse topics, "
        "keep concepts and steer generation with them.",
        docs_url=None,  # Swagger UI and ReDoc load their code from a CDN: no network here
        redoc_url=None,
    )
    if not config.exposed:  # a page elsewhere cannot reach it by pointing its own name here
        own = f"[{config.host}]" if ":" in config.host else config.host  # e.g. 127.0.0.2
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOCAL_NAMES, own])
    app.state.browser = browser
    app.include_router(api_router())
    app.include_router(page_router())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(CodebookError)
    def refused(request: Request, error: CodebookError) -> Response:
        status = status_of(error)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(error)}, status_code=status)
        return error_page(request, str(error), status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):
            # where and what, never the input: it may be huge, or not encodable (NaN, a lone
            # surrogate), and the client has it anyway
            detail = [
                {
                    "loc": [_short(p) if isinstance(p, str) else p for p in e["loc"]],
                    "msg": _short(str(e["msg"])),
                    "type": e["type"],
                }
                for e in error.errors()[:MAX_ERRORS]
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        fields = "; ".join(
            f"{_short('.'.join(str(p) for p in e['loc'][1:]))}: {_short(str(e['msg']))}"
            for e in error.errors()[:MAX_ERRORS]
        )
        return error_page(request, f"check the form: {fields}", 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return await http_exception_handler(request, error)
        message = "no such page" if error.status_code == 404 else str(error.detail)
        return error_page(request, message, error.status_code)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        if request.method in ("POST", "PUT", "PATCH") and not _is_json(request):
            # a form on another site can post text/plain here, but not JSON (without asking)
            detail = "send the request body as JSON (Content-Type: application/json)"
            return JSONResponse({"detail": detail}, status_code=415)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    return app


MAX_ERRORS = 20
"""Validation errors reported per request (a body of a million bad items gets a short answer)."""


def _short(text: str, limit: int = 200) -> str:
    """``text`` encodable as UTF-8 JSON and at most ``limit`` characters."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json"

"""The app factory: a FastAPI app over one code browser (a store, and a model when given), with
the JSON API, the pages and their assets. No state lives in modules; each app has its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from codebook_features import __version__
from codebook_features.app.api import api_router
from codebook_features.app.browser import CodeBrowser
from codebook_features.app.config import ServeConfig
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
    )
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
            return await request_validation_exception_handler(request, error)
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in error.errors()
        )
        return error_page(request, f"check the form: {fields}", 422)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        page = response.headers.get("content-type", "").startswith("text/html")
        if page and not request.url.path.startswith(("/docs", "/redoc")):
            response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    return app

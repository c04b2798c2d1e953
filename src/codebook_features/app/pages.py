"""The HTML pages: server-rendered templates (autoescaped: token text is data, never markup)
over the same objects the JSON API returns, plus one small script for sorting, saving concepts
and steering. No build step: templates and assets ship in the package."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from codebook_features.app.browser import MAX_TOP, CodeBrowser
from codebook_features.app.errors import status_of
from codebook_features.app.schemas import MAX_TEXT, Mode, NextIn, TopicSortIn
from codebook_features.app.urls import code_url
from codebook_features.errors import CodebookError
from codebook_features.search.scores import Rank

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
TEMPLATES.env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.1f}%"
TEMPLATES.env.filters["num"] = lambda v: "" if v is None else f"{v:,}"
TEMPLATES.env.filters["fixed"] = lambda v, d=3: "" if v is None else f"{v:.{d}f}"
TEMPLATES.env.globals["code_url"] = code_url


def shown(token: str) -> str:
    """A token's text with line breaks, tabs and a leading space made visible."""
    visible = token.replace("\n", "\u21b5").replace("\t", "\u21e5")
    return "\u2423" + visible[1:] if visible.startswith(" ") else visible


TEMPLATES.env.filters["shown"] = shown


def cut_at_spans(text: str, spans: list[Any]) -> list[tuple[int | None, str]]:
    """``text`` cut at ``spans`` (``(start, end)``, in order): ``(i, characters)`` for span
    ``i``, ``(None, characters)`` between spans. A span overlapping the one before keeps only
    its characters past it (byte tokens of one character share its span: all but the first
    come out empty)."""
    pieces: list[tuple[int | None, str]] = []
    done = 0
    for i, (start, end) in enumerate(spans):
        start = max(start, done)
        if start > done:
            pieces.append((None, text[done:start]))
        pieces.append((i, text[start:end] if end > start else ""))
        done = max(done, end)
    if done < len(text):
        pieces.append((None, text[done:]))
    return pieces


def segments(example: Any) -> list[tuple[str, str]]:
    """A context cut into ``(text, kind)``: kind ``""`` for plain text, ``"fires"`` where the
    code fires, ``"centre"`` for the context's own token."""
    text = example.before + example.token + example.after
    centre = (len(example.before), len(example.before) + len(example.token))
    marks = sorted({*map(tuple, example.marks), centre})
    return [
        (piece, "" if i is None else "centre" if marks[i] == centre else "fires")
        for i, piece in cut_at_spans(text, marks)
        if piece
    ]


TEMPLATES.env.filters["segments"] = segments


def _count(text: str) -> int | None:
    """A whole number written in ASCII digits (at most 9 of them), or None."""
    text = text.strip()
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else None


def _refs(text: str) -> list[str]:
    """Codes written ``SITE/GROUP/ID``, separated by commas or spaces."""
    return [part for part in text.replace(",", " ").split() if part]


CONTEXTS = 10
"""Contexts per code page; the page links to the next ones."""


def _pieces(document: Any) -> list[tuple[int | None, str]]:
    """The document's text cut at its tokens: ``(position, text)`` for a token, ``(None,
    text)`` for characters between tokens (or after the last)."""
    return cut_at_spans(document.text, document.spans)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    browser: CodeBrowser = request.app.state.browser
    context |= {"model_loaded": browser.model is not None, "store_name": browser.store_name}
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


def error_page(request: Request, message: str, status: int) -> HTMLResponse:
    return render(request, "error.html", status, message=message, status=status)


def page_router() -> APIRouter:
    router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

    def app_of(request: Request) -> CodeBrowser:
        return request.app.state.browser

    @router.get("/")
    def overview(request: Request) -> HTMLResponse:
        return render(request, "overview.html", page="overview", o=app_of(request).overview())

    @router.get("/search")
    def search(
        request: Request,
        pattern: Annotated[str, Query(max_length=1000)] = "",
        sites: Annotated[str, Query(max_length=1000)] = "",
        sort: Rank = "f1",
        min_support: Annotated[int, Query(ge=1, le=2**62)] = 1,
        min_precision: Annotated[float, Query(ge=0, le=1)] = 0.0,
        min_recall: Annotated[float, Query(ge=0, le=1)] = 0.0,
        top: Annotated[int, Query(ge=1, le=MAX_TOP)] = 20,
    ) -> HTMLResponse:
        form = {
            "pattern": pattern,
            "sites": sites,
            "sort": sort,
            "min_support": min_support,
            "min_precision": min_precision,
            "min_recall": min_recall,
            "top": top,
        }
        result, error, status = None, None, 200
        if pattern:
            try:
                result = app_of(request).regex(
                    pattern, sites, sort, min_precision, min_recall, min_support, top
                )
            except CodebookError as e:
                error, status = str(e), status_of(e)
        return render(
            request, "search.html", status, page="search", form=form, r=result, error=error
        )

    @router.get("/describe")
    def describe(
        request: Request,
        query: Annotated[str, Query(max_length=1000)] = "",
        sites: Annotated[str, Query(max_length=1000)] = "",
        min_f1: Annotated[float, Query(ge=0, le=1)] = 0.0,
        top: Annotated[int, Query(ge=1, le=MAX_TOP)] = 20,
    ) -> HTMLResponse:
        form = {"query": query, "sites": sites, "min_f1": min_f1, "top": top}
        result, error, status = None, None, 200
        try:
            result = app_of(request).descriptions(query, sites, min_f1, top)
        except CodebookError as e:
            error, status = str(e), status_of(e)
        return render(
            request, "describe.html", status, page="describe", form=form, r=result, error=error
        )

    @router.get("/codes/{site}/{group}/{id}")
    def code(
        request: Request,
        site: Annotated[str, PathParam(max_length=200)],
        group: Annotated[int, PathParam(ge=0, le=2**31)],
        id: Annotated[int, PathParam(ge=0, le=2**31)],
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> HTMLResponse:
        app = app_of(request)
        page = app.code(app.code_ref(site, group, id), examples=CONTEXTS, offset=offset)
        names = app.concepts.usable_names()
        return render(
            request, "code.html", page="code", p=page, concept_names=names, per_page=CONTEXTS
        )

    @router.get("/topics")
    def topics(
        request: Request,
        sites: Annotated[str, Query(max_length=1000)] = "",
        min_share: Annotated[float, Query(gt=0, le=1)] = 0.5,
        min_documents: Annotated[int, Query(ge=1, le=2**62)] = 2,
        label_field: Annotated[str, Query(max_length=200)] = "",
        label: Annotated[str, Query(max_length=1000)] = "",
        top: Annotated[int, Query(ge=1, le=MAX_TOP)] = 20,
        sort: TopicSortIn | Literal[""] = "",
        everywhere: Annotated[float, Query(gt=0, le=1)] = 0.5,
    ) -> HTMLResponse:
        form = {"sites": sites, "min_share": min_share, "min_documents": min_documents}
        form |= {"label_field": label_field, "label": label, "top": top}
        form |= {"sort": sort, "everywhere": everywhere}
        result, error, status = None, None, 200
        app = app_of(request)
        try:
            field = label_field or None
            result = app.topics(
                sites, min_share, min_documents, field, label, top, sort or None, everywhere
            )
        except CodebookError as e:
            error, status = str(e), status_of(e)
        return render(
            request,
            "topics.html",
            status,
            page="topics",
            form=form,
            r=result,
            error=error,
            fields=app.label_fields(),
        )

    @router.get("/documents/{document}")
    def document(
        request: Request,
        document: Annotated[int, PathParam(ge=0, le=2**62)],
        at: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    ) -> HTMLResponse:
        d = app_of(request).document(document)
        return render(request, "document.html", page="", d=d, at=at, pieces=_pieces(d))

    @router.get("/concepts")
    def concepts(request: Request) -> HTMLResponse:
        return render(request, "concepts.html", page="concepts", c=app_of(request).concepts.list())

    @router.get("/concepts/{name}")
    def concept(request: Request, name: Annotated[str, PathParam(max_length=100)]) -> HTMLResponse:
        return render(
            request, "concept.html", page="concepts", c=app_of(request).concepts.get(name)
        )

    @router.get("/text")
    def text(
        request: Request,
        text: Annotated[str, Query(max_length=MAX_TEXT)] = "",
        sites: Annotated[str, Query(max_length=1000)] = "",
        group: Annotated[str, Query(max_length=10)] = "",
        force: Annotated[str, Query(max_length=10_000)] = "",
        ablate: Annotated[str, Query(max_length=10_000)] = "",
        at: Annotated[str, Query(max_length=10)] = "",
        mode: Mode = "all",
    ) -> HTMLResponse:
        app = app_of(request)
        head, position = _count(group), _count(at)  # empty: every group, the last token
        form = {
            "text": text,
            "sites": sites,
            "group": head,
            "force": force,
            "ablate": ablate,
            "at": position,
            "mode": mode,
        }
        result, after, error, status = None, None, None, 200
        if (group.strip() and head is None) or (at.strip() and position is None):
            error, status = "head (group) and token must be whole numbers (0, 1, 2, ...)", 400
        elif app.model is None:
            error, status = "this page needs the model: start the browser with --model DIR", 409
        elif text and not text.strip():
            error, status = "give a text: some characters to run the model on", 400
        elif text:
            try:
                result = app.text(text, sites)
                codes = {"force": _refs(force), "ablate": _refs(ablate)}
                after = app.next_tokens(NextIn(text=text, position=position, mode=mode, **codes))
            except CodebookError as e:
                error, status = str(e), status_of(e)
            except ValidationError as e:
                first = e.errors()[0]
                error, status = f"{first['loc'][-1]}: {first['msg']}", 400
        return render(
            request, "text.html", status, page="text", form=form, r=result, next=after, error=error
        )

    @router.get("/steer")
    def steer(
        request: Request,
        concept: Annotated[str, Query(max_length=100)] = "",
        codes: Annotated[str, Query(max_length=10_000)] = "",
    ) -> HTMLResponse:
        app = app_of(request)
        names = app.concepts.usable_names()
        limits = app.limits()
        from codebook_features.steering.config import GenerationSettings

        form = {"concept": concept, "codes": codes}
        return render(
            request,
            "steer.html",
            page="steer",
            form=form,
            concepts=names,
            limits=limits,
            generation=GenerationSettings(samples=min(2, limits["max_samples"])),
        )

    return router

"""The JSON API, under ``/api``: one endpoint per page, described by OpenAPI at ``/openapi.json``
(and browsable at ``/docs``). Mistakes get a 4xx with ``{"detail": reason}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse

from codebook_features.app import schemas as s
from codebook_features.app.browser import MAX_TOP, CodeBrowser
from codebook_features.search.scores import Rank

ERRORS = {
    400: {"model": s.ErrorOut, "description": "The request cannot be answered as asked."},
    404: {"model": s.ErrorOut, "description": "No such code, document, concept or plot."},
    409: {
        "model": s.ErrorOut,
        "description": "It needs the model, which is not loaded, or clashes with what exists.",
    },
}
Sites = Annotated[
    str | None,
    Query(max_length=1000, description="Sites by name, kind or glob, comma-separated."),
]
Top = Annotated[int, Query(ge=1, le=MAX_TOP, description="How many rows to return.")]
Name = Annotated[str, Path(max_length=100, description="A concept's name.")]


def browser(request: Request) -> CodeBrowser:
    return request.app.state.browser


def _needs_model(busy: str) -> dict[int | str, dict[str, Any]]:
    """The documented errors of a request that runs the model: none loaded, or busy."""
    return {
        409: {"model": s.ErrorOut, "description": "No model loaded."},
        429: {"model": s.ErrorOut, "description": busy},
    }


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api", responses=ERRORS)

    @router.get("/overview", response_model=s.OverviewOut, tags=["store"])
    def overview(request: Request) -> s.OverviewOut:
        """The store, its model and sites, and the training run when known."""
        return browser(request).overview()

    @router.get("/plots/{name}", response_class=FileResponse, tags=["store"])
    def plot(request: Request, name: Annotated[str, Path(max_length=200)]) -> FileResponse:
        """A PNG plot of the training run, by the name the overview lists."""
        return FileResponse(browser(request).plot(name), media_type="image/png")

    @router.get("/search/regex", response_model=s.RegexOut, tags=["search"])
    def regex(
        request: Request,
        pattern: Annotated[str, Query(min_length=1, max_length=1000)],
        sites: Sites = None,
        sort: Rank = "f1",
        min_precision: Annotated[float, Query(ge=0, le=1)] = 0.0,
        min_recall: Annotated[float, Query(ge=0, le=1)] = 0.0,
        min_support: Annotated[int, Query(ge=1, le=2**62)] = 1,
        top: Top = 20,
        examples: Annotated[int, Query(ge=0, le=20)] = 3,
    ) -> s.RegexOut:
        """Codes ranked as classifiers of the tokens a Python regular expression matches (with
        a capture group, only the group's tokens count)."""
        return browser(request).regex(
            pattern, sites, sort, min_precision, min_recall, min_support, top, examples
        )

    @router.get("/search/descriptions", response_model=s.DescriptionsOut, tags=["search"])
    def descriptions(
        request: Request,
        query: Annotated[str | None, Query(max_length=1000)] = None,
        sites: Sites = None,
        min_f1: Annotated[float, Query(ge=0, le=1)] = 0.0,
        top: Top = 20,
    ) -> s.DescriptionsOut:
        """Codes by their automatic descriptions: those whose terms hold every word of
        ``query`` ("ship" finds ``word ship | ships``), or without a query the best described,
        ranked by F1 on held-out documents."""
        return browser(request).descriptions(query, sites, min_f1, top)

    @router.get("/codes/{site}/{group}/{id}", response_model=s.CodePageOut, tags=["codes"])
    def code(
        request: Request,
        site: Annotated[str, Path(max_length=200)],
        group: Annotated[int, Path(ge=0, le=2**31)],
        id: Annotated[int, Path(ge=0, le=2**31)],
        top: Top = 10,
        examples: Annotated[int, Query(ge=0, le=100)] = 8,
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> s.CodePageOut:
        """One code: frequency, positions and labels against their base rates, top tokens,
        contexts (``examples`` of them from ``offset``, every firing marked), co-occurring and
        similar codes, and its direct effect on the next-token logits."""
        app = browser(request)
        return app.code(app.code_ref(site, group, id), top, examples, offset)

    @router.get("/topics", response_model=s.TopicsOut, tags=["search"])
    def topics(
        request: Request,
        sites: Sites = None,
        min_share: Annotated[float, Query(gt=0, le=1)] = 0.5,
        min_documents: Annotated[int, Query(ge=1, le=2**62)] = 2,
        label_field: Annotated[str | None, Query(max_length=200)] = None,
        label: Annotated[str | None, Query(max_length=1000)] = None,
        top: Top = 20,
        sort: s.TopicSortIn | None = None,
        everywhere: Annotated[float, Query(gt=0, le=1)] = 0.5,
    ) -> s.TopicsOut:
        """Codes that fire across a large share of whole documents, with the documents they
        cover (and, with labels, the label they single out, its precision, recall and lift).
        ``sort``: documents covered, or precision, lift or F1 for the label (default:
        precision with a label, else documents). Codes covering more than ``everywhere`` of
        all documents come apart, in ``everywhere`` (1: none apart)."""
        return browser(request).topics(
            sites, min_share, min_documents, label_field, label, top, sort, everywhere
        )

    @router.get("/documents/{document}", response_model=s.DocumentOut, tags=["store"])
    def document(request: Request, document: Annotated[int, Path(ge=0, le=2**62)]) -> s.DocumentOut:
        """One document's text, fields and token spans."""
        return browser(request).document(document)

    @router.get(
        "/documents/{document}/tokens/{position}",
        response_model=s.DocumentTokenOut,
        tags=["store"],
    )
    def document_token(
        request: Request,
        document: Annotated[int, Path(ge=0, le=2**62)],
        position: Annotated[int, Path(ge=0, le=2**62)],
        sites: Sites = None,
    ) -> s.DocumentTokenOut:
        """The codes recorded at one token of a document, per site and group."""
        return browser(request).document_token(document, position, sites)

    @router.get("/concepts", response_model=s.ConceptsOut, tags=["concepts"])
    def concepts(request: Request) -> s.ConceptsOut:
        """The saved concepts."""
        return browser(request).concepts.list()

    @router.post("/concepts", response_model=s.ConceptOut, status_code=201, tags=["concepts"])
    def create_concept(request: Request, body: s.ConceptIn) -> s.ConceptOut:
        """Save a new concept (needs the model)."""
        return browser(request).concepts.create(body)

    @router.get("/concepts/{name}", response_model=s.ConceptOut, tags=["concepts"])
    def concept(request: Request, name: Name) -> s.ConceptOut:
        """One saved concept."""
        return browser(request).concepts.get(name)

    @router.patch("/concepts/{name}", response_model=s.ConceptOut, tags=["concepts"])
    def edit_concept(request: Request, name: Name, body: s.ConceptEdit) -> s.ConceptOut:
        """Change a concept's codes, description, mode or positions."""
        return browser(request).concepts.edit(name, body)

    @router.post("/concepts/{name}/codes", response_model=s.ConceptOut, tags=["concepts"])
    def add_codes(request: Request, name: Name, body: s.CodesIn) -> s.ConceptOut:
        """Add codes to a concept, making it when there is none (needs the model then)."""
        return browser(request).concepts.add_codes(name, body)

    @router.delete("/concepts/{name}", response_model=s.Deleted, tags=["concepts"])
    def delete_concept(request: Request, name: Name) -> s.Deleted:
        """Delete a concept's file."""
        return browser(request).concepts.delete(name)

    @router.post(
        "/text",
        response_model=s.TextOut,
        tags=["text"],
        responses=_needs_model("The model is busy with a generation or another text."),
    )
    def text(request: Request, body: s.TextIn) -> s.TextOut:
        """Run the model on a text of your own: every token with each site's code ids."""
        return browser(request).text(body.text, body.sites)

    @router.post(
        "/text/next",
        response_model=s.NextOut,
        tags=["text"],
        responses=_needs_model("The model is busy with a generation or another text."),
    )
    def next_tokens(request: Request, body: s.NextIn) -> s.NextOut:
        """The most likely next tokens after a text, without and with codes forced or removed
        at one of its tokens (the last by default)."""
        return browser(request).next_tokens(body)

    @router.post(
        "/steer",
        response_model=s.SteerOut,
        tags=["steering"],
        responses=_needs_model("Another generation is running."),
    )
    def steer(request: Request, body: s.SteerIn) -> s.SteerOut:
        """Continue a prompt without and with forced codes, sample by sample (one request at a
        time, with bounded tokens and time)."""
        return browser(request).steer(body)

    return router

"""The library's results as the API's response objects: one converter per kind, so every page
and endpoint that shows a code, an example or a description shows it the same way (and JSON,
which has no NaN, gets null)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from codebook_features.app import schemas as s
from codebook_features.app.urls import code_url, document_url
from codebook_features.search.regex import Example


def code_page(page: Any) -> s.CodePageOut:
    """A :class:`~codebook_features.search.code_page.CodePage` as the code page's answer."""
    ref, effect = page.code, page.logit_effect
    return s.CodePageOut(
        code=str(ref),
        url=code_url(ref),
        site=ref.site,
        group=ref.group,
        id=ref.id,
        frequency=page.frequency,
        share=page.share,
        documents=page.documents,
        per_document=page.per_document,
        most_in_a_document=page.most_in_a_document,
        top_tokens=[s.TokenCountOut(**dataclasses.asdict(t)) for t in page.top_tokens],
        examples=[example(e) for e in page.examples],
        offset=page.offset,
        positions=[s.PositionBinOut(**dataclasses.asdict(b)) for b in page.positions],
        labels=[s.LabelShareOut(**dataclasses.asdict(b)) for b in page.labels],
        description=None if page.description is None else description(page.description),
        cooccurring=[related(c) for c in page.cooccurring],
        similar=None if page.similar is None else [similar(c) for c in page.similar],
        logit_effect=None
        if effect is None
        else s.LogitEffectOut(
            up=[s.TokenValue(token=t, value=number(v)) for t, v in effect.up],
            down=[s.TokenValue(token=t, value=number(v)) for t, v in effect.down],
        ),
        notes=page.notes,
    )


def example(found: Example) -> s.ExampleOut:
    return s.ExampleOut(
        document=found.document,
        position=found.position,
        token=found.token,
        before=found.before,
        after=found.after,
        url=document_url(found.document, found.position),
        marks=[list(mark) for mark in found.marks],
    )


def description(found: Any) -> s.DescriptionOut:
    return s.DescriptionOut(
        code=str(found.code),
        url=code_url(found.code),
        kind=found.kind,
        terms=list(found.terms),
        text=found.text,
        precision=number(found.precision),
        recall=number(found.recall),
        f1=number(found.f1),
        support=found.support,
        fit_support=found.fit_support,
    )


def topic_code(found: Any, examples: list[s.DocumentRef]) -> s.TopicCodeOut:
    return s.TopicCodeOut(
        code=str(found.code),
        url=code_url(found.code),
        documents=found.documents,
        mean_share=found.mean_share,
        label=found.label,
        precision=found.precision,
        recall=found.recall,
        lift=found.lift,
        examples=examples,
    )


def related(code: Any) -> s.RelatedCode:
    return s.RelatedCode(
        code=str(code.code), url=code_url(code.code), count=code.count, share=code.share
    )


def similar(code: Any) -> s.SimilarCode:
    return s.SimilarCode(code=str(code.code), url=code_url(code.code), cosine=number(code.cosine))


def number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def finite(data: Any) -> Any:
    """JSON-ready data with NaN and infinities as null (JSON has neither)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {str(k): finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data

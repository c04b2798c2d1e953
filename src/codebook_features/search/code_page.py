"""Everything about one code, for its page: how often and where it fires (positions, documents,
labels against their base rates), on which tokens, in which contexts (paged, every firing
marked), with which codes of other sites, which codes of its group are most alike, and what it
writes towards the next token.

Store facts need only the store (and read only the code's own rows). Similar codes and the
direct logit effect need the model: the effect is the code's share of its codebook's output
(``vector / k`` for a mean, the vector for a sum) carried to the residual stream (through the
head's slice of the attention output projection for ``attn_heads``, through the MLP's output
projection for ``mlp_hidden``, as it is for ``attn``, ``mlp`` and ``block``) and read by the
unembedding, without the final layer norm (a direct effect, not what the whole network does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from codebook_features.attach.code_ref import CodeRef
from codebook_features.errors import CodebookError
from codebook_features.search.regex import Example, _example
from codebook_features.search.token_text import readable_token
from codebook_features.store.descriptions import CodeDescription
from codebook_features.store.reader import CodeStore

if TYPE_CHECKING:
    import torch


POSITION_EDGES = (0, 1, 4, 16, 64, 256, 1024)
"""Where the position bins start: the first token, the next three, and so on by fours."""
MAX_LABELS = 12
"""Labels listed per label column, most firings first (a column may hold one per document)."""


@dataclass(frozen=True)
class TokenCount:
    text: str
    count: int
    share: float
    """Of the code's firings."""
    of_token: float = 0.0
    """Of the token's occurrences in the store, the share the code fires on."""


@dataclass(frozen=True)
class LabelShare:
    """The code's firings in documents of one label, against that label's share of tokens."""

    field: str
    label: str
    count: int
    share: float
    """Of the code's firings."""
    base: float
    """Of all tokens in the store."""
    lift: float
    """``share / base``: above 1, the code fires more in this label's documents."""


@dataclass(frozen=True)
class PositionBin:
    """Firings at positions ``start <= position < stop`` within their document."""

    start: int
    stop: int | None
    """``None``: to the end."""
    count: int
    share: float
    """Of the code's firings."""
    base: float
    """Of all tokens in the store."""


@dataclass(frozen=True)
class CodeCount:
    """A code of another site that fires on this page's code's tokens."""

    code: CodeRef
    count: int
    share: float
    """Of this page's code's firings."""


@dataclass(frozen=True)
class SimilarCode:
    """A code of the same group, by the cosine similarity of the two code vectors."""

    code: CodeRef
    cosine: float


@dataclass(frozen=True)
class LogitEffect:
    """The tokens the code pushes up most and down most, with the logit change."""

    up: list[tuple[str, float]]
    down: list[tuple[str, float]]


@dataclass(frozen=True)
class CodePage:
    code: CodeRef
    frequency: int
    """Tokens it fires on."""
    share: float
    """Of all tokens in the store."""
    documents: int
    """Documents it fires in."""
    per_document: float = 0.0
    """Mean firings per document it fires in."""
    most_in_a_document: int = 0
    top_tokens: list[TokenCount] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    """Contexts ``offset`` onwards, one per document before a second from any (the token
    marked ``[[...]]``, every firing in view in ``marks``)."""
    offset: int = 0
    """The first context shown, counted over all ``frequency`` of them."""
    positions: list[PositionBin] = field(default_factory=list)
    labels: list[LabelShare] = field(default_factory=list)
    """Per label column, its labels by firings (at most ``MAX_LABELS`` each)."""
    description: CodeDescription | None = None
    """Its automatic description, scored on held-out documents (from the index)."""
    cooccurring: list[CodeCount] = field(default_factory=list)
    """Codes of other sites that fire on the same tokens, most often first."""
    similar: list[SimilarCode] | None = None
    """Codes of the same group with the most similar vectors (needs the model)."""
    logit_effect: LogitEffect | None = None
    """Direct effect on the next-token logits (needs the model)."""
    notes: list[str] = field(default_factory=list)
    """What could not be computed, and why."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["code"] = str(self.code)
        if self.description is not None:
            data["description"] = self.description.to_dict()
        for key in ("cooccurring", "similar"):
            codes = getattr(self, key)
            if codes is not None:  # asdict turned each CodeRef into a dict: name it instead
                data[key] = [{**asdict(c), "code": str(c.code)} for c in codes]
        return data


def code_page(
    store: CodeStore,
    ref: CodeRef | str,
    model: Any = None,
    tokenizer: Any = None,
    *,
    top: int = 10,
    examples: int = 8,
    offset: int = 0,
) -> CodePage:
    """The page of ``ref``; ``model`` (a ``CodebookModel``) adds similar codes and the logit
    effect, ``tokenizer`` names tokens the store never saw. ``offset`` pages the contexts."""
    ref = CodeRef.parse(ref) if isinstance(ref, str) else ref
    rows = store.occurrences(ref)
    notes: list[str] = []
    documents = np.asarray(store.document)[rows]
    _, per_document = np.unique(documents, return_counts=True)
    page = {
        "code": ref,
        "frequency": len(rows),
        "share": len(rows) / max(store.num_tokens, 1),
        "documents": len(per_document),
        "per_document": float(per_document.mean()) if len(rows) else 0.0,
        "most_in_a_document": int(per_document.max()) if len(rows) else 0,
        "top_tokens": _top_tokens(store, rows, top),
        "examples": code_contexts(store, rows, documents, offset, examples),
        "offset": offset,
        "positions": _positions(store, rows),
        "labels": _labels(store, rows),
        "description": store.description(ref),
        "cooccurring": _cooccurring(store, ref, rows, top),
    }
    if model is None:
        notes.append("similar codes and the logit effect need the model")
        return CodePage(**page, notes=notes)
    import torch  # only with a model: a page from the store alone needs no torch

    with torch.no_grad():
        page["similar"] = _similar(model.codebook(ref.site), ref, top)
        effect, why = _logit_effect(model, ref, store, tokenizer, top)
    if why:
        notes.append(why)
    return CodePage(**page, logit_effect=effect, notes=notes)


def _top_tokens(store: CodeStore, rows: np.ndarray, top: int) -> list[TokenCount]:
    if not len(rows):
        return []
    tokens = np.asarray(store.token)[rows]
    ids, first, counts = np.unique(tokens, return_index=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    totals = _token_totals(store)
    return [
        TokenCount(
            store.token_text(int(rows[first[i]])),
            int(counts[i]),
            float(counts[i] / len(rows)),
            float(counts[i] / totals[ids[i]]),
        )
        for i in order
    ]


def code_contexts(
    store: CodeStore, rows: np.ndarray, documents: np.ndarray, offset: int, count: int
) -> list[Example]:
    """Contexts ``offset`` to ``offset + count`` of the code firing on ``rows`` (ascending, in
    ``documents``): one per document, in document order, before a second from any; each marks
    every firing in view."""
    _, first = np.unique(documents, return_index=True)
    rest = np.setdiff1d(np.arange(len(rows)), first)
    chosen = np.r_[np.sort(first), rest][offset : offset + count]
    return [_marked(store, int(rows[i]), rows) for i in chosen]


def _marked(store: CodeStore, row: int, fires: np.ndarray, width: int = 40) -> Example:
    example = _example(store, row, width)
    begin = int(store.start[row]) - len(example.before)
    stop = int(store.end[row]) + len(example.after)
    lo, hi = np.searchsorted(fires, store.document_range(example.document))
    near = fires[lo:hi]
    starts, ends = np.asarray(store.start[near]), np.asarray(store.end[near])
    seen = ((ends > begin) & (starts < stop)) | (near == row)
    marks = tuple(
        (max(int(a), begin) - begin, min(int(b), stop) - begin)
        for a, b in zip(starts[seen], ends[seen], strict=True)
    )
    return dataclasses.replace(example, marks=marks)


def _positions(store: CodeStore, rows: np.ndarray) -> list[PositionBin]:
    base, edges = _position_base(store)
    counts = np.histogram(np.asarray(store.position)[rows], edges)[0] if len(rows) else base * 0
    total = max(len(rows), 1)
    return [
        PositionBin(
            int(edges[b]),
            None if b == len(base) - 1 else int(edges[b + 1]),
            int(counts[b]),
            float(counts[b] / total),
            float(base[b]),
        )
        for b in range(len(base))
    ]


@lru_cache(maxsize=4)
def _position_base(store: CodeStore) -> tuple[np.ndarray, np.ndarray]:
    """Each position bin's share of all tokens, and the bins' edges (bins past the longest
    document are left out)."""
    positions = np.asarray(store.position)
    longest = int(positions.max()) if len(positions) else 0
    edges = np.array([e for e in POSITION_EDGES if e <= longest] + [np.iinfo(np.int64).max])
    return np.histogram(positions, edges)[0] / max(len(positions), 1), edges


@lru_cache(maxsize=4)
def _token_totals(store: CodeStore) -> np.ndarray:
    return np.bincount(np.asarray(store.token))


def _labels(store: CodeStore, rows: np.ndarray) -> list[LabelShare]:
    from codebook_features.search.topics import labels_in_order

    if not len(rows):
        return []
    _, firsts = store.document_rows
    lengths = np.diff(firsts)
    where = np.searchsorted(firsts, rows, side="right") - 1  # each row's document index
    shares: list[LabelShare] = []
    for field_name in store.manifest.data.label_fields:
        names, inverse = np.unique(labels_in_order(store, field_name), return_inverse=True)
        base = np.bincount(inverse, weights=lengths, minlength=len(names)) / store.num_tokens
        counts = np.bincount(inverse[where], minlength=len(names))
        for i in np.argsort(-counts, kind="stable")[:MAX_LABELS]:
            if counts[i]:
                share, of_all = float(counts[i] / len(rows)), float(base[i])
                shares.append(
                    LabelShare(
                        field_name, str(names[i]), int(counts[i]), share, of_all, share / of_all
                    )
                )
    return shares


def _cooccurring(store: CodeStore, ref: CodeRef, rows: np.ndarray, top: int) -> list[CodeCount]:
    if not len(rows):
        return []
    found: list[CodeCount] = []
    for site, info in store.sites.items():
        if site == ref.site:
            continue
        counts = store.code_counts(site, rows)
        for code in np.argsort(-counts, kind="stable")[:top]:
            if counts[code]:
                group, number = divmod(int(code), info.num_codes)
                found.append(
                    CodeCount(
                        CodeRef(site, group, number), int(counts[code]), counts[code] / len(rows)
                    )
                )
    found.sort(key=lambda c: (-c.count, c.code.sort_key()))
    return found[:top]


def _similar(codebook: Any, ref: CodeRef, top: int) -> list[SimilarCode]:
    import torch

    vectors = codebook.vectors[ref.group].float()
    if ref.id >= vectors.shape[0]:
        raise CodebookError(f"{ref} is not in the model's codebook at {ref.site}")
    cosine = torch.nn.functional.cosine_similarity(vectors, vectors[ref.id][None], dim=-1)
    cosine[ref.id] = -2.0
    best = cosine.topk(min(top, vectors.shape[0] - 1)).indices.tolist()
    return [SimilarCode(CodeRef(ref.site, ref.group, c), float(cosine[c])) for c in best]


def residual_direction(model: Any, ref: CodeRef) -> tuple[torch.Tensor | None, str]:
    """The code's share of its codebook's output as a residual-stream vector, or ``None`` and
    why not."""
    import torch

    with torch.no_grad():
        return _residual_direction(model, ref)


def _residual_direction(model: Any, ref: CodeRef) -> tuple[torch.Tensor | None, str]:
    import torch

    codebook = model.codebook(ref.site)
    config = codebook.config
    vector = codebook.vectors[ref.group, ref.id].float()
    vector = vector / config.k if config.aggregate == "mean" else vector
    location = model.sites[ref.site]
    start, stop = ref.group * config.group_dim, (ref.group + 1) * config.group_dim
    if location.kind in ("attn_heads", "mlp_hidden"):
        weight = _projection(location.module)
        if weight is None:
            return None, f"the projection after {ref.site} is not a linear layer"
        return weight[:, start:stop].float() @ vector, ""
    full = torch.zeros(config.dim, device=vector.device)
    full[start:stop] = vector
    return full, ""


def _projection(module: torch.nn.Module) -> torch.Tensor | None:
    """``(out, in)`` weight of a linear projection (``nn.Linear`` or GPT-2's ``Conv1D``)."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.weight
    weight = getattr(module, "weight", None)
    if weight is not None and hasattr(module, "nf"):  # Conv1D stores (in, out)
        return weight.T
    return None


def _logit_effect(
    model: Any, ref: CodeRef, store: CodeStore, tokenizer: Any, top: int
) -> tuple[LogitEffect | None, str]:
    direction, why = _residual_direction(model, ref)
    if direction is None:
        return None, why
    unembed = model.model.get_output_embeddings()
    if unembed is None or not hasattr(unembed, "weight"):
        return None, "the model has no output embedding to read the effect with"
    if unembed.weight.shape[1] != direction.shape[0]:
        return None, "the output embedding does not read the residual stream directly"
    logits = unembed.weight.float() @ direction.to(unembed.weight.device)
    names = _token_names(store, tokenizer)
    up = logits.topk(min(top, len(logits)))
    down = (-logits).topk(min(top, len(logits)))
    return LogitEffect(
        [(names(int(i)), float(v)) for v, i in zip(up.values, up.indices, strict=True)],
        [(names(int(i)), float(-v)) for v, i in zip(down.values, down.indices, strict=True)],
    ), ""


def _token_names(store: CodeStore, tokenizer: Any) -> Any:
    if tokenizer is not None:
        return lambda i: readable_token(tokenizer, i)
    from codebook_features.search.tokens import token_texts

    seen = token_texts(store)
    return lambda i: seen.get(i, f"<{i}>")

"""Everything about one code, for its page: how often and where it fires, on which tokens, in
which contexts, with which codes of other sites, which codes of its group are most alike, and
what it writes towards the next token.

Store facts need only the store (and read only the code's own rows). Similar codes and the
direct logit effect need the model: the effect is the code's share of its codebook's output
(``vector / k`` for a mean, the vector for a sum) carried to the residual stream (through the
head's slice of the attention output projection for ``attn_heads``, through the MLP's output
projection for ``mlp_hidden``, as it is for ``attn``, ``mlp`` and ``block``) and read by the
unembedding, without the final layer norm (a direct effect, not what the whole network does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from codebook_features.attach.code_ref import CodeRef
from codebook_features.errors import CodebookError
from codebook_features.search.regex import Example, _example
from codebook_features.store.reader import CodeStore

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TokenCount:
    text: str
    count: int
    share: float
    """Of the code's firings."""


@dataclass(frozen=True)
class CodeCount:
    code: CodeRef
    count: int
    share: float
    """Of this page's code's firings (co-occurrence) or cosine similarity (similar codes)."""


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
    top_tokens: list[TokenCount] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    """Contexts, spread over documents (the token marked ``[[...]]``)."""
    cooccurring: list[CodeCount] = field(default_factory=list)
    """Codes of other sites that fire on the same tokens, most often first."""
    similar: list[CodeCount] | None = None
    """Codes of the same group with the most similar vectors (needs the model)."""
    logit_effect: LogitEffect | None = None
    """Direct effect on the next-token logits (needs the model)."""
    notes: list[str] = field(default_factory=list)
    """What could not be computed, and why."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["code"] = str(self.code)
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
) -> CodePage:
    """The page of ``ref``; ``model`` (a ``CodebookModel``) adds similar codes and the logit
    effect, ``tokenizer`` names tokens the store never saw."""
    ref = CodeRef.parse(ref) if isinstance(ref, str) else ref
    rows = store.occurrences(ref)
    notes: list[str] = []
    documents = np.asarray(store.document)[rows]
    page = {
        "code": ref,
        "frequency": len(rows),
        "share": len(rows) / max(store.num_tokens, 1),
        "documents": len(np.unique(documents)),
        "top_tokens": _top_tokens(store, rows, top),
        "examples": _spread_examples(store, rows, documents, examples),
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
    _, first, counts = np.unique(tokens, return_index=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return [
        TokenCount(store.token_text(int(rows[first[i]])), int(counts[i]), counts[i] / len(rows))
        for i in order
    ]


def _spread_examples(
    store: CodeStore, rows: np.ndarray, documents: np.ndarray, count: int
) -> list[Example]:
    """One context per document (in document order) before a second from any."""
    _, first = np.unique(documents, return_index=True)
    rest = np.setdiff1d(np.arange(len(rows)), first)
    return [_example(store, int(rows[i])) for i in np.r_[np.sort(first), rest][:count]]


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


def _similar(codebook: Any, ref: CodeRef, top: int) -> list[CodeCount]:
    import torch

    vectors = codebook.vectors[ref.group].float()
    if ref.id >= vectors.shape[0]:
        raise CodebookError(f"{ref} is not in the model's codebook at {ref.site}")
    cosine = torch.nn.functional.cosine_similarity(vectors, vectors[ref.id][None], dim=-1)
    cosine[ref.id] = -2.0
    best = cosine.topk(min(top, vectors.shape[0] - 1)).indices.tolist()
    return [CodeCount(CodeRef(ref.site, ref.group, c), 0, float(cosine[c])) for c in best]


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
        return lambda i: tokenizer.decode([i])
    from codebook_features.search.tokens import token_texts

    seen = token_texts(store)
    return lambda i: seen.get(i, f"<{i}>")

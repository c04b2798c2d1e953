"""Building concepts: choose codes by an explicit rule, from a store or from example texts.

Three sources, one rule (:class:`SelectionRule`), saved in the concept with the source, so
nobody has to hand-pick codes and every concept says how it was made:

- a regex over a store's text (:func:`concept_from_regex`): codes ranked as classifiers of the
  tokens the pattern matches (precision, recall, F1 as ``search.regex`` computes them);
- a document label (:func:`concept_from_label`): the same token-level scores with the tokens of
  the label's documents as the feature. Token-level rather than topic codes (codes covering
  half of a document, ``search.topics``): a code that fires often in the label's documents and
  rarely elsewhere is what forcing can write, and most such codes never cover half a document;
- example and contrast texts run through the model (:func:`concept_from_texts`): codes ranked by
  smoothed log-odds of firing in the examples rather than in the contrast; with a store's
  documents of a label as the examples and others as the contrast
  (:func:`concept_from_label_texts`), the way that steered the most topics on the language
  demo.

``documents`` restricts a store to some of its documents (:func:`split_documents`), so codes can
be chosen on one part and evaluated on another.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.fingerprint import codebooks_fingerprint
from codebook_features.errors import CodebookError
from codebook_features.search.regex import regex_token_rows, score_codes
from codebook_features.search.topics import checked_labels, document_labels
from codebook_features.steering.batches import check_batch_size, padded_batches, windows
from codebook_features.steering.concept import (
    Concept,
    check_name,
    site_shapes,
)
from codebook_features.steering.config import Ranked, SelectionRule
from codebook_features.store.model_loading import context_length

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel
    from codebook_features.store.reader import CodeStore

"""Candidate codes, best first, with their scores."""
DEFAULT_RULE = SelectionRule()

__all__ = [
    "SelectionRule",
    "check_store",
    "chosen_on",
    "concept_from_label",
    "concept_from_ranked",
    "concept_from_regex",
    "concept_from_texts",
    "count_codes",
    "document_token_rows",
    "split_documents",
    "store_source",
]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------- stores
def check_store(store: CodeStore, model: CodebookModel) -> None:
    """Refuse a store not recorded from ``model``: every recorded site must be one of the
    model's, with the same groups, codes and k (the store's ids are the model's codes)."""
    for site, info in store.sites.items():
        if site not in model.sites:
            mine = None
        else:
            c = model.codebook(site).config
            mine = {"groups": c.groups, "num_codes": c.num_codes, "k": c.k}
        recorded = {"groups": info.groups, "num_codes": info.num_codes, "k": info.k}
        if mine != recorded:
            raise CodebookError(
                f"the store {store.path} was not recorded from this model: at {site} it holds "
                f"{recorded}, the model has {mine or 'no codebook'}; give the model the store "
                "was recorded from, or record the store again with this model"
            )


def document_token_rows(store: CodeStore, documents: Any) -> np.ndarray:
    """The token rows (ascending) of some of the store's documents (ids)."""
    wanted = np.asarray(documents)
    if wanted.ndim != 1 or not wanted.size or not np.issubdtype(wanted.dtype, np.integer):
        raise CodebookError("documents must be a non-empty list of document ids (integers)")
    wanted = np.unique(wanted.astype(np.int64))
    known = np.fromiter(store.texts, dtype=np.int64)
    unknown = wanted[~np.isin(wanted, known)]
    if unknown.size:
        shown = ", ".join(map(str, unknown[:5].tolist())) + (", ..." if unknown.size > 5 else "")
        raise CodebookError(
            f"{unknown.size} document id(s) are not in the store {store.path}: {shown}"
        )
    ids, firsts = store.document_rows
    chosen = np.flatnonzero(np.isin(ids, wanted))
    starts, lengths = firsts[chosen], firsts[chosen + 1] - firsts[chosen]
    offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return offsets + np.arange(int(lengths.sum()), dtype=np.int64)


def split_documents(
    store: CodeStore, fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(selection, held-out)`` document ids: a fixed, seeded split of the store's documents,
    ``fraction`` of them (rounded) to choose codes on and the rest to evaluate them on."""
    if not _number(fraction) or not 0 < fraction < 1:
        raise CodebookError(f"fraction must be between 0 and 1, got {fraction!r}")
    ids = np.array(sorted(store.texts), dtype=np.int64)
    count = round(fraction * len(ids))
    if not 0 < count < len(ids):
        raise CodebookError(
            f"a split of {len(ids)} document(s) at {fraction} leaves one side empty: "
            "choose another fraction, or a larger store"
        )
    order = np.random.default_rng(seed).permutation(ids)
    return np.sort(order[:count]), np.sort(order[count:])


def store_source(store: CodeStore, documents: Any) -> dict[str, Any]:
    """Which store and which of its documents a concept's codes were chosen on: the model's
    fingerprint, a fingerprint of the store's documents (ids and texts) and one of the chosen
    documents, so that a concept chosen on another store of the same size is told apart."""
    source: dict[str, Any] = {
        "path": str(store.path),
        "fingerprint": store.manifest.model.fingerprint,
        "store": store.documents_fingerprint(),
        "documents": "all",
    }
    if documents is not None:
        ids = np.unique(np.asarray(documents, dtype=np.int64))
        source["documents"] = {
            "count": int(ids.size),
            "of": len(store.texts),
            "sha256": store.documents_fingerprint(ids),
        }
    return source


def chosen_on(source: Any, expected: dict[str, Any], *, any_documents: bool = False) -> bool:
    """Whether a concept's recorded store source (``selection.store``) is ``expected``: the
    same model and the same store documents (the path may differ), and the same chosen
    documents unless ``any_documents`` (when none of the store's documents is in the
    classifier's training texts, any of them may choose codes)."""
    if not isinstance(source, dict):
        return False
    keys = ("fingerprint", "store") if any_documents else ("fingerprint", "store", "documents")
    return all(source.get(key) == expected[key] for key in keys)


def concept_from_regex(
    store: CodeStore,
    model: CodebookModel,
    name: str,
    pattern: str,
    rule: SelectionRule = DEFAULT_RULE,
    documents: Any = None,
    *,
    description: str = "",
) -> Concept:
    """Codes standing for the tokens ``pattern`` matches in ``store`` (in ``documents``)."""
    check_name(name)
    check_store(store, model)
    positive = regex_token_rows(store, pattern)
    selection = {"method": "regex", "pattern": pattern}
    what = f"no token of {store.path} matches {pattern!r}"
    return _from_store(store, model, name, positive, rule, documents, selection, description, what)


def concept_from_label(
    store: CodeStore,
    model: CodebookModel,
    name: str,
    label_field: str,
    label: Any,
    rule: SelectionRule = DEFAULT_RULE,
    documents: Any = None,
    *,
    description: str = "",
) -> Concept:
    """Codes that fire on the tokens of the documents with ``label_field == label`` rather than
    on other documents' tokens (precision and recall over tokens, as for a regex)."""
    check_name(name)
    check_store(store, model)
    ids, _ = store.document_rows
    labels = checked_labels(store, label_field, str(label))  # refuses an unknown field or label
    mine = ids[labels == str(label)] if labels is not None else ids[:0]
    positive = document_token_rows(store, mine) if mine.size else np.zeros(0, np.int64)
    selection = {"method": "label", "label_field": label_field, "label": str(label)}
    what = f"no document with {label_field} = {str(label)!r} has tokens"
    return _from_store(store, model, name, positive, rule, documents, selection, description, what)


def _from_store(
    store: CodeStore,
    model: CodebookModel,
    name: str,
    positive: np.ndarray,
    rule: SelectionRule,
    documents: Any,
    selection: dict[str, Any],
    description: str,
    what: str,
) -> Concept:
    """The concept of the codes that best classify the token rows ``positive``."""
    rows = None if documents is None else document_token_rows(store, documents)
    if rows is not None:
        positive = np.intersect1d(positive, rows)
        what += " among the chosen documents"
    if not positive.size:
        raise CodebookError(what)
    found = score_codes(
        store,
        positive,
        store.select_sites(rule.sites),
        sort=rule.rank,  # type: ignore[arg-type]
        min_precision=rule.min_precision,
        min_support=rule.min_support,
        top=None,
        examples=0,
        rows=rows,
    )
    keys = ("precision", "recall", "f1")
    ranked = [(s.code, {k: round(getattr(s, k), 6) for k in keys} | _counts(s)) for s in found]
    selection |= {"tokens": int(positive.size), "store": store_source(store, documents)}
    return concept_from_ranked(model, name, ranked, rule, selection, description)


def _counts(score: Any) -> dict[str, int]:
    return {"support": score.support, "hits": score.hits}


# ---------------------------------------------------------------------- texts
def concept_from_texts(
    model: CodebookModel,
    tokenizer: Any,
    name: str,
    examples: Sequence[str],
    contrast: Sequence[str],
    rule: SelectionRule = DEFAULT_RULE,
    batch_size: int = 8,
    *,
    description: str = "",
) -> Concept:
    """Codes that fire more on ``examples`` than on ``contrast`` texts.

    Per code, with ``a``/``b`` its firings on example/contrast tokens, ``A``/``B`` all firings
    of its group there (k per token), ``V`` the group's number of codes and alpha the rule's
    ``smoothing``: log-odds = log((a+alpha)/(A+alpha V)) - log((b+alpha)/(B+alpha V)). Codes
    with positive log-odds, ``a >= min_support`` and ``a/(a+b) >= min_precision`` are ranked by
    it (then by ``a``)."""
    check_name(name)
    sites = model.select_sites(rule.sites)
    a_counts, a_tokens = count_codes(model, tokenizer, examples, sites, batch_size, "examples")
    b_counts, b_tokens = count_codes(model, tokenizer, contrast, sites, batch_size, "contrast")
    alpha = float(rule.smoothing)
    candidates: list[tuple[float, int, CodeRef, dict[str, Any]]] = []
    for site in sites:
        a, b = a_counts[site].astype(np.float64), b_counts[site].astype(np.float64)
        vocab = a.shape[1]
        big_a, big_b = a.sum(axis=1, keepdims=True), b.sum(axis=1, keepdims=True)
        odds = np.log((a + alpha) / (big_a + alpha * vocab)) - np.log(
            (b + alpha) / (big_b + alpha * vocab)
        )
        precision = np.divide(a, a + b, out=np.zeros_like(a), where=(a + b) > 0)
        keep = (odds > 0) & (a >= rule.min_support) & (precision >= rule.min_precision)
        for group, code in zip(*np.nonzero(keep), strict=True):
            score = {
                "log_odds": round(float(odds[group, code]), 6),
                "examples": int(a[group, code]),
                "contrast": int(b[group, code]),
                "precision": round(float(precision[group, code]), 6),
            }
            ref = CodeRef(site, int(group), int(code))
            candidates.append((-float(odds[group, code]), -int(a[group, code]), ref, score))
    candidates.sort(key=lambda c: (c[0], c[1], c[2].sort_key()))
    ranked = [(ref, score) for _, _, ref, score in candidates]
    selection = {
        "method": "texts",
        "examples": len(examples),
        "contrast": len(contrast),
        "example_tokens": a_tokens,
        "contrast_tokens": b_tokens,
        "texts_sha256": _texts_digest(examples, contrast),
        "score": "log((a+alpha)/(A+alpha*V)) - log((b+alpha)/(B+alpha*V)), alpha = smoothing",
    }
    return concept_from_ranked(model, name, ranked, rule, selection, description)


def concept_from_label_texts(
    store: CodeStore,
    model: CodebookModel,
    tokenizer: Any,
    name: str,
    label_field: str,
    label: Any,
    rule: SelectionRule = DEFAULT_RULE,
    *,
    examples: int = 60,
    seed: int = 0,
    batch_size: int = 16,
    description: str = "",
) -> Concept:
    """:func:`concept_from_texts` with the store's documents as the texts: at most
    ``examples`` documents with ``label_field == label`` against twice as many others, each
    drawn by ``seed``. On the language demo this is the way of choosing codes that steers the
    most topics (``codebook lm methods``): the log-odds rank codes by how much more of their
    head's firings they take on the label, among codes that fire on it at least
    ``rule.min_support`` times."""
    check_name(name)
    check_store(store, model)
    checked_labels(store, label_field, str(label))  # refuses an unknown field or label
    labels = document_labels(store, label_field)
    mine = [d for d in sorted(labels) if labels[d] == str(label)]
    others = [d for d in sorted(labels) if labels[d] != str(label)]
    if not others:
        raise CodebookError(
            f"every document of {store.path} has {label_field} = {str(label)!r}: the log-odds "
            "need other documents to compare with (or use the label's tokens, --label_by tokens)"
        )
    rng = random.Random(seed)
    rng.shuffle(mine)
    rng.shuffle(others)
    mine, others = mine[:examples], others[: 2 * examples]
    concept = concept_from_texts(
        model,
        tokenizer,
        name,
        [store.texts[d] for d in mine],
        [store.texts[d] for d in others],
        rule,
        batch_size=batch_size,
        description=description,
    )
    chosen = {"label_field": label_field, "label": str(label), "seed": seed}
    chosen["store"] = store_source(store, mine + others)
    return concept.replace(selection=concept.selection | chosen)


@torch.no_grad()
def count_codes(
    model: CodebookModel,
    tokenizer: Any,
    texts: Sequence[str],
    sites: Sequence[str],
    batch_size: int = 8,
    what: str = "texts",
) -> tuple[dict[str, np.ndarray], int]:
    """``({site: (groups, num_codes) firings}, tokens)`` of the model over ``texts``
    (tokenized without special tokens, as a store records them; a text longer than the model's
    context is cut into consecutive windows, so every token counts). Texts without tokens are
    left out; ``texts`` with no token at all are refused."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise CodebookError(f"{what} must be a list of texts")
    check_batch_size(batch_size)
    context = context_length(model.model.config)
    found = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    pieces = [piece for ids in found for piece in windows(ids, context)]
    if not pieces:
        raise CodebookError(f"the {what} hold no tokens: give at least one non-empty text")
    sizes = {
        site: model.codebook(site).config.groups * model.codebook(site).config.num_codes
        for site in sites
    }
    counts = {site: np.zeros(size, np.int64) for site, size in sizes.items()}
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        for ids, mask, _ in padded_batches(pieces, batch_size, device):
            _, seen = model.run_with_codes(
                input_ids=ids, attention_mask=mask, sites=sites, use_cache=False
            )
            real = mask.bool().cpu()[:, :, None, None]
            for site in sites:
                codes = seen.ids[site].cpu().long()  # (B, T, G, k)
                num_codes = model.codebook(site).config.num_codes
                flat = codes + (torch.arange(codes.shape[2]) * num_codes)[None, None, :, None]
                valid = real & (codes >= 0)
                counts[site] += np.bincount(flat[valid].numpy(), minlength=counts[site].size)
    finally:
        model.train(training)
    shaped = {site: c.reshape(model.codebook(site).config.groups, -1) for site, c in counts.items()}
    return shaped, sum(len(ids) for ids in pieces)


def _texts_digest(examples: Sequence[str], contrast: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in (examples, contrast):
        digest.update(str(len(part)).encode())
        for text in part:
            digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------- the concept
def concept_from_ranked(
    model: CodebookModel,
    name: str,
    ranked: Ranked,
    rule: SelectionRule,
    selection: dict[str, Any],
    description: str = "",
) -> Concept:
    """The concept of the codes ``rule`` keeps of ``ranked`` (best first, with scores), saying
    in ``selection`` how they were found; refused when the rule keeps none."""
    kept = rule.choose(ranked)
    if not kept:
        raise CodebookError(
            f"no code passed the rule for concept {name!r} ({len(ranked)} candidate(s) before "
            f"per_group and max_codes): lower min_precision ({rule.min_precision}) or "
            f"min_support ({rule.min_support}), or choose other sites"
        )
    refs = tuple(ref for ref, _ in kept)
    concept = Concept(
        name=name,
        codes=refs,
        fingerprint=codebooks_fingerprint(model),
        sites=site_shapes(model, [r.site for r in refs]),
        selection=selection | {"rule": rule.to_dict()},
        scores=tuple(score for _, score in kept),
        description=description,
    )
    concept.check_codes(model)
    return concept

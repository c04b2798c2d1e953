"""Baselines on the same features: codes vs single neurons vs TopK SAE latents.

The protocol (the paper's TokFSM neuron baseline, generalised to regex features). Everything
is scored on the same token rows: those whose activations were recorded
(``CodeStore.activation_rows``, the first ``max_activation_tokens`` tokens of each recording
process), or a seeded uniform sample of ``max_tokens`` of them when there are more. A feature
is the set of those rows that overlap a regex match (:func:`~.regex.regex_token_rows`).

1. Best code: among the codes of the site, the one with the highest F1 as a classifier of the
   feature on those rows (ties: higher precision, higher recall, lower group then id); its
   precision and recall ``r`` on those rows. (The codes are not ranked over the whole store
   as ``codebook search regex`` does, so that the three columns describe the same tokens.)
2. Best neuron at recall ``r``: for every dimension of the site's codebook input, and its
   negation, the threshold that ``r`` of the feature's tokens reach; precision of the tokens
   reaching it; the best of all (:func:`~codebook_features.search.neurons.best_neurons`).
3. Best SAE latent at recall ``r``: the same with the latents of a TopK SAE trained on the
   same rows' activations, with as many latents as the site has codes (``groups *
   num_codes``) and the same number active per token (``groups * k``). A latent's score is its
   activation after the TopK (zero where it is not among a token's k); latents are not
   negated, as an SAE latent is a non-negative feature.

Memory: the activations taken are at most ``max_tokens`` rows (float16, ``max_tokens * width *
2`` bytes, memory mapped when they are all the rows of one file); the neuron scan holds about
``32 * CHUNK_VALUES`` bytes at once (chunks of neurons over all rows); the SAE latents are kept
sparse (``tokens * groups * k`` values).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from codebook_features.attach.code_ref import CodeRef
from codebook_features.errors import CodebookError
from codebook_features.search.neurons import best_neurons
from codebook_features.search.regex import regex_token_rows
from codebook_features.search.sae import SAEConfig, TopKSAE, train_sae
from codebook_features.search.scores import f1
from codebook_features.store.reader import CodeStore

MAX_TOKENS = 100_000
"""Rows scored at most (a seeded uniform sample when more have activations)."""
CHUNK_VALUES = 1 << 22
"""Activation values (rows x neurons) handed to ``best_neurons`` at once."""
ENCODE_ROWS = 8192
"""Rows encoded by the SAE at once."""


@dataclass(frozen=True)
class UnitScore:
    """The best single unit (neuron or SAE latent) as a classifier of a feature."""

    unit: int | None
    """Its index (``None``: the feature has no tokens, or the recall asked is 0)."""
    sign: int
    """``-1`` when the neuron is read with its sign flipped."""
    precision: float | None


@dataclass(frozen=True)
class BaselineRow:
    """One feature's best code, and the best neuron and SAE latent at the code's recall."""

    pattern: str
    """The regex (``mean`` for the row of means)."""
    tokens: int
    """Rows scored (those with activations, or a sample of them)."""
    positives: int
    """Of those, rows of the feature (in the mean row: the total over the patterns)."""
    code: str | None
    """The best code by F1 on those rows (``None``: no code fires on the feature)."""
    code_precision: float | None
    code_recall: float | None
    neuron: int | None
    neuron_sign: int
    neuron_precision: float | None
    """The best neuron's precision at the code's recall."""
    latent: int | None
    sae_precision: float | None
    """The best SAE latent's precision at the code's recall."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- public functions
def activation_sample(
    store: CodeStore, site: str, max_tokens: int | None = MAX_TOKENS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, activations)``: the token rows scored and their float16 activations at
    ``site``: every row with activations, or a seeded sample of ``max_tokens`` (ascending)."""
    acts = store.activations(site)
    rows = store.activation_rows
    if not len(rows):
        raise CodebookError(f"{store.path} holds no activations to score")
    if max_tokens is not None and len(rows) > max_tokens:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), max_tokens, replace=False))
        return rows[pick], np.asarray(acts[pick])
    return rows, acts


def neuron_baseline(
    store: CodeStore,
    site: str,
    positive_rows: np.ndarray,
    recall: float,
    *,
    max_tokens: int | None = MAX_TOKENS,
    seed: int = 0,
) -> UnitScore:
    """The best single neuron of ``site`` (sign flipped too) at ``recall`` of the feature
    ``positive_rows`` (token rows), on the rows with activations (see the module)."""
    rows, acts = activation_sample(store, site, max_tokens, seed)
    return _neuron_score(acts, np.isin(rows, positive_rows), recall)


def train_site_sae(
    store: CodeStore,
    site: str,
    *,
    steps: int = 300,
    seed: int = 0,
    max_tokens: int | None = MAX_TOKENS,
) -> TopKSAE:
    """A TopK SAE for ``site``: trained on its activations (the rows scored), with as many
    latents as the site has codes and ``groups * k`` active per token."""
    _, acts = activation_sample(store, site, max_tokens, seed)
    return _train(acts, _code_site(store, site), steps, seed)


def _train(acts: np.ndarray, info: Any, steps: int, seed: int) -> TopKSAE:
    latents, k = info.groups * info.num_codes, info.groups * info.k
    return train_sae(acts, SAEConfig(latents=latents, k=k, steps=steps, seed=seed))


def sae_baseline(
    store: CodeStore,
    site: str,
    positive_rows: np.ndarray,
    recall: float,
    sae: TopKSAE,
    *,
    max_tokens: int | None = MAX_TOKENS,
    seed: int = 0,
) -> UnitScore:
    """The best latent of ``sae`` at ``recall`` of the feature ``positive_rows``, on the rows
    with activations at ``site``."""
    rows, acts = activation_sample(store, site, max_tokens, seed)
    values, indices = _encode(sae, acts)
    latents = sae.W_dec.shape[0]
    return _latent_score(values, indices, np.isin(rows, positive_rows), recall, latents)


def compare_baselines(
    store: CodeStore,
    patterns: list[str | re.Pattern[str]],
    site: str,
    *,
    sae: TopKSAE | None = None,
    sae_steps: int = 300,
    max_tokens: int | None = MAX_TOKENS,
    seed: int = 0,
) -> list[BaselineRow]:
    """For each pattern, its best code at ``site`` and the best neuron and SAE latent at that
    code's recall, all on the same rows (see the module); then a row of means (over the
    patterns that have a code). ``sae``: trained here (:func:`train_site_sae`) when not
    given."""
    info = _code_site(store, site)
    rows, acts = activation_sample(store, site, max_tokens, seed)
    if sae is None:
        sae = _train(acts, info, sae_steps, seed)
    values, indices = _encode(sae, acts)
    ids = np.asarray(store.ids(site)[rows]).astype(np.int64)  # (T, G, k)
    flat = ids + (np.arange(info.groups) * info.num_codes)[None, :, None]
    flat[ids < 0] = -1
    table = []
    for pattern in patterns:
        positive = np.isin(rows, regex_token_rows(store, pattern))
        name = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
        row = {"pattern": name, "tokens": len(rows), "positives": int(positive.sum())}
        code = _best_code(flat, positive, info.num_codes, site)
        if code is None:
            table.append(BaselineRow(**row, **_NO_SCORES))
            continue
        ref, precision, recall = code
        neuron = _neuron_score(acts, positive, recall)
        latent = _latent_score(values, indices, positive, recall, sae.W_dec.shape[0])
        table.append(
            BaselineRow(
                **row,
                code=str(ref),
                code_precision=precision,
                code_recall=recall,
                neuron=neuron.unit,
                neuron_sign=neuron.sign,
                neuron_precision=neuron.precision,
                latent=latent.unit,
                sae_precision=latent.precision,
            )
        )
    scored = [r for r in table if r.code is not None]

    def mean(name: str) -> float | None:
        return float(np.mean([getattr(r, name) for r in scored])) if scored else None

    means = {name: mean(name) for name in _NO_SCORES if name.endswith(("precision", "recall"))}
    total = sum(r.positives for r in table)
    table.append(
        BaselineRow(**{**_NO_SCORES, **means}, pattern="mean", tokens=len(rows), positives=total)
    )
    return table


_NO_SCORES: dict[str, Any] = {
    "code": None,
    "code_precision": None,
    "code_recall": None,
    "neuron": None,
    "neuron_sign": 1,
    "neuron_precision": None,
    "latent": None,
    "sae_precision": None,
}


# ---------------------------------------------------------------------- scoring
def _code_site(store: CodeStore, site: str) -> Any:
    if site not in store.sites:
        raise CodebookError(
            f"the codes of {site!r} were not recorded in {store.path}; recorded: "
            f"{', '.join(store.sites)}"
        )
    return store.sites[site]


def _best_code(
    flat: np.ndarray, positive: np.ndarray, num_codes: int, site: str
) -> tuple[CodeRef, float, float] | None:
    """The code with the best F1 on the rows of ``flat`` ``(T, G, k)`` (flat code ids, ``-1``
    none) as a classifier of ``positive``; its precision and recall."""
    count = int(positive.sum())
    if not count:
        return None
    valid = flat[flat >= 0]
    fires = np.bincount(valid, minlength=int(valid.max(initial=0)) + 1)
    inside = flat[positive]
    joint = np.bincount(inside[inside >= 0], minlength=len(fires))
    codes = np.flatnonzero(joint)
    if not len(codes):
        return None
    hits = joint[codes].astype(np.float64)
    precision, recall = hits / fires[codes], hits / count
    best = codes[np.lexsort((codes, -recall, -precision, -f1(precision, recall)))[0]]
    i = int(np.searchsorted(codes, best))
    group, number = divmod(int(best), num_codes)
    return CodeRef(site, group, number), float(precision[i]), float(recall[i])


def _neuron_score(acts: np.ndarray, positive: np.ndarray, recall: float) -> UnitScore:
    """``best_neurons`` over chunks of neurons (all rows each), the best of the chunks."""
    if not positive.any() or recall <= 0:
        return UnitScore(None, 1, None)
    labels = torch.from_numpy(np.where(positive, 0, -1))
    target = torch.tensor([float(recall)])
    width = acts.shape[1]
    step = max(1, CHUNK_VALUES // max(len(acts), 1))
    best, best_precision = UnitScore(None, 1, None), -1.0
    for first in range(0, width, step):
        block = torch.from_numpy(np.asarray(acts[:, first : first + step], np.float32))
        precision, which = best_neurons(block, labels, target)
        if float(precision[0]) > best_precision:
            j, best_precision = int(which[0]), float(precision[0])
            unit, sign = (first + j, 1) if j >= 0 else (first - j - 1, -1)
            best = UnitScore(unit, sign, best_precision)
    return best


def _encode(sae: TopKSAE, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The SAE's kept latents of every row: ``(values, indices)``, each ``(T, k)``."""
    values, indices = [], []
    with torch.no_grad():
        for first in range(0, len(acts), ENCODE_ROWS):
            x = torch.from_numpy(np.asarray(acts[first : first + ENCODE_ROWS], np.float32))
            v, i = sae.encode(x)
            values.append(v.numpy())
            indices.append(i.numpy())
    return np.concatenate(values), np.concatenate(indices).astype(np.int64)


def _latent_score(
    values: np.ndarray, indices: np.ndarray, positive: np.ndarray, recall: float, latents: int
) -> UnitScore:
    """The best latent at ``recall``, from the sparse latents (``(T, k)`` values and indices):
    the same precision as ``best_neurons`` on the dense latents without the flipped copies. A
    latent active (> 0) on fewer than the needed positives has threshold 0: every row reaches
    it and its precision is the feature's base rate."""
    count = int(positive.sum())
    if not count or recall <= 0:
        return UnitScore(None, 1, None)
    need = max(1, min(count, round(recall * count)))  # as best_neurons
    active = values > 0
    latent = indices[active]
    value = values[active]
    hit = np.broadcast_to(positive[:, None], values.shape)[active]
    order = np.argsort(latent, kind="stable")
    latent, value, hit = latent[order], value[order], hit[order]
    units, firsts = np.unique(latent, return_index=True)
    ends = np.append(firsts[1:], len(latent))
    per_unit = np.add.reduceat(hit.astype(np.int64), firsts) if len(firsts) else firsts
    enough = per_unit >= need
    # a latent never active, or active on too few positives, scores the base rate
    scores = {_first_missing(units[enough]): count / len(values)}
    for unit, lo, hi in zip(units[enough], firsts[enough], ends[enough], strict=True):
        v, h = value[lo:hi], hit[lo:hi]
        threshold = -np.partition(-v[h], need - 1)[need - 1]
        reach = v >= threshold
        scores[int(unit)] = float((reach & h).sum() / reach.sum())
    scores = {u: p for u, p in scores.items() if u < latents}
    unit = min(scores, key=lambda u: (-scores[u], u))
    return UnitScore(unit, 1, scores[unit])


def _first_missing(enough: np.ndarray) -> int:
    """The lowest index not in ``enough`` (ascending latent indices)."""
    candidate = 0
    for unit in enough.tolist():
        if unit != candidate:
            break
        candidate += 1
    return candidate

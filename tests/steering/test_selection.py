"""Building concepts from a real recorded store and from texts: the rule holds (scores
recomputed here from the store's arrays), ``documents`` restricts selection to those documents,
the texts builder ranks by its log-odds, and a store of another model is refused."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.attach.code_ref import CodeRef
from codebook_features.steering.selection import (
    SelectionRule,
    concept_from_label,
    concept_from_label_texts,
    concept_from_regex,
    concept_from_texts,
    count_codes,
    document_token_rows,
    split_documents,
)
from codebook_features.store.reader import CodeStore
from tests.model_zoo import neox_model
from tests.steering.recorded import CODEBOOKS, World, world


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> World:
    return world(tmp_path_factory)


@pytest.fixture(scope="module")
def store(recorded: World) -> CodeStore:
    return CodeStore(recorded.store)


@pytest.fixture(scope="module")
def cbm(recorded: World) -> CodebookModel:
    return CodebookModel.from_pretrained(recorded.model).eval()


@pytest.fixture(scope="module")
def tokenizer(recorded: World):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(recorded.model)


def word_rows(store: CodeStore, word: str) -> set[int]:
    """Token rows whose text is ``word``, found from the arrays (not through the regex)."""
    return {row for row in range(store.num_tokens) if store.token_text(row) == word}


def occurrences(store: CodeStore, ref: CodeRef) -> set[int]:
    """Rows where the code fires, from the ids array (not through the index)."""
    ids = np.asarray(store.ids(ref.site))[:, ref.group, :]
    return set(np.flatnonzero((ids == ref.id).any(axis=1)).tolist())


def check_scores(store: CodeStore, concept, positive: set[int], rows: set[int], rule) -> None:
    """Every code's recorded scores equal a recount within ``rows``, and satisfy the rule."""
    assert 0 < len(concept.codes) <= rule.max_codes
    per_group = Counter((ref.site, ref.group) for ref in concept.codes)
    assert max(per_group.values()) <= rule.per_group
    ranks = []  # by the rule's rank: precision, recall or F1
    for ref, score in zip(concept.codes, concept.scores, strict=True):
        fires = occurrences(store, ref) & rows
        hits = len(fires & positive)
        assert score["support"] == len(fires) >= rule.min_support
        assert score["hits"] == hits
        assert score["precision"] == pytest.approx(hits / len(fires), abs=1e-6)
        assert score["precision"] >= rule.min_precision
        assert score["recall"] == pytest.approx(hits / len(positive), abs=1e-6)
        precision, recall = score["precision"], score["recall"]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert score["f1"] == pytest.approx(f1, abs=1e-5)
        ranks.append(score[rule.rank])
    assert ranks == sorted(ranks, reverse=True)


def test_a_regex_concept_has_the_precision_its_rule_demands(store, cbm):
    rule = SelectionRule(min_precision=0.3, min_support=5, per_group=1, max_codes=4)
    concept = concept_from_regex(store, cbm, "dragon", "dragon", rule)
    check_scores(store, concept, word_rows(store, "dragon"), set(range(store.num_tokens)), rule)
    assert concept.selection["method"] == "regex" and concept.selection["rule"] == rule.to_dict()
    assert concept.selection["store"]["documents"] == "all"
    concept.check(cbm)
    two = concept_from_regex(store, cbm, "d2", "dragon", SelectionRule(sites=("mlp",), per_group=2))
    assert {ref.site for ref in two.codes} <= {"layers.0.mlp", "layers.1.mlp"}
    assert max(Counter((r.site, r.group) for r in two.codes).values()) == 2


def test_documents_restrict_selection_to_those_documents(store, cbm):
    chosen, held_out = split_documents(store, 0.5, seed=0)
    assert len(chosen) == 60 and not set(chosen) & set(held_out)
    assert sorted([*chosen, *held_out]) == list(range(store.num_documents))
    again, _ = split_documents(store, 0.5, seed=0)
    other, _ = split_documents(store, 0.5, seed=1)
    assert (again == chosen).all() and not (other == chosen).all()
    rows = set(document_token_rows(store, chosen).tolist())
    assert rows == {r for r in range(store.num_tokens) if int(store.document[r]) in set(chosen)}

    rule = SelectionRule(min_precision=0.2)
    concept = concept_from_regex(store, cbm, "dragon", "dragon", rule, documents=chosen)
    check_scores(store, concept, word_rows(store, "dragon") & rows, rows, rule)
    assert concept.selection["store"]["documents"]["count"] == 60
    with pytest.raises(CodebookError, match="not in the store"):
        concept_from_regex(store, cbm, "x", "dragon", rule, documents=[0, 10_000])


def test_a_label_concept_scores_the_labels_tokens(store, cbm):
    rule = SelectionRule(min_precision=0.5)
    concept = concept_from_label(store, cbm, "topic", "topic", "dragon", rule)
    labelled = {d for d, text in store.texts.items() if "dragon" in text}
    positive = {r for r in range(store.num_tokens) if int(store.document[r]) in labelled}
    check_scores(store, concept, positive, set(range(store.num_tokens)), rule)
    with pytest.raises(CodebookError, match="no document has topic = 'unicorn'"):
        concept_from_label(store, cbm, "x", "topic", "unicorn", rule)


def test_a_label_texts_concept_is_the_texts_builder_on_a_seeded_draw_of_documents(
    store, cbm, tokenizer
):
    rule = SelectionRule(min_support=1)
    concept = concept_from_label_texts(
        store, cbm, tokenizer, "topic", "topic", "dragon", rule, examples=2, seed=3
    )
    chosen = concept.selection["store"]["documents"]
    labels = {d: ("dragon" if "dragon" in t else "other") for d, t in store.texts.items()}
    mine = sorted(d for d in labels if labels[d] == "dragon")
    others = sorted(d for d in labels if labels[d] != "dragon")
    assert chosen["count"] == min(2, len(mine)) + min(4, len(others))
    # the same draw by hand gives the same codes through the texts builder
    import random

    rng = random.Random(3)
    rng.shuffle(mine)
    rng.shuffle(others)
    by_hand = concept_from_texts(
        cbm,
        tokenizer,
        "topic",
        [store.texts[d] for d in mine[:2]],
        [store.texts[d] for d in others[:4]],
        rule,
    )
    assert concept.codes == by_hand.codes
    assert concept.selection["label"] == "dragon" and concept.selection["seed"] == 3
    other_seed = concept_from_label_texts(
        store, cbm, tokenizer, "topic", "topic", "dragon", rule, examples=2, seed=4
    )
    assert other_seed.selection["store"]["documents"] != chosen
    with pytest.raises(CodebookError, match="no document has topic = 'unicorn'"):
        concept_from_label_texts(store, cbm, tokenizer, "x", "topic", "unicorn", rule)


def count(cbm: CodebookModel, tokenizer, texts: list[str]) -> dict[CodeRef, int]:
    """Firings of every code over the texts, one text per forward pass (no padding)."""
    return count_ids(cbm, [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])


def count_ids(cbm: CodebookModel, rows: list[list[int]]) -> dict[CodeRef, int]:
    """Firings of every code over token id sequences, one per forward pass (no padding)."""
    found: Counter[CodeRef] = Counter()
    for row in rows:
        ids = torch.tensor([row])
        with torch.no_grad():
            _, seen = cbm.run_with_codes(input_ids=ids)
        for site in cbm.sites:
            grid = seen.ids[site][0]  # (seq, groups, k)
            for group in range(grid.shape[1]):
                found.update(CodeRef(site, group, int(c)) for c in grid[:, group].flatten())
    return found


def test_the_texts_builder_ranks_codes_that_fire_more_on_the_examples(cbm, tokenizer):
    examples = ["the dragon sees the dragon", "the dragon", "the red dragon guards the castle ."]
    examples = examples * 2
    contrast = ["the cat sees the king", "the old ship by the sea .", "the child hears the river"]
    rule = SelectionRule(min_support=3, max_codes=5, smoothing=0.5)
    concept = concept_from_texts(cbm, tokenizer, "dragon", examples, contrast, rule, batch_size=4)
    a, b = count(cbm, tokenizer, examples), count(cbm, tokenizer, contrast)
    k = CODEBOOKS["k"]
    tokens_a = sum(len(t.split()) for t in examples)
    tokens_b = sum(len(t.split()) for t in contrast)
    odds = []
    for ref, score in zip(concept.codes, concept.scores, strict=True):
        assert (score["examples"], score["contrast"]) == (a[ref], b[ref])
        assert a[ref] >= 3 and a[ref] / tokens_a > b[ref] / tokens_b
        expected = math.log((a[ref] + 0.5) / (k * tokens_a + 0.5 * 16)) - math.log(
            (b[ref] + 0.5) / (k * tokens_b + 0.5 * 16)
        )
        assert score["log_odds"] == pytest.approx(expected, abs=1e-5)
        odds.append(score["log_odds"])
    assert odds == sorted(odds, reverse=True) and len(odds) == 5
    assert concept.selection["example_tokens"] == tokens_a
    best = concept.codes[0]
    assert a[best] > b[best]
    with pytest.raises(CodebookError, match="no tokens"):
        concept_from_texts(cbm, tokenizer, "x", [""], contrast)


def test_a_store_of_another_model_is_refused(store, tokenizer):
    config = CodebookModelConfig(**(CODEBOOKS | {"num_codes": 24}))
    other = CodebookModel(neox_model(0, vocab_size=len(tokenizer)), config).eval()
    with pytest.raises(CodebookError, match="was not recorded from this model") as info:
        concept_from_regex(store, other, "x", "dragon")
    assert "num_codes" in str(info.value) and "record the store again" in str(info.value)


def test_the_rule_is_validated_and_round_trips():
    rule = SelectionRule(sites=["attn_heads"], per_group=2, rank="f1")
    assert rule.sites == ("attn_heads",)
    assert SelectionRule.from_dict(rule.to_dict()) == rule
    for bad, message in [
        ({"per_group": 0}, "per_group"),
        ({"min_precision": 1.5}, "min_precision"),
        ({"rank": "best"}, "rank"),
        ({"smoothing": 0}, "smoothing"),
        ({"sites": []}, "sites: an empty list"),
    ]:
        with pytest.raises(CodebookError, match=message):
            SelectionRule(**bad)
    with pytest.raises(CodebookError, match=r"unknown setting colour; known: sites"):
        SelectionRule.from_dict({"colour": 1})


def test_nothing_passing_the_rule_is_an_error(store, cbm):
    with pytest.raises(CodebookError, match="no code passed the rule"):
        concept_from_regex(store, cbm, "x", "dragon", SelectionRule(min_support=10**6))
    with pytest.raises(CodebookError, match="no token"):
        concept_from_regex(store, cbm, "x", "unicorn")
    with pytest.raises(CodebookError, match="only k=2 slots"):  # the default mode is "all"
        concept_from_regex(store, cbm, "x", "dragon", SelectionRule(sites=("mlp",), per_group=3))


def test_texts_longer_than_the_context_are_counted_over_their_windows(tokenizer):
    short = CodebookModel(
        neox_model(0, vocab_size=len(tokenizer), max_position_embeddings=3),
        CodebookModelConfig(**CODEBOOKS),
    ).eval()
    texts = ["the red dragon guards the castle .", "", "the dragon"]  # 7 tokens, none, 2
    ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    windows = [
        ids[0:3],
        ids[3:6],
        ids[6:7],
        tokenizer(texts[2], add_special_tokens=False)["input_ids"],
    ]
    assert [len(w) for w in windows] == [3, 3, 1, 2]
    expected = count_ids(short, windows)
    for batch_size in (1, 4):
        counts, tokens = count_codes(short, tokenizer, texts, short.sites, batch_size)
        assert tokens == 9
        found = Counter(
            {
                CodeRef(site, group, code): int(n)
                for site, grid in counts.items()
                for (group, code), n in np.ndenumerate(grid)
                if n
            }
        )
        assert found == expected

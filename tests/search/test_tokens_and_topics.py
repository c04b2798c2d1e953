"""Token -> codes and topic codes on a store with planted codes, against slow scans."""

import numpy as np
import pytest

from codebook_features import CodebookError
from codebook_features.attach.code_ref import CodeRef
from codebook_features.search import token_codes, token_rows, topic_codes
from codebook_features.search.topics import document_shares, find_topics
from codebook_features.store.reader import CodeStore
from tests.store.synthetic import DRAGON, SITES, TOPIC, write_store


@pytest.fixture
def store(tmp_path) -> CodeStore:
    return CodeStore(write_store(tmp_path / "store"))


def test_token_codes_find_the_planted_code(store) -> None:
    ranked, count = token_codes(store, "dragon")
    assert ranked[0].code == CodeRef("layers.0.mlp", 0, DRAGON)
    assert (ranked[0].precision, ranked[0].recall) == (1.0, 1.0)
    slow = [r for r in range(store.num_tokens) if store.token_text(r).strip() == "dragon"]
    assert count == len(slow) and np.array_equal(token_rows(store, "dragon"), slow)
    assert len(token_rows(store, "dragon", exact=True)) < count  # the first word has no space
    assert token_codes(store, "unicorn") == ([], 0)
    with pytest.raises(CodebookError, match="not empty"):
        token_rows(store, "  ")


def test_document_shares_match_a_slow_count(store) -> None:
    site = "layers.1.attn_heads"
    groups, _, num_codes = SITES[site]
    codes, docs, shares = document_shares(store, site, 0.3)
    ids = np.asarray(store.ids(site))
    _, firsts = store.document_rows
    expected = set()
    for d in range(len(firsts) - 1):
        part = ids[firsts[d] : firsts[d + 1]]
        for g in range(groups):
            values, counts = np.unique(part[:, g], return_counts=True)
            for v, c in zip(values, counts, strict=True):
                if c / len(part) >= 0.3:
                    expected.add((g * num_codes + int(v), d, round(c / len(part), 9)))
    got = {
        (int(c), int(d), round(float(s), 9)) for c, d, s in zip(codes, docs, shares, strict=True)
    }
    assert got == expected


def test_document_counts_match_a_slow_count(store) -> None:
    for site, (groups, _, num_codes) in SITES.items():
        indptr, documents, counts = store.document_counts(site)
        ids = np.asarray(store.ids(site))
        _, firsts = store.document_rows
        for flat in {*range(12), (groups - 1) * num_codes + TOPIC, groups * num_codes - 1}:
            group, code = divmod(flat, num_codes)
            fires = (ids[:, group] == code).any(-1)
            expected = [
                (d, int(fires[firsts[d] : firsts[d + 1]].sum()))
                for d in range(len(firsts) - 1)
                if fires[firsts[d] : firsts[d + 1]].any()
            ]
            lo, hi = indptr[flat], indptr[flat + 1]
            found = zip(documents[lo:hi].tolist(), counts[lo:hi].tolist(), strict=True)
            assert list(found) == expected


def test_topic_codes_find_the_planted_topic(store) -> None:
    found = topic_codes(store, min_share=0.9)
    topic = CodeRef("layers.1.attn_heads", 1, TOPIC)
    assert found[0].code == topic and found[0].mean_share == 1.0
    labels = store.documents.column("label").to_pylist()
    assert found[0].documents == labels.count("fantasy")
    by_label = topic_codes(store, min_share=0.9, label_field="label", label="fantasy")
    assert by_label[0].code == topic
    assert (by_label[0].label, by_label[0].precision, by_label[0].recall) == ("fantasy", 1.0, 1.0)
    with pytest.raises(CodebookError, match="no column 'topic'"):
        topic_codes(store, label_field="topic")
    with pytest.raises(CodebookError, match="no document has label = 'sci-fi'"):
        topic_codes(store, label_field="label", label="sci-fi")
    with pytest.raises(CodebookError, match="min_share"):
        topic_codes(store, min_share=0)


def slow_topics(store: CodeStore, min_share: float) -> dict[CodeRef, list[int]]:
    """Code -> the documents (ids) it covers, by a scan of every token of every document."""
    doc_ids = np.asarray(store.document)
    covered: dict[CodeRef, list[int]] = {}
    for site, info in store.sites.items():
        ids = np.asarray(store.ids(site))
        for document in np.unique(doc_ids):
            mine = ids[doc_ids == document]
            for group in range(info.groups):
                codes, counts = np.unique(mine[:, group][mine[:, group] >= 0], return_counts=True)
                for code, count in zip(codes, counts, strict=True):
                    if count / len(mine) >= min_share:
                        covered.setdefault(CodeRef(site, group, int(code)), []).append(document)
    return covered


@pytest.mark.parametrize("sort", ["documents", "precision", "lift", "f1"])
def test_topic_rankings_against_a_slow_scan(store, sort) -> None:
    labels = dict(
        zip(
            store.documents.column("document").to_pylist(),
            store.documents.column("label").to_pylist(),
            strict=True,
        )
    )
    label = "fantasy"
    share = sum(v == label for v in labels.values()) / len(labels)
    expected = []
    for code, documents in slow_topics(store, 0.3).items():
        if len(documents) < 2:
            continue
        hits = sum(labels[d] == label for d in documents)
        precision = hits / len(documents)
        recall = hits / sum(v == label for v in labels.values())
        scores = {
            "documents": len(documents),
            "precision": precision,
            "lift": precision / share,
            "f1": 0.0 if not hits else 2 * precision * recall / (precision + recall),
        }
        expected.append((-scores[sort], -len(documents), code, precision, recall))
    found = find_topics(
        store,
        min_share=0.3,
        label_field="label",
        label=label,
        sort=sort,
        everywhere=None,
        top=10**6,
    )
    assert not found.everywhere
    if sort == "documents":  # ties in documents are broken by mean share: compare as sets
        assert {t.code for t in found.codes} == {e[2] for e in expected}
        assert [t.documents for t in found.codes] == sorted(-e[0] for e in expected)[::-1]
    else:
        expected.sort(key=lambda e: (e[0], e[1], e[2].sort_key()))
        assert [t.code for t in found.codes] == [e[2] for e in expected]
        for t, e in zip(found.codes, expected, strict=True):
            assert t.precision == pytest.approx(e[3]) and t.recall == pytest.approx(e[4])
            assert t.lift == pytest.approx(e[3] / share)


def test_codes_covering_nearly_every_document_are_kept_apart(store) -> None:
    topic = CodeRef("layers.1.attn_heads", 1, TOPIC)
    covering = topic_codes(store, min_share=0.9)[0]
    assert covering.code == topic
    # a threshold under the planted code's coverage puts it apart, most documents first
    limit = (covering.documents - 1) / store.num_documents
    found = find_topics(store, min_share=0.9, everywhere=limit, label_field="label")
    assert [t.code for t in found.everywhere] == [topic]
    assert topic not in [t.code for t in found.codes]
    assert found.everywhere[0].label == "fantasy" and found.everywhere[0].precision == 1.0
    # ranked by precision without a label: each code's own label
    ranked = find_topics(store, min_share=0.3, label_field="label", sort="precision").codes
    assert [t.precision for t in ranked] == sorted((t.precision for t in ranked), reverse=True)
    with pytest.raises(CodebookError, match="needs the documents' label column"):
        find_topics(store, sort="lift")
    with pytest.raises(CodebookError, match="everywhere must be"):
        find_topics(store, everywhere=0)


def test_token_and_topic_commands(tmp_path, capsys) -> None:
    import json

    from codebook_features.cli import main

    root = str(write_store(tmp_path / "store"))
    assert main(["search", "token", "--store", root, "--token", "dragon", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["codes"][0]["code"] == f"layers.0.mlp/0/{DRAGON}"
    args = ["search", "topics", "--store", root, "--min_share", "0.9", "--label_field", "label"]
    assert main(args) == 0
    table = capsys.readouterr().out.splitlines()
    assert (
        table[1].startswith(f"layers.1.attn_heads/1/{TOPIC} ")
        and "fantasy (1.00, 1.00, " in table[1]
    )
    assert table[2].startswith("    doc ") and "dragon" in table[2]  # a covered document
    assert main(["search", "topics", "--store", root, "--label", "fantasy"]) == 2
    assert "label needs label_field" in capsys.readouterr().err
    assert main(["search", "topics", "--store", root, "--min_share", "1.5"]) == 2
    assert "min_share: input should be less than or equal to 1" in capsys.readouterr().err
    assert main(["search", "token", "--store", root]) == 2
    assert capsys.readouterr().err == "error: token is required\n"
    assert main(["search", "token", "--store", root, "--token", "  "]) == 2
    assert "token: should hold more than spaces" in capsys.readouterr().err


def test_document_shares_with_tiny_chunks(store, monkeypatch) -> None:
    from codebook_features.search import topics

    whole = document_shares(store, "layers.1.attn_heads", 0.3)
    monkeypatch.setattr(topics, "CHUNK", 5)
    split = document_shares(store, "layers.1.attn_heads", 0.3)
    for a, b in zip(whole, split, strict=True):
        assert np.array_equal(a, b)

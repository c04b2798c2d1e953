"""Token -> codes and topic codes on a store with planted codes, against slow scans."""

import numpy as np
import pytest

from codebook_features import CodebookError
from codebook_features.attach.code_ref import CodeRef
from codebook_features.search import token_codes, token_rows, topic_codes
from codebook_features.search.topics import document_shares
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
        and "fantasy (1.00, 1.00)" in table[1]
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

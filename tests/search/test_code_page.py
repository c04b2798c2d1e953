"""A code's page: store facts against slow scans, similar codes, and the direct logit effect
checked by running the model's own projection."""

import numpy as np
import pytest
import torch

from codebook_features import CodebookModel, CodebookModelConfig
from codebook_features.attach.code_ref import CodeRef
from codebook_features.search.code_page import code_page, residual_direction
from codebook_features.store.reader import CodeStore
from tests.model_zoo import neox_model, tiny_model
from tests.store.synthetic import DRAGON, TOPIC, write_store


@pytest.fixture
def store(tmp_path) -> CodeStore:
    return CodeStore(write_store(tmp_path / "store"))


def synthetic_model() -> CodebookModel:
    """A model with the synthetic store's sites and sizes (its vectors are random)."""
    model = neox_model(num_attention_heads=2, max_position_embeddings=32)
    settings = CodebookModelConfig(
        sites=["mlp", "attn_heads"], num_codes=300, k=1, per_site={"mlp": {"num_codes": 50, "k": 2}}
    )
    return CodebookModel(model, settings)


def test_store_facts_match_slow_scans(store) -> None:
    ref = CodeRef("layers.0.mlp", 0, DRAGON)
    page = code_page(store, ref, top=5, examples=4)
    ids = np.asarray(store.ids("layers.0.mlp"))
    rows = np.flatnonzero((ids[:, 0] == DRAGON).any(-1))
    assert page.frequency == len(rows) and page.share == len(rows) / store.num_tokens
    assert page.description == store.description(ref)
    assert page.description.kind == "token" and page.description.f1 == 1.0  # " dragon" only
    assert page.documents == len(set(np.asarray(store.document)[rows].tolist()))
    assert page.top_tokens[0].text.strip() == "dragon" and page.top_tokens[0].share == 1.0
    assert len({e.document for e in page.examples}) == len(page.examples) == 4
    other = np.asarray(store.ids("layers.1.attn_heads"))[rows]
    best = page.cooccurring[0]
    assert best.code.site == "layers.1.attn_heads"
    assert best.count == int((other[:, best.code.group] == best.code.id).any(-1).sum())
    assert all(c.count <= best.count for c in page.cooccurring)
    assert page.similar is None and page.notes
    data = page.to_dict()
    assert data["code"] == str(ref)
    # every code is named SITE/GROUP/ID, as everywhere else
    assert [CodeRef.parse(c["code"]) for c in data["cooccurring"]] == [
        c.code for c in page.cooccurring
    ]
    assert data["cooccurring"][0] == {
        "code": str(best.code),
        "count": best.count,
        "share": best.share,
    }


def test_similar_codes_and_logit_effect(store) -> None:
    cbm = synthetic_model()
    ref = CodeRef("layers.0.mlp", 0, DRAGON)
    page = code_page(store, ref, cbm, top=3)
    vectors = cbm.codebook(ref.site).vectors[0].detach()
    cosine = torch.nn.functional.cosine_similarity(vectors, vectors[DRAGON][None], dim=-1)
    cosine[DRAGON] = -2
    assert [c.code.id for c in page.similar] == cosine.topk(3).indices.tolist()
    assert page.to_dict()["similar"] == [
        {"code": str(c.code), "cosine": pytest.approx(float(cosine[c.code.id]))}
        for c in page.similar
    ]
    unembed = cbm.model.get_output_embeddings().weight.detach()
    logits = unembed @ (vectors[DRAGON] / 2)  # mean of k = 2 codes
    assert page.logit_effect.up[0][1] == pytest.approx(float(logits.max()), rel=1e-5)
    assert page.logit_effect.down[0][1] == pytest.approx(float(logits.min()), rel=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_attention_head_direction_is_what_the_projection_writes(family: str) -> None:
    model = tiny_model(family)
    cbm = CodebookModel(model, CodebookModelConfig(sites=["attn_heads"], num_codes=16, k=2))
    ref = CodeRef("layers.1.attn_heads", 2, 5)
    direction, _ = residual_direction(cbm, ref)
    codebook = cbm.codebook(ref.site)
    head = torch.zeros(1, codebook.config.dim)
    width = codebook.config.group_dim
    head[0, 2 * width : 3 * width] = codebook.vectors[2, 5].detach() / 2
    projection = cbm.sites[ref.site].module
    with torch.no_grad(), cbm.disabled():  # the projection alone, not its codebook
        written = projection(head) - projection(torch.zeros_like(head))
    torch.testing.assert_close(direction[None], written, atol=1e-5, rtol=1e-5)


def test_code_command(store, capsys) -> None:
    import json

    from codebook_features.cli import main

    code = f"layers.0.mlp/0/{DRAGON}"
    assert main(["search", "code", "--store", str(store.path), "--code", code, "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["code"] == code and page["top_tokens"][0]["share"] == 1.0
    args = ["search", "code", "--store", str(store.path), "--code", code]
    assert main([*args, "--examples", "2", "--offset", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = code_page(store, code, examples=2, offset=3)
    assert [line for line in lines if line.startswith("  doc ")] == [
        f"  doc {e.document}: {e.context}" for e in expected.examples
    ]
    assert lines[1] == (
        f"described as {expected.description.text} (held out: F1 {expected.description.f1:.2f}, "
        f"precision {expected.description.precision:.2f}, recall "
        f"{expected.description.recall:.2f})"
    )
    assert lines[3].startswith("positions: 0 ") and lines[4].startswith("labels: fantasy 100% ")
    assert main(["search", "code", "--store", str(store.path), "--code", "layers.0.mlp/0"]) == 2
    assert "SITE/GROUP/ID" in capsys.readouterr().err


def test_contexts_page_through_every_firing_with_each_firing_marked(store) -> None:
    ref = CodeRef("layers.0.mlp", 0, DRAGON)
    rows = store.occurrences(ref)
    pages = [code_page(store, ref, examples=7, offset=o) for o in range(0, len(rows) + 7, 7)]
    shown = [(e.document, e.position) for p in pages for e in p.examples]
    # every firing exactly once, one per document (in document order) before a second
    assert sorted(shown) == sorted((int(store.document[r]), int(store.position[r])) for r in rows)
    documents = [d for d, _ in shown]
    firsts = documents[: len(set(documents))]
    assert firsts == sorted(set(documents)) and pages[-1].examples == []
    assert [p.offset for p in pages] == list(range(0, len(rows) + 7, 7))
    for example in (e for p in pages for e in p.examples):
        text = example.before + example.token + example.after
        doc_rows = np.flatnonzero(np.asarray(store.document) == example.document)
        row = doc_rows[example.position]
        first = int(store.start[row]) - len(example.before)
        last = first + len(text)
        fires = [r for r in rows if r in doc_rows]
        expected = {
            (max(int(store.start[r]), first) - first, min(int(store.end[r]), last) - first)
            for r in fires
            if int(store.end[r]) > first and int(store.start[r]) < last
        }
        assert set(example.marks) == expected
        centre = (len(example.before), len(example.before) + len(example.token))
        assert centre in example.marks


def test_positions_labels_and_token_shares_against_slow_counts(store) -> None:
    ref = CodeRef("layers.1.attn_heads", 1, TOPIC)
    page = code_page(store, ref)
    rows = store.occurrences(ref)
    positions = np.asarray(store.position)
    for b in page.positions:
        stop = b.stop if b.stop is not None else positions.max() + 1
        inside = (positions >= b.start) & (positions < stop)
        assert b.count == int(inside[rows].sum())
        assert b.base == pytest.approx(inside.mean())
    assert sum(b.count for b in page.positions) == len(rows)
    labels = dict(
        zip(
            store.documents.column("document").to_pylist(),
            store.documents.column("label").to_pylist(),
            strict=True,
        )
    )
    of_row = np.array([labels[int(d)] for d in np.asarray(store.document)])
    assert {x.label for x in page.labels} == {"fantasy"}  # the planted topic code
    (fantasy,) = page.labels
    assert fantasy.count == len(rows) and fantasy.share == 1.0
    assert fantasy.base == pytest.approx((of_row == "fantasy").mean())
    assert fantasy.lift == pytest.approx(1.0 / fantasy.base)
    tokens = np.asarray(store.token)
    expected = {}  # per token id: its text where the code first fires on it, count, share
    for i in np.unique(tokens[rows]):
        mine = rows[tokens[rows] == i]
        text = store.token_text(int(mine[0]))
        expected[text] = (len(mine), len(mine) / int((tokens == i).sum()))
    assert page.top_tokens and all(
        (t.count, t.of_token) == pytest.approx(expected[t.text]) for t in page.top_tokens
    )
    per_document = np.unique(np.asarray(store.document)[rows], return_counts=True)[1]
    assert page.per_document == pytest.approx(per_document.mean())
    assert page.most_in_a_document == per_document.max()

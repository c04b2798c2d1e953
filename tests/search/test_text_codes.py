"""Codes of a text of your own: every token with its exact characters and the ids each site
chose there, the same as a plain forward pass with the codes captured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.cli import main
from codebook_features.search.text_codes import MAX_CHARACTERS, text_codes
from tests.model_zoo import neox_model
from tests.text_fixtures import write_corpus, write_tokenizer

TEXT = "the old king sees the ship, and the red cat."


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text-codes")
    tokenizer = write_tokenizer(root / "tokenizer", write_corpus(root / "corpus.txt", lines=60))
    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = CodebookModelConfig(num_codes=16, k=2, sites=["attn_heads", "mlp"])
    torch.manual_seed(0)
    CodebookModel(neox_model(vocab_size=len(tok)), config).save(root / "model")
    tok.save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def loaded(saved: Path) -> tuple[CodebookModel, Any]:
    return CodebookModel.from_pretrained(saved).eval(), AutoTokenizer.from_pretrained(saved)


def test_every_token_has_its_text_and_the_codes_of_a_plain_forward(loaded) -> None:
    cbm, tok = loaded
    found = text_codes(cbm, tok, TEXT)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad(), cbm.capture() as seen:
        cbm(input_ids=torch.tensor([ids]))
    assert [t.token for t in found] == ids
    assert "".join(t.text for t in found).replace(" ", "") == TEXT.replace(" ", "")
    assert all(TEXT[t.start : t.end] == t.text for t in found)
    for site in cbm.sites:
        assert torch.equal(torch.tensor([t.codes[site] for t in found]), seen[site][0])
    only = text_codes(cbm, tok, TEXT, sites="mlp")
    assert set(only[0].codes) == {s for s in cbm.sites if s.endswith(".mlp")}
    assert only[0].to_dict()["codes"] == {s: found[0].codes[s] for s in only[0].codes}


def test_texts_it_cannot_run_are_refused(loaded) -> None:
    cbm, tok = loaded
    for bad, why in [
        ("   ", "give a text"),
        ("x" * (MAX_CHARACTERS + 1), "at most"),
        (" king" * 200, "reads at most"),
    ]:
        with pytest.raises(CodebookError, match=why):
            text_codes(cbm, tok, bad)
    with pytest.raises(CodebookError, match="no site"):
        text_codes(cbm, tok, TEXT, sites="nothing.here")


def test_the_command_prints_each_token_and_its_codes(saved, loaded, capsys) -> None:
    import json

    cbm, tok = loaded
    assert main(["search", "text", "--model", str(saved), "--text", TEXT, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tokens"] == [t.to_dict() for t in text_codes(cbm, tok, TEXT)]
    args = ["search", "text", "--model", str(saved), "--text", TEXT, "--sites", "layers.0.mlp"]
    assert main(args) == 0
    table = capsys.readouterr().out
    first = text_codes(cbm, tok, TEXT, sites="layers.0.mlp")[0]
    assert repr(first.text) in table and "layers.0.mlp" in table
    assert "/".join(map(str, first.codes["layers.0.mlp"][0])) in table
    assert main(["search", "text", "--model", str(saved), "--text", " "]) == 2
    assert "text: should hold more than spaces" in capsys.readouterr().err


def test_next_tokens_without_and_with_a_code_forced_or_ablated(loaded) -> None:
    from codebook_features.search.text_codes import next_tokens

    cbm, tok = loaded
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    plain, none = next_tokens(cbm, tok, TEXT, top=5)
    assert none is None and len(plain) == 5
    with torch.no_grad():
        probabilities = cbm(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
    values, tokens = probabilities.topk(5)
    assert [t.token for t in plain] == tokens.tolist()
    assert [t.probability for t in plain] == pytest.approx(values.tolist(), abs=1e-6)
    last = len(ids) - 1
    chosen = text_codes(cbm, tok, TEXT)[last].codes["layers.1.mlp"][0]
    other = next(i for i in range(16) if i not in chosen)
    forced_plain, forced = next_tokens(cbm, tok, TEXT, force=[f"layers.1.mlp/0/{other}"], top=5)
    assert forced_plain == plain
    force = cbm.force_codes("layers.1.mlp", {0: other}, positions=(last,), mode="all")
    with torch.no_grad(), force:
        expected = cbm(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1).topk(5)
    assert [t.token for t in forced] == expected.indices.tolist()
    assert [t.probability for t in forced] != [t.probability for t in plain]
    # two codes of one head share its slots, as one spec forcing both would
    pair = [f"layers.1.mlp/0/{other}", f"layers.1.mlp/0/{chosen[0]}"]
    _, both = next_tokens(cbm, tok, TEXT, force=pair, top=5)
    force = cbm.force_codes("layers.1.mlp", {0: [other, chosen[0]]}, positions=(last,), mode="all")
    with torch.no_grad(), force:
        expected = cbm(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1).topk(5)
    assert [t.token for t in both] == expected.indices.tolist()
    assert [t.probability for t in both] == pytest.approx(expected.values.tolist(), abs=1e-6)
    _, ablated = next_tokens(cbm, tok, TEXT, ablate=[f"layers.1.mlp/0/{chosen[0]}"], position=0)
    with torch.no_grad(), cbm.ablate_codes("layers.1.mlp", {0: chosen[0]}, positions=(0,)):
        expected = cbm(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1).topk(10)
    assert [t.token for t in ablated] == expected.indices.tolist()
    for bad, why in [
        ({"force": ["layers.1.mlp/0/999"]}, "999"),
        ({"force": ["nope/0/1"]}, "nope"),
        ({"position": 99}, "not a token"),
    ]:
        with pytest.raises(CodebookError, match=why):
            next_tokens(cbm, tok, TEXT, **bad)

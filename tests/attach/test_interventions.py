"""Intervention specs: frozen values that round-trip through JSON, refuse what does not fit the
model, and act like the front-door context managers; per-row codes equal a loop over rows."""

import dataclasses
import json

import pytest
import torch

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.interventions import (
    Ablate,
    Force,
    force_refs,
    from_json,
    intervention_from_dict,
    to_json,
)
from tests.model_zoo import tiny_model

SPECS = [
    Force("layers.1.attn_heads", {2: 7}, positions="new"),
    Force("layers.0.mlp", [3, 4], mode="all"),
    Force("layers.0.mlp", 3, mode="add", positions=[0, 5]),
    Force("layers.1.attn_heads", [1], groups=[0, 3], mode="least"),
    Force("layers.0.mlp", rows=[{0: [3]}, {}, {0: [5, 6]}], mode="all", positions=[2]),
    Ablate("layers.0.mlp", {0: [1, 2]}, mode="next_best"),
    Ablate("layers.1.attn_heads", 9, positions="new"),
]


def neox() -> CodebookModel:
    config = CodebookModelConfig(num_codes=16, k=2, sites=["attn_heads", "mlp"])
    return CodebookModel(tiny_model("gpt_neox"), config)


def tokens(rows: int = 3, length: int = 6) -> torch.Tensor:
    return torch.randint(2, 61, (rows, length), generator=torch.Generator().manual_seed(rows))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.to_json())
def test_json_round_trip(spec: Force | Ablate) -> None:
    again = from_json(spec.to_json())
    assert again == [spec]
    assert hash(again[0]) == hash(spec)
    assert json.loads(to_json(again[0])) == spec.to_dict()


def test_list_round_trip_and_checked_against_the_model() -> None:
    cbm = neox()
    text = to_json(SPECS, indent=2)
    assert from_json(text, cbm) == SPECS
    assert isinstance(json.loads(text), list)


def test_specs_are_frozen_and_normalised() -> None:
    spec = Force("layers.0.mlp", {"1": 4, 0: [2, 2]})
    assert spec.codes == ((0, (2,)), (1, (4,)))
    assert Force("layers.0.mlp", 4) == Force("layers.0.mlp", [4]) == Force("layers.0.mlp", {"*": 4})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.mode = "all"  # type: ignore[misc]
    assert dataclasses.replace(spec, mode="all").codes == spec.codes


def test_plain_json_codes_mean_every_group() -> None:
    spec = intervention_from_dict({"kind": "ablate", "site": "layers.0.mlp", "codes": [1, 2]})
    assert spec == Ablate("layers.0.mlp", [1, 2])


BAD_JSON = [
    ('{"kind": "steer", "site": "layers.0.mlp", "codes": [1]}', "needs a kind"),
    ('{"site": "layers.0.mlp", "codes": [1]}', "needs a kind"),
    ('{"kind": "force", "site": "layers.0.mlp", "codes": [1], "strength": 2}', "unknown key"),
    ('{"kind": "force", "site": "layers.0.mlp", "codes": "12"}', "a string is not a list"),
    ('{"kind": "force", "site": "layers.0.mlp", "codes": [1.5]}', "must be an integer"),
    ('{"kind": "force", "site": "layers.0.mlp", "codes": [true]}', "must be an integer"),
    ('{"kind": "force", "site": "layers.0.mlp", "codes": {"x": [1]}}', "group"),
    ('{"kind": "force", "site": "layers.0.mlp", "codes": []}', "no codes"),
    ('{"kind": "force", "site": "layers.0.mlp", "codes": [1], "mode": "max"}', "force mode"),
    ('{"kind": "ablate", "site": "layers.0.mlp", "codes": [1], "positions": [-1]}', "positions"),
    ('{"kind": "force", "site": "layers.0.mlp", "codes": [1], "rows": [{"0": [1]}]}', "not both"),
    ('{"kind": "force", "site": "layers.0.mlp", "rows": []}', "rows is empty"),
    ('{"kind": "force", "site": 3, "codes": [1]}', "site must be"),
    ("[1, 2", "not valid JSON"),
    ("7", "must be a JSON object"),
]


@pytest.mark.parametrize(("text", "message"), BAD_JSON)
def test_malformed_specs_are_refused(text: str, message: str) -> None:
    with pytest.raises(CodebookError, match=message):
        from_json(text)


MISFITS = [
    (Force("layers.7.mlp", 1), "no codebook at site 'layers.7.mlp'"),
    (Force("layers.0.attn_heads", {4: 1}), r"group \(head\) 4 is out of range"),
    (Ablate("layers.0.mlp", 16), "code 16 is out of range"),
    (Force("layers.0.mlp", rows=[{0: [1]}, {0: [99]}]), "code 99 is out of range"),
    (Force("layers.0.mlp", [1, 2, 3]), "only k=2 slots"),
    (Force("layers.0.mlp", rows=[{0: [1, 2, 3]}], mode="all"), "only k=2 slots"),
    (Ablate("layers.0.mlp", list(range(15)), mode="next_best"), "fewer than k codes"),
]


@pytest.mark.parametrize(("spec", "message"), MISFITS)
def test_specs_that_do_not_fit_the_model_are_refused(spec: Force | Ablate, message: str) -> None:
    cbm = neox()
    with pytest.raises(CodebookError, match=message):
        from_json(spec.to_json(), cbm)
    with pytest.raises(CodebookError, match=message):
        cbm.intervene([SPECS[0], spec])


def test_a_bad_spec_in_a_list_changes_nothing() -> None:
    cbm = neox()
    with pytest.raises(CodebookError):
        cbm.intervene([Force("layers.0.mlp", 3), Ablate("layers.0.mlp", 99)])
    assert not cbm.codebook("layers.0.mlp").hook_codes._forward_hooks


def test_a_list_acts_like_the_front_doors_nested() -> None:
    cbm = neox()
    specs = [
        Force("layers.1.attn_heads", {2: 7}, positions="new"),
        Ablate("layers.0.mlp", 4, mode="next_best"),
        Ablate("layers.1.mlp", 5),
    ]
    prompt = tokens(2, 5)
    with torch.no_grad():
        with cbm.intervene(specs):
            together = cbm.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=1)
        with (
            cbm.force_codes("layers.1.attn_heads", {2: 7}, positions="new"),
            cbm.ablate_codes("layers.0.mlp", 4, mode="next_best"),
            cbm.ablate_codes("layers.1.mlp", 5),
        ):
            nested = cbm.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=1)
        plain = cbm.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=1)
    assert torch.equal(together, nested)
    assert not torch.equal(together, plain)


@pytest.mark.parametrize("mode", ["least", "all", "add"])
@pytest.mark.parametrize("site", ["layers.0.mlp", "layers.1.attn_heads"])
def test_per_row_codes_equal_a_loop_over_rows(mode: str, site: str) -> None:
    cbm = neox()
    rows = [{0: [3]}, {}, {1: [5, 6]} if "attn" in site else {0: [5, 6]}]
    batch = tokens(3)
    with torch.no_grad():
        with cbm.intervene(Force(site, rows=rows, mode=mode, positions=[2, 4])):
            together = cbm(batch).logits
        alone = []
        for row, codes in zip(batch, rows, strict=True):
            spec = [Force(site, codes, mode=mode, positions=[2, 4])] if codes else []
            with cbm.intervene(spec):
                alone.append(cbm(row[None]).logits)
        # each spec row given to two consecutive batch rows, as repeat_interleave does
        with cbm.intervene(Force(site, rows=rows, mode=mode, positions=[2, 4])):
            repeated = cbm(batch.repeat_interleave(2, dim=0)).logits
        plain = cbm(batch).logits
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(repeated, together.repeat_interleave(2, dim=0), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], plain[0])
    torch.testing.assert_close(together[1], plain[1], atol=1e-5, rtol=1e-5)  # row without codes


def test_per_row_codes_refuse_a_batch_of_other_rows() -> None:
    cbm = neox()
    with (
        torch.no_grad(),
        cbm.intervene(Force("layers.0.mlp", rows=[{0: [1]}, {0: [2]}, {0: [3]}])),
        pytest.raises(CodebookError, match="codes for 3 rows, but the batch has 4 rows"),
    ):
        cbm(tokens(4))


def test_forcing_code_refs() -> None:
    refs = ["layers.0.mlp/0/3", CodeRef("layers.1.attn_heads", 2, 7), "layers.0.mlp/0/5"]
    specs = force_refs(refs, mode="all", positions="new")
    assert specs == [
        Force("layers.0.mlp", {0: [3, 5]}, mode="all", positions="new"),
        Force("layers.1.attn_heads", {2: [7]}, mode="all", positions="new"),
    ]
    assert [str(r) for s in specs for r in s.refs()] == [
        "layers.0.mlp/0/3",
        "layers.0.mlp/0/5",
        "layers.1.attn_heads/2/7",
    ]
    cbm = neox()
    everywhere = force_refs(refs, mode="all")
    with torch.no_grad(), cbm.intervene(everywhere), cbm.capture("layers.0.mlp") as got:
        cbm(tokens())
    assert set(got["layers.0.mlp"].unique().tolist()) == {3, 5}

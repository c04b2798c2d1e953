"""Every supported family, on a tiny random model: attach, read, steer, save, generate."""

import copy

import pytest
import torch

from codebook_features import CodebookModel, CodebookModelConfig
from codebook_features.attach.site_names import SITE_KINDS
from tests.model_zoo import (
    FAMILIES,
    LAYERS,
    NO_CACHE,
    NO_VALUE_CHECK,
    VALUE_MODULE,
    tiny_model,
    value_heads,
)

ALL_SITES = list(SITE_KINDS)


def attach(model: torch.nn.Module, **overrides: object) -> CodebookModel:
    settings: dict = {"num_codes": 16, "k": 2, "sites": ALL_SITES} | overrides
    return CodebookModel(model, CodebookModelConfig(**settings))


def tokens(batch: int = 2, length: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, 61, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_disabled_codebooks_give_the_plain_model(family: str) -> None:
    plain = tiny_model(family)
    cbm = attach(copy.deepcopy(plain))
    ids = tokens()
    with torch.no_grad():
        expected = plain(ids).logits
        assert not torch.equal(cbm(ids).logits, expected)  # codebooks on: something changes
        with cbm.disabled():
            assert torch.equal(cbm(ids).logits, expected)
        cbm.disable()
        assert torch.equal(cbm(ids).logits, expected)
    assert len(cbm.sites) == 2 * len(ALL_SITES)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in NO_VALUE_CHECK])
def test_attn_heads_site_sees_each_heads_output(family: str) -> None:
    model = tiny_model(family, attn="eager")
    cbm = attach(model, sites=["attn_heads"])
    blocks = cbm.model.get_submodule(LAYERS.get(family, "model.layers"))
    values, seen = {}, {}
    handles = []
    for layer, block in enumerate(blocks):
        module = block.get_submodule(VALUE_MODULE.get(family, "self_attn.v_proj"))
        handles.append(
            module.register_forward_hook(lambda m, a, out, i=layer: values.__setitem__(i, out))
        )
        handles.append(
            cbm.codebook(f"layers.{layer}.attn_heads").register_forward_pre_hook(
                lambda m, args, i=layer: seen.__setitem__(i, args[0])
            )
        )
    heads = model.config.num_attention_heads
    kv_heads = getattr(model.config, "num_key_value_heads", None) or heads
    with torch.no_grad():
        out = cbm(tokens(), output_attentions=True)
    for layer in range(2):
        v = value_heads(family, values[layer], heads, kv_heads)  # (B, T, H, dh)
        probs = out.attentions[layer]  # (B, H, T, T)
        manual = torch.einsum("bhts,bshd->bthd", probs, v).reshape(*v.shape[:2], -1)
        torch.testing.assert_close(seen[layer], manual, rtol=1e-5, atol=1e-6)
        assert cbm.codebook(f"layers.{layer}.attn_heads").config.groups == heads
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_save_then_load_gives_identical_logits(family: str, tmp_path) -> None:
    cbm = attach(tiny_model(family), layers=[-1])
    with torch.no_grad():
        for param in cbm.codebooks.parameters():
            param.add_(torch.randn_like(param) * 0.1)  # not the initial values
        expected = cbm(tokens()).logits
    cbm.save(tmp_path / "saved")
    loaded = CodebookModel.from_pretrained(tmp_path / "saved").eval()
    assert list(loaded.sites) == list(cbm.sites)
    with torch.no_grad():
        assert torch.equal(loaded(tokens()).logits, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_ids_are_the_layers_own_choice(family: str) -> None:
    cbm = attach(tiny_model(family))
    site = "layers.1.mlp"
    inputs = []
    cbm.codebook(site).register_forward_pre_hook(lambda m, args: inputs.append(args[0]) and None)
    with torch.no_grad():
        with cbm.capture() as captured:
            cbm(tokens())
        own = cbm.codebook(site)(inputs[0]).ids
    assert captured[site].shape == (2, 7, 1, 2)
    assert torch.equal(captured[site], own)
    assert set(captured.keys()) == set(cbm.sites)


@pytest.mark.parametrize("family", FAMILIES)
def test_forced_code_appears_and_changes_the_logits(family: str) -> None:
    cbm = attach(tiny_model(family))
    site = "layers.0.attn_heads"
    with torch.no_grad():
        with cbm.capture([site]) as before:
            plain = cbm(tokens()).logits
        code = 5 if (before[site][:, :, 1] != 5).all() else 6  # a code head 1 did not pick
        with cbm.force_codes(site, code, groups=[1], mode="all"), cbm.capture([site]) as after:
            forced = cbm(tokens()).logits
    assert (after[site][:, :, 1] == code).all()
    assert torch.equal(after[site][:, :, 0], before[site][:, :, 0])  # other heads untouched
    assert not torch.allclose(forced, plain)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["remove", "next_best"])
def test_ablated_code_never_appears(family: str, mode: str) -> None:
    cbm = attach(tiny_model(family))
    site = "layers.1.attn"
    with torch.no_grad():
        with cbm.capture([site]) as before:
            cbm(tokens())
        victim = int(before[site].flatten().mode().values)  # the most used code
        with cbm.ablate_codes(site, victim, mode=mode), cbm.capture([site]) as after:
            cbm(tokens())
    assert (before[site] == victim).any() and not (after[site] == victim).any()
    if mode == "next_best":
        assert (after[site] >= 0).all()  # every slot refilled
    else:
        assert ((after[site] == -1) == (before[site] == victim)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_generation_equals_recomputing_under_an_intervention(family: str) -> None:
    cbm = attach(tiny_model(family).double())
    prompt = tokens(batch=2, length=5)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 1}
    runs = {}
    for use_cache in (True, False):
        with (
            torch.no_grad(),
            cbm.force_codes("layers.0.attn_heads", {0: 3, 2: [4, 5]}, positions="new"),
            cbm.ablate_codes("layers.1.mlp", [0, 1, 2], mode="next_best", positions=[2, 6, 8]),
            cbm.capture(["layers.0.attn_heads"]) as captured,
        ):
            runs[use_cache] = cbm.generate(prompt, use_cache=use_cache, **settings)
        ids = captured["layers.0.attn_heads"]
        if use_cache and family not in NO_CACHE:  # prompt in one call, then one token per step
            assert ids.shape[1] == 5 + 5
            assert (ids[:, 5:, 0, -1] == 3).all() and not (ids[:, :5, 0, -1] == 3).all()
    assert torch.equal(runs[True], runs[False])
    with torch.no_grad():
        plain = cbm.generate(prompt, **settings)
    assert plain.shape == runs[True].shape

"""A site is what its kind means, or it is refused with the family, the site and the reason."""

from __future__ import annotations

import pytest
import torch

from codebook_features import CodebookModel, CodebookModelConfig
from codebook_features.attach.families import FAMILIES, Family
from codebook_features.errors import CodebookError
from tests.family_zoo import tiny
from tests.model_zoo import tiny_model


def attach(model: torch.nn.Module, sites: list[str], **extra: object) -> CodebookModel:
    return CodebookModel(model, CodebookModelConfig(num_codes=8, k=1, sites=sites, **extra))


def outputs_of(module: torch.nn.Module, store: list) -> torch.utils.hooks.RemovableHandle:
    def keep(m, args, out):
        store.append(out[0] if isinstance(out, (tuple, list)) else out)

    return module.register_forward_hook(keep)


@pytest.mark.parametrize(
    ("family", "attention", "mlp"),
    [("bloom", "self_attention", "mlp"), ("mpt", "attn", "ffn")],
)
def test_mlp_site_leaves_out_the_residual_that_the_module_adds(family, attention, mlp) -> None:
    """Bloom's attention and MLP (and MPT's MLP) add the residual inside: the sites carry the
    projection's output, so site + residual = the module's output, and the site is not the
    block's output."""
    cbm = attach(tiny_model(family), ["attn", "mlp"])
    block = cbm.model.get_submodule(
        {"bloom": "transformer.h", "mpt": "transformer.blocks"}[family]
    )[0]
    module_out, block_out = [], []
    handles = [outputs_of(block.get_submodule(mlp), module_out), outputs_of(block, block_out)]
    ids = torch.randint(2, 61, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), cbm.disabled(), cbm.observe(ids=False, inputs=True) as seen:
        cbm(ids)
    for handle in handles:
        handle.remove()
    site = seen.calls("inputs", "layers.0.mlp")[0]
    assert not torch.allclose(site, block_out[0], atol=1e-5)
    if family == "bloom":  # BloomMLP returns the block's output: projection + residual
        torch.testing.assert_close(module_out[0], block_out[0])
    assert cbm.codebook("layers.0.attn").config.dim == site.shape[-1]


def test_a_module_that_adds_the_residual_is_refused(monkeypatch) -> None:
    """Hooking BloomMLP itself (what name-based placement would do) is refused, not accepted."""
    naive = Family(
        "transformer.h", "self_attention", "self_attention.dense", "mlp", "mlp.dense_4h_to_h"
    )
    monkeypatch.setitem(FAMILIES, "bloom", naive)
    model = tiny_model("bloom")
    with pytest.raises(CodebookError, match=r"'bloom': site layers\.0\.mlp .*residual"):
        attach(model, ["mlp"])
    with pytest.raises(CodebookError, match=r"'bloom': site layers\.0\.attn .*residual"):
        attach(model, ["attn"])
    attach(model, ["attn_heads", "mlp_hidden", "block"])  # the other sites stay available


def test_an_mlp_that_changes_its_projection_is_refused() -> None:
    model = tiny_model("llama")
    mlp = model.model.layers[1].mlp
    plain = mlp.forward
    mlp.forward = lambda x: plain(x) + x  # adds its (normalised) input after projecting
    with pytest.raises(CodebookError, match=r"site layers\.1\.mlp .*after projecting"):
        attach(model, ["mlp"])
    attach(model, ["mlp"], layers=[0])


def test_a_model_in_training_mode_attaches() -> None:
    """Dropout (GPT-2 drops 10% after its projections) is off during the attach pass only."""
    model = tiny_model("gpt2").train()
    cbm = attach(model, ["attn", "mlp", "attn_heads", "mlp_hidden", "block"])
    assert len(cbm.sites) == 10
    assert all(module.training for module in model.modules())


def test_list_outputs_are_quantised() -> None:
    """openai-gpt's attention and blocks return lists."""
    model = tiny_model("openai-gpt")
    cbm = attach(model, ["attn", "block"])
    ids = torch.randint(2, 61, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        on = cbm(ids).logits
        with cbm.disabled():
            off = cbm(ids).logits
    assert not torch.equal(on, off)


def test_a_family_without_an_mlp_keeps_its_other_sites() -> None:
    model = tiny_model("helium")  # found by discovery
    for block in model.model.layers:
        block.feed_forward = torch.nn.Identity()  # a second MLP-like name: ambiguous
    with pytest.raises(CodebookError, match=r"'helium': site layers\.0\.mlp .*ambiguous"):
        attach(model, ["mlp"])
    assert len(attach(model, ["attn_heads", "attn", "block"]).sites) == 6


def test_an_attention_whose_projection_is_unknown_is_refused() -> None:
    with pytest.raises(CodebookError, match=r"'rwkv': site layers\.0\.attn .*cannot be checked"):
        attach(tiny("rwkv"), ["attn"])


def test_bert_layout_sites_are_the_dense_projections() -> None:
    """BERT's attention module adds the residual and normalises after its projection: the attn
    site is the projection's output, not the module's."""
    model = tiny("bert")
    cbm = attach(model, ["attn", "mlp"])
    layer = cbm.model.bert.encoder.layer[0]
    attention_out = []
    handle = outputs_of(layer.attention, attention_out)
    ids = torch.randint(2, 61, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), cbm.disabled(), cbm.observe(ids=False, inputs=True) as seen:
        cbm(ids)
    handle.remove()
    site = seen.calls("inputs", "layers.0.attn")[0]
    dense = layer.attention.output.dense
    assert cbm.sites["layers.0.attn"].module is dense
    assert not torch.allclose(site, attention_out[0], atol=1e-4)


def test_layers_are_planned_one_by_one() -> None:
    """glm4_moe: a dense first layer, then mixture-of-experts layers."""
    model = tiny("glm4_moe")
    assert list(attach(model, ["mlp_hidden"], layers=[0]).sites) == ["layers.0.mlp_hidden"]
    with pytest.raises(CodebookError, match=r"site layers\.1\.mlp_hidden .*mixture-of-experts"):
        attach(model, ["mlp_hidden"])
    assert len(attach(model, ["mlp", "attn_heads"]).sites) == 4


def test_a_looped_model_is_refused() -> None:
    """dory runs its recurrent layers several times per token."""
    with pytest.raises(CodebookError, match=r"model family 'dory'.*recurrent-depth"):
        attach(tiny("dory"), ["block"])


def test_a_recurrent_state_cache_keeps_positions() -> None:
    """Mamba's cache has no length; positions are counted, so forcing codes at new positions
    only gives the same tokens with and without the cache."""
    cbm = attach(tiny("mamba"), ["block"])
    prompt = torch.randint(2, 61, (1, 4), generator=torch.Generator().manual_seed(0))
    runs = []
    for use_cache in (True, False):
        with torch.no_grad(), cbm.force_codes("layers.0.block", 3, positions="new"):
            runs.append(
                cbm.generate(prompt, use_cache=use_cache, max_new_tokens=4, do_sample=False)
            )
    assert torch.equal(runs[0], runs[1])


def _wrap_block(block: torch.nn.Module, change) -> None:
    plain = block.forward

    def forward(*args, **kwargs):
        out = plain(*args, **kwargs)
        if isinstance(out, tuple):
            return (change(out[0]), *out[1:])
        return change(out)

    block.forward = forward


def test_a_block_whose_output_is_wider_is_refused() -> None:
    model = tiny_model("llama")
    _wrap_block(model.model.layers[1], lambda h: torch.cat([h, h], dim=-1))
    model.model.norm = torch.nn.Identity()
    model.lm_head = torch.nn.Linear(64, 61, bias=False)
    with pytest.raises(CodebookError, match=r"site layers\.1\.block .*gives 64 features"):
        attach(model, ["block"])
    attach(model, ["block"], layers=[0])


def test_a_block_whose_output_is_not_per_token_is_refused() -> None:
    model = tiny_model("llama")
    _wrap_block(model.model.layers[1], lambda h: torch.stack([h, h], dim=2))
    with pytest.raises(CodebookError, match=r"site layers\.1\.block .*shape \(2, 3, 2, 32\)"):
        attach(model, ["block"])


def test_zero_attention_and_mlp_outputs_are_accepted() -> None:
    """Zero-initialised output projections give all-zero attn and mlp outputs."""
    model = tiny_model("llama")
    layer = model.model.layers[0]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    assert len(attach(model, ["attn", "mlp"], layers=[0]).sites) == 2


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_multimodal_gemma_gets_its_language_model_sites(family: str) -> None:
    """Gemma 3 from 4B up and Gemma 4 are multimodal models: their layer and head counts are
    in the text config, their layers under model.language_model."""
    model = tiny(family)
    assert type(model).__name__.endswith("ForConditionalGeneration")
    assert getattr(model.config, "num_hidden_layers", None) is None
    cbm = attach(model, ["attn_heads", "attn", "mlp", "mlp_hidden", "block"])
    assert len(cbm.sites) == 10
    assert cbm.codebook("layers.0.attn_heads").config.groups == 4
    assert cbm.sites["layers.1.mlp"].module is model.model.language_model.layers[1].mlp

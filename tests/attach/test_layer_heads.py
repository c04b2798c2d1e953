"""An attn_heads codebook has one group per head of its own layer: the heads are read from the
attention module, not from a config count that may be another layer's or another stack's."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.attach.families import layer_heads
from tests.family_zoo import MODEL_TYPES, _config
from tests.model_zoo import neox_model


def groups(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    cbm = CodebookModel(model, CodebookModelConfig(sites=["attn_heads"], num_codes=4, k=1))
    return {
        name: (cbm.codebook(name).config.groups, cbm.codebook(name).config.group_dim)
        for name in cbm.sites
    }


def build(model_type: str, **settings: object) -> torch.nn.Module:
    if model_type not in MODEL_TYPES:
        pytest.skip(f"this transformers has no {model_type}")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(_config(model_type, **settings)).eval()


def test_a_decoder_of_an_encoder_decoder_family_has_its_own_heads() -> None:
    # BartForCausalLM: the config's num_attention_heads is the encoder's (2), the decoder has 4
    model = build(
        "bart", num_attention_heads=2, encoder_attention_heads=2, decoder_attention_heads=4
    )
    assert model.config.num_attention_heads == 2
    assert set(groups(model).values()) == {(4, 8)}


def test_sliding_window_layers_of_their_own_size() -> None:
    model = build(
        "inkling_text",
        num_attention_heads=4,
        head_dim=8,
        swa_num_attention_heads=8,
        swa_head_dim=16,
        swa_num_key_value_heads=2,
        layer_types=["hybrid_sliding", "hybrid"],
    )
    found = groups(model)
    for i, kind in enumerate(model.config.layer_types[: model.config.num_hidden_layers]):
        expected = (8, 16) if kind == "hybrid_sliding" else (4, 8)
        assert found[f"layers.{i}.attn_heads"] == expected, (i, kind)
    assert {g for g, _ in found.values()} == {4, 8}  # both kinds of layer are there


def test_the_config_count_when_the_module_says_nothing() -> None:
    model = neox_model()
    block = model.gpt_neox.layers[0]
    attention, projection = block.attention, block.attention.dense
    width = projection.in_features
    assert layer_heads(model, block, projection, width) == model.config.num_attention_heads
    del attention.head_size  # a module that does not say its heads: the config's count
    assert layer_heads(model, block, projection, width) == model.config.num_attention_heads
    model.config.num_attention_heads = 5  # that does not divide the width: refused
    with pytest.raises(CodebookError, match="does not split into the config's 5 heads"):
        layer_heads(model, block, projection, width)


def silent_decoder_layer(
    encoder_heads: int, decoder_heads: int
) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """A BartForCausalLM whose first decoder attention does not say its heads: the model,
    that layer and its output projection."""
    model = build(
        "bart",
        num_attention_heads=encoder_heads,
        encoder_attention_heads=encoder_heads,
        decoder_attention_heads=decoder_heads,
    )
    block = model.model.decoder.layers[0]
    for name in ("num_heads", "head_dim"):
        if hasattr(block.self_attn, name):
            delattr(block.self_attn, name)
    return model, block, block.self_attn.out_proj


def test_config_counts_that_disagree_are_refused_when_the_module_says_nothing() -> None:
    model, block, projection = silent_decoder_layer(encoder_heads=2, decoder_heads=4)
    with pytest.raises(
        CodebookError, match=r"names several head counts .*decoder_attention_heads=4"
    ):
        layer_heads(model, block, projection, projection.in_features)


def test_config_counts_that_agree_are_used_when_the_module_says_nothing() -> None:
    model, block, projection = silent_decoder_layer(encoder_heads=4, decoder_heads=4)
    assert layer_heads(model, block, projection, projection.in_features) == 4

"""A tiny random model of any causal-LM type of the installed transformers, from its config.

One generic setting shrinks every config (2 layers, width 32, 4 heads, 4 experts); a type whose
model then fails to build or to run a forward pass, or stays large, is left out with the
reason. Nothing is downloaded.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "vocab_size": 61,
    "max_position_embeddings": 64,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "d_model": 32,
    "n_positions": 64,
    "num_layers": 2,
    "num_heads": 4,
    "ffn_dim": 64,
    "rotary_dim": 4,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "n_group": 1,
    "topk_group": 1,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 8,
    "v_head_dim": 8,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}
"""Generic small settings, applied to every config key that exists."""
MAX_PARAMS = 3_000_000
MODEL_TYPES = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
"""Every causal-LM model type of the installed transformers."""


_GEMMA_TEXT = {k: TINY[k] for k in ("hidden_size", "intermediate_size", "vocab_size")} | {
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 64,
}
_PER_LAYER_INPUT = {"vocab_size_per_layer_input": 61, "hidden_size_per_layer_input": 8}
EXTRA: dict[str, dict[str, object]] = {
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},
    # hybrids: with two layers, one of each kind (their defaults would give no attention layer)
    "jamba": {
        "attn_layer_offset": 1,
        "attn_layer_period": 2,
        "expert_layer_offset": 1,
        "expert_layer_period": 2,
    },
    **{
        name: {"layer_types": ["linear_attention", "full_attention"]}
        for name in ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text", "qwen4_exp_text")
    },
    "lfm3": {"layer_types": ["conv", "full_attention"]},
    # per-layer input embeddings: their default sizes make a tiny model large
    "gemma4_text": _PER_LAYER_INPUT,
    "gemma4": {"text_config": _GEMMA_TEXT | _PER_LAYER_INPUT},
    # multimodal: the generic settings go to the text model; a one-layer vision tower
    "gemma3": {
        "text_config": _GEMMA_TEXT,
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
        | {"num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        "mm_tokens_per_image": 4,
        "image_token_index": 60,
        "boi_token_index": 58,
        "eoi_token_index": 59,
    },
    # its default Mamba sizes make a tiny model take half a minute on a CPU
    "falcon_h1": {"mamba_d_ssm": 32, "mamba_n_heads": 4, "mamba_d_state": 8, "mamba_chunk_size": 8},
}
"""Settings some types need beyond :data:`TINY` to build at all."""


def _config(model_type: str, **extra: object) -> transformers.PretrainedConfig:
    """The type's config built with the small settings it has (passed to the constructor,
    so that what a config derives from them, such as per-layer types, follows)."""
    default = AutoConfig.for_model(model_type)
    wanted = TINY | EXTRA.get(model_type, {}) | extra
    return AutoConfig.for_model(
        model_type,
        **{
            k: v
            for k, v in wanted.items()
            if _has(default, k) and not isinstance(getattr(type(default), k, None), property)
        },
    )


def _has(config: transformers.PretrainedConfig, key: str) -> bool:
    """Whether the config has ``key``; a per-layer setting (Gemma 4's head_dim) refuses to be
    read globally, but is there to be set."""
    try:
        return hasattr(config, key)
    except RuntimeError:
        return True


def build_tiny(model_type: str, seed: int = 0) -> tuple[torch.nn.Module | None, str]:
    """A tiny random model of ``model_type`` in eval mode, or ``None`` and why it was not built
    (a type whose model needs more than generic settings)."""
    reason = ""
    for extra in ({}, {"num_key_value_heads": 4}):  # some attentions need kv heads == heads
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                config = _config(model_type, **extra)
                with torch.device("meta"):
                    size = sum(
                        p.numel() for p in AutoModelForCausalLM.from_config(config).parameters()
                    )
                if size > MAX_PARAMS:
                    return None, f"{size / 1e6:.0f}M parameters with generic small settings"
                torch.manual_seed(seed)
                model = AutoModelForCausalLM.from_config(config).eval()
                ids = torch.zeros(2, 4, dtype=torch.long)
                with torch.no_grad():
                    model(input_ids=ids, use_cache=False)
                    model(input_ids=ids)
                    model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=1)
                return model, ""
            except Exception as error:
                reason = (
                    f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
                    if str(error)
                    else type(error).__name__
                )
    return None, reason


def tiny(model_type: str) -> torch.nn.Module:
    """:func:`build_tiny` for a test: skipped when this transformers lacks the type."""
    if model_type not in MODEL_TYPES:
        pytest.skip(f"this transformers has no {model_type}")
    model, why = build_tiny(model_type)
    assert model is not None, why
    return model

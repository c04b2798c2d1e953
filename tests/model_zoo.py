"""Tiny random causal LMs of every supported family, built offline from configs."""

from __future__ import annotations

import torch
import transformers
from transformers import AutoModelForCausalLM

VOCAB = 61
TINY_NEOX = {
    "model_type": "gpt_neox",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
"""A tiny GPT-NeoX for runs built from a config (``model.init``), vocabulary from the data."""
COMMON = {"vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}


def _llama_like(config_class: type, **extra: object) -> transformers.PretrainedConfig:
    return config_class(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **extra,
    )


CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64),
    "gpt_neox": lambda: transformers.AutoConfig.for_model(**TINY_NEOX),
    "gpt_neo": lambda: transformers.GPTNeoConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        max_position_embeddings=64,
        window_size=8,
    ),
    "llama": lambda: _llama_like(transformers.LlamaConfig),
    "mistral": lambda: _llama_like(transformers.MistralConfig),
    "qwen2": lambda: _llama_like(transformers.Qwen2Config),
    # not in the family table: found by module-name discovery
    "qwen3": lambda: _llama_like(transformers.Qwen3Config, head_dim=8),
}
FAMILIES = list(CONFIGS)


def tiny_model(family: str, seed: int = 0, attn: str | None = None) -> torch.nn.Module:
    """A 2-layer, 4-head random model in eval mode."""
    config = CONFIGS[family]()
    for key, value in COMMON.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    kwargs = {"attn_implementation": attn} if attn else {}
    model = AutoModelForCausalLM.from_config(config, **kwargs)
    return model.eval()


def neox_model(seed: int = 0, **sizes: object) -> torch.nn.Module:
    """A random GPT-NeoX in eval mode: :data:`TINY_NEOX` with ``sizes`` changed."""
    config = transformers.AutoConfig.for_model(**(TINY_NEOX | COMMON | sizes))
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def value_heads(
    family: str, module_output: torch.Tensor, heads: int, kv_heads: int
) -> torch.Tensor:
    """Per-head value vectors ``(B, T, heads, head_dim)`` from the output of the module that
    produces them (written out per family, independently of the library)."""
    b, t, _ = module_output.shape
    if family == "gpt2":  # c_attn: [q | k | v]
        v = module_output.split(module_output.shape[-1] // 3, dim=-1)[2]
        return v.view(b, t, heads, -1)
    if family == "gpt_neox":  # query_key_value: per head [q | k | v]
        return module_output.view(b, t, heads, -1).chunk(3, dim=-1)[2]
    v = module_output.view(b, t, kv_heads, -1)  # v_proj
    return v.repeat_interleave(heads // kv_heads, dim=2)


VALUE_MODULE = {
    "gpt2": "attn.c_attn",
    "gpt_neox": "attention.query_key_value",
    "gpt_neo": "attn.attention.v_proj",
}
"""Module (relative to a block) whose output holds the values; llama-like: self_attn.v_proj."""

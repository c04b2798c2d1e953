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
    "qwen3": lambda: _llama_like(transformers.Qwen3Config, head_dim=8),
    "gptj": lambda: transformers.GPTJConfig(
        n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4
    ),
    "opt": lambda: transformers.OPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
    ),
    "falcon": lambda: transformers.FalconConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4
    ),
    "bloom": lambda: transformers.BloomConfig(hidden_size=32, n_layer=2, n_head=4),
    "mpt": lambda: transformers.MptConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=64),
    "openai-gpt": lambda: transformers.OpenAIGPTConfig(
        n_embd=32, n_layer=2, n_head=4, n_positions=64
    ),
    "phi": lambda: _llama_like(transformers.PhiConfig),
    "phi3": lambda: _llama_like(transformers.Phi3Config),
    "gemma": lambda: _llama_like(transformers.GemmaConfig, head_dim=8),
    "gemma2": lambda: _llama_like(transformers.Gemma2Config, head_dim=8),
    "gemma3_text": lambda: _llama_like(transformers.Gemma3TextConfig, head_dim=8),
    "olmo": lambda: _llama_like(transformers.OlmoConfig),
    "olmo2": lambda: _llama_like(transformers.Olmo2Config),
    "stablelm": lambda: _llama_like(transformers.StableLmConfig),
    "cohere": lambda: _llama_like(transformers.CohereConfig),
    "granite": lambda: _llama_like(transformers.GraniteConfig),
    "starcoder2": lambda: _llama_like(transformers.Starcoder2Config),
    # not in the family table: found by module-name discovery
    "helium": lambda: _llama_like(transformers.HeliumConfig, head_dim=8),
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
    if family in ("gpt2", "openai-gpt", "mpt"):  # c_attn / Wqkv: [q | k | v]
        v = module_output.split(module_output.shape[-1] // 3, dim=-1)[2]
        return v.view(b, t, heads, -1)
    if family == "gpt_neox":  # query_key_value: per head [q | k | v]
        return module_output.view(b, t, heads, -1).chunk(3, dim=-1)[2]
    if family == "bloom":  # query_key_value: per head [q | k | v]
        return module_output.view(b, t, heads, 3, -1)[:, :, :, 2]
    if family == "phi3":  # qkv_proj: [q (heads) | k (kv heads) | v (kv heads)]
        v = module_output[..., -module_output.shape[-1] * kv_heads // (heads + 2 * kv_heads) :]
        return v.reshape(b, t, kv_heads, -1).repeat_interleave(heads // kv_heads, dim=2)
    v = module_output.view(b, t, kv_heads, -1)  # v_proj
    return v.repeat_interleave(heads // kv_heads, dim=2)


VALUE_MODULE = {
    "gpt2": "attn.c_attn",
    "openai-gpt": "attn.c_attn",
    "gptj": "attn.v_proj",
    "bloom": "self_attention.query_key_value",
    "mpt": "attn.Wqkv",
    "phi3": "self_attn.qkv_proj",
    "gpt_neox": "attention.query_key_value",
    "gpt_neo": "attn.attention.v_proj",
}
"""Module (relative to a block) whose output holds the values; llama-like: self_attn.v_proj."""
NO_CACHE = {"openai-gpt"}
"""Families without a KV cache: generation recomputes the whole sequence at every step."""
NO_VALUE_CHECK = {"falcon"}
"""Families whose fused multi-query value layout the attn_heads test does not spell out (the
family matrix still checks their attn_heads site against the attention's output)."""
LAYERS = {"gpt2": "transformer.h", "gpt_neo": "transformer.h", "gptj": "transformer.h"}
LAYERS |= {"openai-gpt": "transformer.h", "bloom": "transformer.h", "falcon": "transformer.h"}
LAYERS |= {
    "gpt_neox": "gpt_neox.layers",
    "mpt": "transformer.blocks",
    "opt": "model.decoder.layers",
}
"""Where each family keeps its blocks (default ``model.layers``), written out for the tests."""

"""Training runs with codebooks in a mixture-of-experts model, its router loss included."""

import json
import math

from codebook_features.training import ModelConfig, train

TINY_MIXTRAL = {
    "model_type": "mixtral",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 32,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 64,
    "output_router_logits": True,
}


def test_moe_run_trains_codebooks_at_the_sparse_block(make_config) -> None:
    config = make_config("finetune", steps=4, eval_every=4, save_every=4)
    tokenizer = config.model.tokenizer
    config = config.replace(model=ModelConfig(init=dict(TINY_MIXTRAL), tokenizer=tokenizer))
    result = train(config)
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if r["split"] == "train"]
    assert rows and all(math.isfinite(r["lm_loss"]) and r["codebook_loss"] > 0 for r in rows)
    val = [r for r in map(json.loads, lines) if r["split"] == "val"]
    assert "layers.1.mlp" in val[-1]["sites"]

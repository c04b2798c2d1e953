"""A demo's ``results.json`` written before its settings were nested still continues: the
default presets read from the earlier layout equal today's, without a warning."""

import json
import warnings

from codebook_features.demos.fsm.config import PRESETS as FSM_PRESETS
from codebook_features.demos.fsm.pipeline import PipelineResults
from codebook_features.demos.lm.config import PRESETS as LM_PRESETS
from codebook_features.demos.lm.pipeline import LmResults

FSM_DEFAULT = {  # the default preset as the earlier version wrote it
    "num_states": 40,
    "num_edges": 4,
    "base": 10,
    "states_per_sequence": 32,
    "train_sequences": 40000,
    "val_sequences": 512,
    "baseline_steps": 1000,
    "baseline_lr": 0.003,
    "batch_size": 32,
    "warmup_steps": 100,
    "variants": [
        {
            "name": "Attn+MLP, k=1, C=512",
            "sites": ["attn_heads", "mlp"],
            "k": 1,
            "num_codes": 512,
            "steps": 600,
            "lr": 0.001,
        }
    ],
    "analysed": "Attn+MLP, k=1, C=512",
    "eval_samples": 256,
    "transitions": 500,
    "model": FSM_PRESETS["default"].model,
}


def earlier_lm_default() -> dict:
    data = LM_PRESETS["default"].to_dict()
    data |= data.pop("generation") | data.pop("rule")
    for name in ("temperature", "top_k", "top_p", "seed", "sites", "per_group"):
        data.pop(name)  # the earlier preset had only the flat ones it set
    data.pop("min_precision"), data.pop("smoothing")
    data["variants"][0] |= {"k": 8, "num_codes": 1024}  # a plain finetune's, as written then
    return data


def load(cls, settings: dict, path) -> object:
    path.write_text(json.dumps({"preset": "default", "seed": 0, "settings": settings}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return cls.load(path)


def test_the_tokfsm_demo_reads_its_earlier_results(tmp_path) -> None:
    results = load(PipelineResults, FSM_DEFAULT, tmp_path / "results.json")
    assert results.settings == FSM_PRESETS["default"]


def test_the_language_demo_reads_its_earlier_results(tmp_path) -> None:
    settings = earlier_lm_default()
    assert set(settings) >= {"samples", "max_new_tokens", "max_codes", "rank", "min_support"}
    results = load(LmResults, settings, tmp_path / "results.json")
    assert results.settings == LM_PRESETS["default"]

"""Training runs end to end on a tiny model and corpus: every mode learns, the frozen mode
leaves the model alone, accumulation scales losses correctly, and resuming is exact."""

import json

import pytest
import torch
from safetensors.torch import load_file

from codebook_features import CodebookModel
from codebook_features.training import train

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

TIMING = ("time", "elapsed_s", "tokens_per_s")
"""Keys of training rows that depend on the clock."""


def rows(run_dir, split):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.parametrize("mode", ["finetune", "codebooks", "baseline"])
def test_loss_goes_down_in_every_mode(make_config, pretrained, mode: str) -> None:
    # codebooks alone cannot teach a random frozen model: that mode starts from a trained one
    result = train(make_config(mode, pretrained=pretrained if mode == "codebooks" else None))
    val = rows(result.run_dir, "val")
    assert [r["step"] for r in val] == [0, 20, 40]
    assert val[-1]["loss"] < val[0]["loss"] - 0.3
    train_rows = rows(result.run_dir, "train")
    assert train_rows[-1]["lm_loss"] < train_rows[0]["lm_loss"]
    if mode == "baseline":
        assert "sites" not in val[-1] and train_rows[-1]["codebook_loss"] == 0.0
    else:
        assert set(val[-1]["sites"]) == {
            "layers.0.attn_heads",
            "layers.0.mlp",
            "layers.1.attn_heads",
            "layers.1.mlp",
        }
        assert val[-1]["without_codebooks_loss"] > 0 and train_rows[-1]["codebook_loss"] > 0
        assert (result.run_dir / "plots" / "code_usage.png").stat().st_size > 0
    assert (result.run_dir / "plots" / "loss.png").stat().st_size > 0
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["mode"] == mode and summary["final"]["loss"] == val[-1]["loss"]


def test_codebooks_mode_leaves_the_model_unchanged(make_config, pretrained) -> None:
    result = train(make_config("codebooks", pretrained=pretrained))
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(pretrained)
    trained = CodebookModel.from_pretrained(result.model_dir)
    for name, param in start.state_dict().items():
        assert torch.equal(param, trained.model.state_dict()[name]), name
    codes = load_file(result.model_dir / "codebooks.safetensors")
    assert not torch.equal(codes["0.mlp.vectors"], torch.zeros_like(codes["0.mlp.vectors"]))
    assert result.metrics.loss < rows(result.run_dir, "val")[0]["loss"]


def test_gradient_accumulation_matches_one_big_batch(make_config) -> None:
    states = []
    for name, batch, accum in (("big", 16, 1), ("accumulated", 8, 2)):
        config = make_config(
            name=name, steps=1, batch_size=batch, grad_accum=accum, max_grad_norm=None
        )
        states.append(load_file(train(config).run_dir / "checkpoint" / "model.safetensors"))
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=1e-4, atol=1e-6)


def test_resume_after_interruption_equals_an_uninterrupted_run(make_config) -> None:
    settings = {
        "steps": 30,
        "eval_every": 10,
        "save_every": 10,
        "kmeans_init": True,
        "kmeans_tokens": 1000,
    }
    whole = train(make_config(name="whole", **settings))
    first = train(make_config(name="split", stop_at=15, **settings))
    assert first.model_dir is None and first.step == 15
    assert not (first.run_dir / "final").exists()
    second = train(make_config(name="split", resume=True, **settings))
    assert second.step == 30
    assert rows(whole.run_dir, "val") == rows(second.run_dir, "val")
    assert without_timing(rows(whole.run_dir, "train")) == without_timing(
        rows(second.run_dir, "train")
    )
    a = load_file(whole.run_dir / "final" / "codebooks.safetensors")
    b = load_file(second.run_dir / "final" / "codebooks.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_model_is_the_trained_model(make_config) -> None:
    result = train(make_config(steps=8, eval_every=4, save_every=4))  # refresh every 5 calls
    final = load_file(result.model_dir / "codebooks.safetensors")
    checkpoint = load_file(result.run_dir / "checkpoint" / "model.safetensors")
    for key, value in final.items():
        assert torch.equal(value, checkpoint[f"codebooks.{key}"]), key


def test_streaming_data_with_kmeans_initialisation(make_config) -> None:
    config = make_config(steps=6, eval_every=3, save_every=3, kmeans_init=True, kmeans_tokens=600)
    config.data.streaming = True
    config.data.max_val_blocks = 8
    result = train(config)
    assert result.step == 6 and result.metrics.loss > 0

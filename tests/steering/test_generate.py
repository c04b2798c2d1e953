"""Generation with and without steering: a sample's text depends only on its seed (not on the
batch size or on the other samples), the steered and unsteered run of a sample share the seed,
forcing at ``new`` positions acts on the generated tokens only, and greedy is HF's greedy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig, Force
from codebook_features.steering.generate import (
    Generation,
    GenerationSettings,
    generate_texts,
    sample_seed,
    steer,
)
from tests.model_zoo import neox_model
from tests.text_fixtures import write_corpus, write_tokenizer

PROMPTS = ["the red cat", "the old king sees", "the ship"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tokenizer")
    return write_tokenizer(root / "tokenizer", write_corpus(root / "corpus.txt", lines=60))


@pytest.fixture(scope="module")
def tok(tokenizer_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def no_eos(tokenizer_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_dir, eos_token=None)


@pytest.fixture(scope="module")
def cbm(tok: Any) -> CodebookModel:
    config = CodebookModelConfig(num_codes=16, k=2, sites=["attn_heads", "mlp"])
    return CodebookModel(neox_model(vocab_size=len(tok)), config).eval()


def texts(generations: list[Generation]) -> list[tuple[str, tuple[int, ...]]]:
    return [(g.text, g.token_ids) for g in generations]


def test_same_seed_same_texts_whatever_the_batch_size(cbm, tok) -> None:
    settings = GenerationSettings(max_new_tokens=10, samples=3, seed=5)
    first = generate_texts(cbm, tok, PROMPTS, settings)
    again = generate_texts(cbm, tok, PROMPTS, settings, batch_size=2)
    assert texts(first) == texts(again)
    assert [(g.prompt_index, g.sample) for g in first] == [
        (p, s) for p in range(3) for s in range(3)
    ]
    assert [g.seed for g in first] == [sample_seed(5, p, s) for p in range(3) for s in range(3)]
    assert all(g.prompt == PROMPTS[g.prompt_index] for g in first)
    assert len({g.seed for g in first}) == 9
    # a sample does not depend on how many samples or prompts come with it
    fewer = generate_texts(cbm, tok, PROMPTS[:1], GenerationSettings(max_new_tokens=10, seed=5))
    assert texts(fewer) == texts(first[:1])


def test_different_seeds_give_different_texts(cbm, tok) -> None:
    runs = [
        generate_texts(cbm, tok, PROMPTS, GenerationSettings(max_new_tokens=12, seed=seed))
        for seed in (0, 1)
    ]
    assert texts(runs[0]) != texts(runs[1])
    samples = generate_texts(
        cbm, tok, PROMPTS[:1], GenerationSettings(max_new_tokens=12, samples=3)
    )
    assert len(set(texts(samples))) > 1


def test_greedy_is_hf_greedy_and_top_1_sampling_is_greedy(cbm, tok) -> None:
    settings = GenerationSettings(max_new_tokens=8, temperature=0)
    found = generate_texts(cbm, tok, PROMPTS, settings)
    for prompt, generation in zip(PROMPTS, found, strict=True):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = cbm.generate(
                ids, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=1
            )
        assert generation.token_ids == tuple(out[0, ids.shape[1] :].tolist())
        assert generation.text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    top_1 = GenerationSettings(max_new_tokens=8, top_k=1, temperature=0.7, seed=3)
    assert texts(generate_texts(cbm, tok, PROMPTS, top_1)) == texts(found)
    # a temperature near 0 tends to greedy; dividing by it must not overflow the logits
    tiny = GenerationSettings(max_new_tokens=8, temperature=1e-300, seed=3)
    assert texts(generate_texts(cbm, tok, PROMPTS, tiny)) == texts(found)


def test_without_an_eos_token_every_sample_is_full_length(cbm, tok, no_eos) -> None:
    settings = GenerationSettings(max_new_tokens=12, samples=4)
    assert all(len(g.token_ids) == 12 for g in generate_texts(cbm, no_eos, PROMPTS, settings))
    for g in generate_texts(cbm, tok, PROMPTS, settings):  # with one, it ends a sample
        assert tok.eos_token_id not in g.token_ids[:-1]
        assert len(g.token_ids) == 12 or g.token_ids[-1] == tok.eos_token_id


def test_forcing_new_positions_acts_on_generated_tokens_only(cbm, no_eos) -> None:
    force = Force("layers.0.mlp", 3, mode="all", positions="new")
    prompt_length = len(no_eos(PROMPTS[1])["input_ids"])
    settings = GenerationSettings(max_new_tokens=6, samples=2)
    with cbm.observe("layers.0.mlp") as seen:
        generate_texts(cbm, no_eos, PROMPTS[1:2], settings, interventions=[force])
    ids = seen["layers.0.mlp"]  # the last token is generated but never run
    assert ids.shape[:2] == (2, prompt_length + 5)
    assert (ids[:, prompt_length:] == 3).all()
    assert not (ids[:, :prompt_length] == 3).all(dim=(-1, -2)).any()


def test_steered_and_unsteered_share_their_seeds(cbm, tok) -> None:
    settings = GenerationSettings(max_new_tokens=8, samples=3, seed=2)
    force = Force("layers.1.attn_heads", {0: 2, 3: 5}, mode="all")
    result = steer(cbm, tok, "the red cat", [force], settings)
    assert result.seeds == [sample_seed(2, 0, s) for s in range(3)]
    assert [g.seed for g in result.steered_generations] == result.seeds
    assert result.unsteered == [g.text for g in generate_texts(cbm, tok, ["the red cat"], settings)]
    steered = generate_texts(cbm, tok, ["the red cat"], settings, interventions=[force])
    assert result.steered == [g.text for g in steered]
    data = result.to_dict()
    assert data["interventions"] == [force.to_dict()]
    assert data["settings"] == settings.to_dict() and data["prompt"] == "the red cat"
    assert data["unsteered"] == result.unsteered and data["steered"] == result.steered
    # an intervention that changes nothing gives the unsteered texts back, seed for seed
    ablate_nothing = cbm.ablate_codes("layers.0.mlp", 0, positions=[500])
    same = steer(cbm, tok, "the red cat", [ablate_nothing], settings)
    assert same.steered == same.unsteered == result.unsteered


def test_settings_round_trip_and_refuse_nonsense() -> None:
    settings = GenerationSettings(max_new_tokens=5, temperature=0.5, top_k=3, top_p=0.9, seed=4)
    assert GenerationSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(CodebookError, match=r"unknown setting temp; known: max_new_tokens"):
        GenerationSettings.from_dict({"temp": 1})
    bad = [
        {"max_new_tokens": 0},
        {"temperature": -1},
        {"temperature": float("nan")},
        {"top_k": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"samples": 0},
        {"seed": -1},
        {"samples": 1.5},
        {"max_new_tokens": True},
    ]
    for values in bad:
        (name,) = values
        with pytest.raises(CodebookError, match=f"^{name}: "):
            GenerationSettings(**values)


def test_mistakes_are_refused_before_generating(cbm, tok) -> None:
    settings = GenerationSettings(max_new_tokens=4)
    with pytest.raises(CodebookError, match="no codebook at site"):
        generate_texts(cbm, tok, PROMPTS, settings, interventions=[Force("layers.7.mlp", 1)])
    with pytest.raises(CodebookError, match="out of range"):
        steer(cbm, tok, "the cat", [Force("layers.0.mlp", 99)], settings)
    with pytest.raises(CodebookError, match="not one string"):
        generate_texts(cbm, tok, "the cat", settings)
    with pytest.raises(CodebookError, match="has no tokens"):
        generate_texts(cbm, tok, [""], settings)
    with pytest.raises(CodebookError, match="context"):
        generate_texts(cbm, tok, ["the cat"], GenerationSettings(max_new_tokens=200))
    with pytest.raises(CodebookError, match="nothing to steer"):
        steer(cbm, tok, "the cat", [], settings)
    with pytest.raises(CodebookError, match="batch_size"):
        generate_texts(cbm, tok, PROMPTS, settings, batch_size=0)


def test_the_time_limit_covers_every_batch(cbm, tok) -> None:
    settings = GenerationSettings(max_new_tokens=12, samples=6)
    cut = generate_texts(cbm, tok, PROMPTS[:1], settings, batch_size=2, time_limit=1e-9)
    assert len(cut) == 6 and all(len(g.token_ids) == 1 for g in cut)  # later batches too
    full = generate_texts(cbm, tok, PROMPTS[:1], settings, batch_size=2, time_limit=600)
    assert [g.token_ids[:1] for g in full] == [g.token_ids for g in cut]

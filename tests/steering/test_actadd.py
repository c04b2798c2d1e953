"""Activation addition: the steering vector is the difference of two token means of what the
network reads at the site, and adding it moves exactly that activation by ``alpha * v`` at the
chosen tokens only, in forward passes and cached generation, with the codebook on or off."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.steering.actadd import (
    AddActivation,
    activation_sums,
    mean_activation,
    steering_vector,
    steering_vectors,
)
from codebook_features.steering.generate import GenerationSettings, generate_texts
from tests.model_zoo import neox_model
from tests.text_fixtures import write_corpus, write_tokenizer

CONCEPT = ["the red dragon sees the cat", "the dragon", "a small red dragon finds the river ."]
CONTRAST = ["the old king hears the ship by the sea", "the child"]
SITES = ["layers.0.attn_heads", "layers.1.mlp"]  # a pre-hook site and a post-hook site


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("tokenizer")
    corpus = write_corpus(root / "corpus.txt", lines=60)
    return AutoTokenizer.from_pretrained(write_tokenizer(root / "tok", corpus), eos_token=None)


@pytest.fixture(scope="module")
def cbm(tok: Any) -> CodebookModel:
    """Double precision, so 'exactly alpha * v' is checked to 1e-10."""
    config = CodebookModelConfig(num_codes=16, k=2, sites=["attn_heads", "mlp"])
    return CodebookModel(neox_model(vocab_size=len(tok)).double(), config).eval()


def read(seen: Any, cbm: CodebookModel, site: str) -> torch.Tensor:
    """What the network reads at ``site``: the codebook's output, or its input when off."""
    return seen.outputs[site] if site in cbm.enabled else seen.inputs[site]


def run(cbm: CodebookModel, site: str, ids: torch.Tensor, *steering: Any) -> tuple:
    with torch.no_grad(), cbm.observe(site, ids=False, inputs=True, outputs=True) as seen:
        for item in steering:
            item.__enter__()
        try:
            logits = cbm(input_ids=ids).logits
        finally:
            for item in reversed(steering):
                item.__exit__(None, None, None)
    return logits, read(seen, cbm, site)


def tokens(tok: Any, text: str) -> torch.Tensor:
    return tok(text, return_tensors="pt")["input_ids"]


@pytest.mark.parametrize("enabled", [True, False], ids=["codebook-on", "codebook-off"])
@pytest.mark.parametrize("site", SITES)
def test_steering_vector_is_the_difference_of_token_means(cbm, tok, site, enabled) -> None:
    off = [] if enabled else [site]
    with cbm.disabled(off):
        vector = steering_vector(cbm, tok, site, CONCEPT, CONTRAST, batch_size=2)
        by_hand = [
            torch.cat([run(cbm, site, tokens(tok, t))[1][0] for t in texts]).mean(0)
            for texts in (CONCEPT, CONTRAST)
        ]
        one_by_one = mean_activation(cbm, tok, site, CONCEPT, batch_size=1)
        padded = mean_activation(cbm, tok, site, CONCEPT, batch_size=3)
    assert vector.shape == (32,) and vector.dtype == torch.float32
    torch.testing.assert_close(one_by_one, padded)  # padding leaves the real tokens alone
    torch.testing.assert_close(vector, (by_hand[0] - by_hand[1]).float(), atol=1e-6, rtol=1e-5)


def test_alpha_zero_is_no_steering(cbm, tok) -> None:
    ids = tokens(tok, CONCEPT[2])
    vector = torch.randn(32)
    plain, _ = run(cbm, "layers.1.mlp", ids)
    for positions in ("all", "new"):
        zero = AddActivation(cbm, "layers.0.attn_heads", vector, alpha=0.0, positions=positions)
        assert torch.equal(run(cbm, "layers.1.mlp", ids, zero)[0], plain)
    settings = GenerationSettings(max_new_tokens=10, samples=3, seed=7)
    zero = AddActivation(cbm, "layers.0.attn_heads", vector, alpha=0.0)
    steered = generate_texts(cbm, tok, CONCEPT, settings, interventions=[zero])
    unsteered = generate_texts(cbm, tok, CONCEPT, settings)
    assert [g.token_ids for g in steered] == [g.token_ids for g in unsteered]


@pytest.mark.parametrize("enabled", [True, False], ids=["codebook-on", "codebook-off"])
@pytest.mark.parametrize("site", SITES)
def test_forward_adds_alpha_v_at_the_chosen_tokens_only(cbm, tok, site, enabled) -> None:
    ids = tokens(tok, CONCEPT[2]).repeat(2, 1)  # 8 tokens, 2 rows
    vector = torch.randn(32)
    with cbm.disabled([] if enabled else [site]):
        plain_logits, plain = run(cbm, site, ids)
        for positions, chosen in (("all", list(range(8))), ([1, 5], [1, 5])):
            add = AddActivation(cbm, site, vector, alpha=3.0, positions=positions)
            logits, steered = run(cbm, site, ids, add)
            others = [i for i in range(8) if i not in chosen]
            assert torch.equal(steered[:, others], plain[:, others])
            expected = (3.0 * vector).double().expand(2, len(chosen), 32)
            torch.testing.assert_close(steered[:, chosen] - plain[:, chosen], expected)
            assert not torch.allclose(logits[:, chosen[-1]], plain_logits[:, chosen[-1]])
            assert torch.equal(logits[:, : chosen[0]], plain_logits[:, : chosen[0]])
        # a single forward pass is all prompt: nothing is new
        add = AddActivation(cbm, site, vector, alpha=3.0, positions="new")
        assert torch.equal(run(cbm, site, ids, add)[1], plain)
        # leaving the context removes the hooks
        assert torch.equal(run(cbm, site, ids)[0], plain_logits)


@pytest.mark.parametrize("enabled", [True, False], ids=["codebook-on", "codebook-off"])
@pytest.mark.parametrize("site", SITES)
def test_cached_generation_adds_at_generated_tokens_only(cbm, tok, site, enabled) -> None:
    prompt = CONCEPT[1]
    length = tokens(tok, prompt).shape[1]
    vector = torch.randn(32)
    settings = GenerationSettings(max_new_tokens=6, samples=2, seed=1)
    add = AddActivation(cbm, site, vector, alpha=-2.0, positions="new")
    with cbm.disabled([] if enabled else [site]):
        with cbm.observe(site, ids=False, inputs=True, outputs=True) as seen:
            found = generate_texts(cbm, tok, [prompt], settings, interventions=[add])
        steered = read(seen, cbm, site)
        rows = torch.stack(
            [torch.cat([tokens(tok, prompt)[0], torch.tensor(g.token_ids[:-1])]) for g in found]
        )
        _, plain = run(cbm, site, rows)  # the same tokens, without steering, in one pass
    assert steered.shape == plain.shape == (2, length + 5, 32)
    torch.testing.assert_close(steered[:, :length], plain[:, :length], rtol=0, atol=1e-10)
    expected = (-2.0 * vector).double().expand(2, 5, 32)
    torch.testing.assert_close(steered[:, length:] - plain[:, length:], expected)


def test_description_and_mistakes(cbm) -> None:
    vector = torch.ones(32)
    add = AddActivation(cbm, "layers.1.mlp", vector, alpha=2, positions=[3, 4])
    assert add.to_dict() == {
        "kind": "add_activation",
        "site": "layers.1.mlp",
        "alpha": 2.0,
        "positions": [3, 4],
        "vector_norm": pytest.approx(32**0.5),
    }
    assert "layers.1.mlp" in repr(add)
    with add, pytest.raises(CodebookError, match="already active"):
        add.__enter__()
    with pytest.raises(CodebookError, match="no codebook at site"):
        AddActivation(cbm, "layers.5.mlp", vector)
    with pytest.raises(CodebookError, match="must be 32 numbers"):
        AddActivation(cbm, "layers.1.mlp", torch.ones(31))
    with pytest.raises(CodebookError, match="NaN or inf"):
        AddActivation(cbm, "layers.1.mlp", torch.full((32,), torch.nan))
    with pytest.raises(CodebookError, match="alpha must be finite"):
        AddActivation(cbm, "layers.1.mlp", vector, alpha=float("inf"))
    with pytest.raises(CodebookError, match="positions must be"):
        AddActivation(cbm, "layers.1.mlp", vector, positions="prompt")
    with pytest.raises(CodebookError, match="not a single string"):
        steering_vector(cbm, None, "layers.1.mlp", "the cat", ["the dog"])


def test_steering_vector_refuses_empty_texts(cbm, tok) -> None:
    with pytest.raises(CodebookError, match="no tokens"):
        steering_vector(cbm, tok, "layers.1.mlp", [""], CONTRAST)
    with pytest.raises(CodebookError, match="at least one"):
        steering_vector(cbm, tok, "layers.1.mlp", CONCEPT, [])


@pytest.mark.parametrize("site", SITES)
def test_a_text_longer_than_the_context_is_averaged_over_its_windows(tok, site) -> None:
    config = CodebookModelConfig(num_codes=16, k=2, sites=["attn_heads", "mlp"])
    short = CodebookModel(neox_model(vocab_size=len(tok), max_position_embeddings=3), config)
    short = short.double().eval()
    texts = [CONCEPT[2], CONCEPT[1]]  # 8 tokens: windows of 3, 3 and 2; 2 tokens: one window
    ids = [tok(text, add_special_tokens=False)["input_ids"] for text in texts]
    pieces = [ids[0][0:3], ids[0][3:6], ids[0][6:8], ids[1]]
    assert [len(p) for p in pieces] == [3, 3, 2, 2]
    by_hand = torch.cat([run(short, site, torch.tensor([p]))[1][0] for p in pieces]).mean(0)
    for batch_size in (1, 3):
        found = mean_activation(short, tok, site, texts, batch_size=batch_size)
        torch.testing.assert_close(found, by_hand.float(), atol=1e-6, rtol=1e-5)


def test_per_text_sums_of_every_site_come_from_one_pass(tok) -> None:
    """Each text's sum over its tokens (windows of a long text joined back), at every site at
    once, with one site's codebook off: sums of any texts give their mean."""
    config = CodebookModelConfig(num_codes=16, k=2, sites=["attn_heads", "mlp"])
    short = CodebookModel(neox_model(vocab_size=len(tok), max_position_embeddings=3), config)
    short = short.double().eval()
    texts = [CONCEPT[2], CONTRAST[1], CONCEPT[1]]  # 8 tokens (three windows), 2 and 2
    with short.disabled(["layers.1.mlp"]):
        sums, tokens_of = activation_sums(short, tok, SITES, texts, batch_size=2)
        for site in SITES:
            for i, text in enumerate(texts):
                alone = mean_activation(short, tok, site, [text], batch_size=1).double()
                torch.testing.assert_close(sums[site][i] / tokens_of[i], alone)
            both = mean_activation(short, tok, site, [texts[0], texts[2]])
            mixed = (sums[site][[0, 2]].sum(0) / tokens_of[[0, 2]].sum()).float()
            torch.testing.assert_close(mixed, both, atol=1e-6, rtol=1e-5)
        vectors = steering_vectors(short, tok, SITES, texts[:1], texts[1:], batch_size=2)
        for site in SITES:
            alone = steering_vector(short, tok, site, texts[:1], texts[1:])
            torch.testing.assert_close(vectors[site], alone)
    assert tokens_of.tolist() == [8, 2, 2]
    assert {site: s.shape for site, s in sums.items()} == {site: (3, 32) for site in SITES}


@pytest.mark.parametrize(
    ("family", "site"), [("openai-gpt", "layers.0.attn"), ("opt", "layers.0.mlp")]
)
def test_sites_with_lists_or_flattened_tokens_are_added_to_per_token(family, site) -> None:
    """openai-gpt's modules return lists and OPT's MLP works on flattened tokens: addition at
    the last position moves every row's last logits and no earlier ones."""
    from tests.model_zoo import tiny_model

    cbm = CodebookModel(tiny_model(family), CodebookModelConfig(num_codes=8, k=1, sites=[site]))
    ids = torch.randint(2, 61, (2, 5), generator=torch.Generator().manual_seed(0))
    vector = torch.ones(cbm.codebook(site).config.dim)
    with torch.no_grad(), cbm.disabled():
        plain = cbm(ids).logits
        with AddActivation(cbm, site, vector, alpha=5.0, positions=[4]):
            added = cbm(ids).logits
    torch.testing.assert_close(added[:, :4], plain[:, :4])
    assert all(not torch.allclose(added[row, 4], plain[row, 4]) for row in range(2))

"""Baselines on the same features: the store's activations, the best neuron, a TopK SAE and the
codes vs neurons vs latents table, on a synthetic store with planted activations and on a
recorded one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from codebook_features import CodebookError
from codebook_features.persist.checksums import file_sha256
from codebook_features.persist.files import ACTIVATIONS_DIR, ACTIVATIONS_SHARD, MANIFEST
from codebook_features.search import baselines
from codebook_features.search.baselines import (
    BaselineRow,
    compare_baselines,
    neuron_baseline,
    sae_baseline,
    train_site_sae,
)
from codebook_features.search.neurons import best_neurons
from codebook_features.search.regex import regex_token_rows
from codebook_features.search.sae import (
    SAEConfig,
    TopKSAE,
    fraction_of_variance_unexplained,
    train_sae,
)
from codebook_features.store.reader import CodeStore
from tests.store.synthetic import DRAGON, WORDS, reindex, write_store
from tests.store.test_record import settings, world  # noqa: F401 (a fixture)

SITE = "layers.0.mlp"  # 1 group, k = 2, 50 codes: an SAE of 50 latents, 2 active
WIDTH = 16
PLANTED = 13
"""The neuron that is 1 exactly on the tokens of "dragon" and 0 elsewhere."""
KEPT = {0: None, 2: 300}
"""shard -> rows with activations (None: all), as two processes would keep their first rows."""


def sparse_activations(tokens: np.ndarray, seed: int = 0) -> np.ndarray:
    """Two atoms of a 40-atom dictionary per token (chosen by the token and at random), plus a
    little noise, and the planted neuron."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(40, WIDTH))
    atoms[:, PLANTED] = 0
    first = tokens % 40
    second = rng.integers(0, 40, len(tokens))
    weights = rng.uniform(1, 3, size=(len(tokens), 2))
    x = weights[:, :1] * atoms[first] + weights[:, 1:] * atoms[second]
    x += 0.05 * rng.normal(size=x.shape)
    x[:, PLANTED] = tokens == WORDS.index("dragon")
    return x.astype(np.float16)


def add_activations(root: Path) -> Path:
    """Add activations of ``SITE`` to a synthetic store, laid out as ``codebook record``
    writes them, and list them in its manifest."""
    import pyarrow.parquet as pq

    manifest = json.loads((root / MANIFEST).read_text())
    (root / ACTIVATIONS_DIR).mkdir()
    listed = []
    for shard, rows in KEPT.items():
        info = manifest["shards"][shard]
        tokens = pq.read_table(root / "shards" / info["tokens"])["token"].to_numpy()
        tokens = tokens if rows is None else tokens[:rows]
        name = ACTIVATIONS_SHARD.format(rank=0, shard=shard)
        save_file(
            {SITE: sparse_activations(tokens, seed=shard)}, str(root / ACTIVATIONS_DIR / name)
        )
        listed.append({"file": name, "shard": shard, "rows": len(tokens)})
        manifest["files"][f"{ACTIVATIONS_DIR}/{name}"] = file_sha256(root / ACTIVATIONS_DIR / name)
    manifest["activations"] = {
        "sites": {SITE: {"dim": WIDTH}},
        "dtype": "float16",
        "max_tokens": None,
        "tokens": sum(f["rows"] for f in listed),
        "files": listed,
    }
    (root / MANIFEST).write_text(json.dumps(manifest))
    reindex(root)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CodeStore:
    root = tmp_path_factory.mktemp("baselines") / "store"
    return CodeStore(add_activations(write_store(root, documents=400, per_shard=150)))


@pytest.fixture(scope="module")
def sae(store: CodeStore):
    return train_site_sae(store, SITE, steps=300)


def test_activations_cover_the_first_rows_of_their_shards(store: CodeStore) -> None:
    counts = [s.tokens_count for s in store.manifest.shards]
    expected = np.concatenate([np.arange(counts[0]), sum(counts[:2]) + np.arange(300)])
    assert np.array_equal(store.activation_rows, expected)
    acts = store.activations(SITE)
    assert acts.dtype == np.float16 and acts.shape == (len(expected), WIDTH)
    assert not acts.flags.writeable
    # the planted neuron lines up with the token of each row
    dragon = np.asarray(store.token)[expected] == WORDS.index("dragon")
    assert np.array_equal(acts[:, PLANTED] == 1, dragon) and dragon.any()
    assert store.activation_sites == [SITE]


def test_missing_or_damaged_activations_are_clear_errors(store: CodeStore, tmp_path) -> None:
    with pytest.raises(CodebookError, match=r"--activation_sites layers\.1\.attn_heads"):
        store.activations("layers.1.attn_heads")
    plain = CodeStore(write_store(tmp_path / "plain"))
    with pytest.raises(CodebookError, match=r"recorded: none\).*--activation_sites"):
        plain.activations(SITE)
    assert len(plain.activation_rows) == 0
    damaged = add_activations(write_store(tmp_path / "damaged", documents=400, per_shard=150))
    opened = CodeStore(damaged)  # opened before the damage: reading finds it
    file = damaged / ACTIVATIONS_DIR / ACTIVATIONS_SHARD.format(rank=0, shard=2)
    data = bytearray(file.read_bytes())
    data[-10] ^= 0x40  # a value flipped, the size the same: it would have turned into NaN
    file.write_bytes(bytes(data))
    with pytest.raises(CodebookError, match=r"activations-.* in .* is damaged.*record"):
        opened.activations(SITE)
    with pytest.raises(CodebookError, match=r"activations-.* in .* is damaged"):
        compare_baselines(CodeStore(damaged), [r"dragon"], SITE, sae_steps=1)
    file.write_bytes(bytes(data[:-10]))
    with pytest.raises(CodebookError, match=r"activations-.* in .* is damaged"):
        CodeStore(damaged).activations(SITE)


def test_a_planted_neuron_has_precision_one(store: CodeStore) -> None:
    positive = regex_token_rows(store, r"dragon")
    for recall in (0.3, 1.0):
        score = neuron_baseline(store, SITE, positive, recall)
        assert (score.unit, score.sign, score.precision) == (PLANTED, 1, 1.0)
    # a feature no neuron singles out scores well below 1
    assert neuron_baseline(store, SITE, regex_token_rows(store, r"town"), 1.0).precision < 0.9


def test_neuron_chunks_give_the_unchunked_answer(store: CodeStore, monkeypatch) -> None:
    rows, acts = baselines.activation_sample(store, SITE)
    positive = np.isin(rows, regex_token_rows(store, r"the|café"))
    labels = torch.from_numpy(np.where(positive, 0, -1))
    whole, which = best_neurons(
        torch.from_numpy(acts.astype(np.float32)), labels, torch.tensor([0.7])
    )
    monkeypatch.setattr(baselines, "CHUNK_VALUES", 3 * len(rows))  # 3 neurons at a time
    chunked = baselines._neuron_score(acts, positive, 0.7)
    assert chunked.precision == pytest.approx(float(whole[0]))
    unit = int(which[0])
    assert (chunked.unit, chunked.sign) == ((unit, 1) if unit >= 0 else (-unit - 1, -1))


def test_sample_bounds_the_rows_and_is_seeded(store: CodeStore) -> None:
    rows, acts = baselines.activation_sample(store, SITE, max_tokens=100, seed=3)
    again, _ = baselines.activation_sample(store, SITE, max_tokens=100, seed=3)
    assert len(rows) == 100 and np.array_equal(rows, again) and np.all(np.diff(rows) > 0)
    position = np.searchsorted(store.activation_rows, rows)
    np.testing.assert_array_equal(acts, store.activations(SITE)[position])


def test_sae_reconstructs_its_training_data(store: CodeStore, sae) -> None:
    acts = store.activations(SITE)
    assert sae.W_dec.shape == (50, WIDTH) and sae.k == 2  # the site's codes and k
    fvu = fraction_of_variance_unexplained(sae, acts)
    untrained = fraction_of_variance_unexplained(sae_with_steps(acts, 0), acts)
    # predicting the mean has FVU 1 (the denominator); an untrained SAE is the chance level
    print(f"SAE FVU {fvu:.3f} (untrained {untrained:.3f}, mean only 1)")
    assert fvu < 0.5 and fvu < untrained
    values, indices = sae.encode(torch.from_numpy(acts[:50].astype(np.float32)))
    assert values.shape == indices.shape == (50, 2) and (values >= 0).all()
    dense = sae.dense(torch.from_numpy(acts[:50].astype(np.float32)))
    assert ((dense > 0).sum(1) <= 2).all()


def test_sae_settings_are_checked() -> None:
    with pytest.raises(CodebookError, match=r"k=5, 3: choose k <= latents"):
        SAEConfig(latents=3, k=5)
    with pytest.raises(CodebookError, match="lr: input should be greater than 0"):
        SAEConfig(latents=3, k=1, lr=0)
    with pytest.raises(CodebookError, match="steps: input should be greater than or equal to 0"):
        SAEConfig(latents=3, k=1, steps=-1)


def sae_with_steps(acts: np.ndarray, steps: int, seed: int = 0):
    return train_sae(acts, SAEConfig(latents=50, k=2, steps=steps, seed=seed))


def test_sae_training_is_seeded(store: CodeStore) -> None:
    acts = store.activations(SITE)
    first, second = sae_with_steps(acts, 20), sae_with_steps(acts, 20)
    other = sae_with_steps(acts, 20, seed=1)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.W_dec, other.W_dec)


def test_sae_training_does_not_depend_on_the_threads(store: CodeStore) -> None:
    acts = store.activations(SITE)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sae_with_steps(acts, 20)
        torch.set_num_threads(4)
        four = sae_with_steps(acts, 20)
    finally:
        torch.set_num_threads(threads)
    for name, value in one.state_dict().items():
        assert torch.equal(value, four.state_dict()[name]), name


def test_sae_decoding_matches_dense_latents_times_the_decoder() -> None:
    """The decoder reads only each token's k rows; the obvious reference multiplies the dense
    latents by the whole decoder. Outputs and gradients agree."""
    generator = torch.Generator().manual_seed(0)
    sae = TopKSAE(width=8, latents=20, k=3, generator=generator)
    indices = torch.stack([torch.randperm(20, generator=generator)[:3] for _ in range(30)])
    grad = torch.randn(30, 8, generator=generator)
    results = []
    for decode in (
        sae._decode_normalized,
        lambda v, i: torch.zeros(30, 20).scatter(1, i, v) @ sae.W_dec + sae.b_dec,
    ):
        values = torch.rand(30, 3, generator=torch.Generator().manual_seed(1))
        values.requires_grad_(True)
        sae.zero_grad(set_to_none=True)
        out = decode(values, indices)
        out.backward(grad)
        results.append((out.detach(), sae.W_dec.grad.clone(), values.grad.clone()))
    for fast, reference in zip(*results, strict=True):
        torch.testing.assert_close(fast, reference)


def test_sparse_latent_scores_match_a_dense_scan() -> None:
    rng = np.random.default_rng(0)
    tokens, latents, k = 400, 12, 3
    pre = np.maximum(rng.normal(size=(tokens, latents)), 0).round(1)  # ties and zeros
    indices = np.argsort(-pre, axis=1)[:, :k]
    values = np.take_along_axis(pre, indices, 1)
    dense = np.zeros_like(pre)
    np.put_along_axis(dense, indices, values, 1)
    for trial in range(20):
        positive = rng.random(tokens) < 0.2 + 0.03 * trial
        recall = float(rng.choice([0.1, 0.35, 0.6, 0.9, 1.0]))
        count = int(positive.sum())
        need = max(1, min(count, round(recall * count)))
        expected = []
        for j in range(latents):  # best_neurons' rule, without the flipped copies
            threshold = np.sort(dense[positive, j])[::-1][need - 1]
            expected.append(
                (dense[positive, j] >= threshold).sum() / (dense[:, j] >= threshold).sum()
            )
        got = baselines._latent_score(values, indices, positive, recall, latents)
        assert got.precision == pytest.approx(max(expected))
        assert got.unit == int(np.argmax(expected))


def test_sae_baseline_scores_a_latent(store: CodeStore, sae) -> None:
    positive = regex_token_rows(store, r"dragon")
    score = sae_baseline(store, SITE, positive, 1.0, sae)
    assert 0 <= score.unit < 50 and score.sign == 1 and 0 < score.precision <= 1


def test_compare_baselines_gives_one_row_per_pattern_and_the_mean(store: CodeStore, sae) -> None:
    patterns = [r"dragon", r"town|dawn", r"(?:the )(red)", r"nothing matches this"]
    table = compare_baselines(store, patterns, SITE, sae=sae)
    assert [row.pattern for row in table] == [*patterns, "mean"]
    assert all(isinstance(row, BaselineRow) for row in table)
    rows = store.activation_rows
    dragon, _, red, nothing, mean = table
    assert dragon.tokens == len(rows)
    assert dragon.positives == np.isin(rows, regex_token_rows(store, r"dragon")).sum() > 0
    assert dragon.code == f"{SITE}/0/{DRAGON}"
    assert (dragon.code_precision, dragon.code_recall) == (1.0, 1.0)
    assert (dragon.neuron, dragon.neuron_sign, dragon.neuron_precision) == (PLANTED, 1, 1.0)
    assert 0 < dragon.sae_precision <= 1 and dragon.latent is not None
    assert red.positives == np.isin(rows, regex_token_rows(store, r"(?:the )(red)")).sum() > 0
    assert nothing.positives == 0 and nothing.code is None and nothing.neuron_precision is None
    scored = table[:3]
    for name in ("code_precision", "code_recall", "neuron_precision", "sae_precision"):
        assert getattr(mean, name) == pytest.approx(np.mean([getattr(r, name) for r in scored]))
    assert mean.positives == sum(r.positives for r in table[:-1])
    assert json.loads(json.dumps([row.to_dict() for row in table]))[0]["code"] == dragon.code
    with pytest.raises(CodebookError, match="--activation_sites"):
        compare_baselines(store, patterns, "layers.1.attn_heads", sae=sae)


def test_a_recorded_store_gives_its_activations_and_a_table(
    world: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    from safetensors.numpy import load_file

    from codebook_features.store.record import record

    # small shards: the first 200 tokens, whose layers.0.mlp inputs are kept, span several
    record(settings(world, tmp_path / "store", shard_tokens=60))
    store = CodeStore(tmp_path / "store")
    files = store.manifest.activations.files
    assert len(files) > 1
    kept = np.concatenate([load_file(store.path / "activations" / f.file)[SITE] for f in files])
    np.testing.assert_array_equal(store.activations(SITE), kept)
    assert np.array_equal(store.activation_rows, np.arange(200))
    table = compare_baselines(store, [r"the", r"king"], SITE, sae_steps=50)
    assert [row.pattern for row in table] == ["the", "king", "mean"]
    for row in table[:2]:
        assert row.tokens == 200 and row.positives > 0 and row.code is not None
        assert 0 < row.neuron_precision <= 1 and 0 < row.sae_precision <= 1


def test_search_baselines_command(store: CodeStore, capsys) -> None:
    from codebook_features.cli import main

    root = str(store.path)
    base = ["search", "baselines", "--store", root, "--site", SITE, "--sae_steps", "30"]
    assert main([*base, "--patterns", "dragon", "town", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["pattern"] for row in out["rows"]] == ["dragon", "town", "mean"]
    assert out["rows"][0]["neuron_precision"] == 1.0 and 0 < out["sae_fvu"] < 1
    assert main([*base, "--patterns", "dragon"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "fraction of variance unexplained" in lines[0]
    assert lines[2].startswith("dragon ") and f"{SITE}/0/{DRAGON}" in lines[2]
    assert lines[3].startswith("mean ")
    args = ["search", "baselines", "--store", root, "--site", "layers.1.attn_heads"]
    assert main([*args, "--patterns", "x"]) == 2
    assert "--activation_sites" in capsys.readouterr().err
    assert main(["search", "baselines", "--store", root, "--site", SITE]) == 2
    assert capsys.readouterr().err == "error: patterns is required\n"
    assert main([*base, "--patterns", "x", "--max_tokens", "1"]) == 2
    assert "max_tokens: input should be greater than or equal to 2" in capsys.readouterr().err

"""One observation path: what it records is exactly what the codebooks received and computed,
for forward passes and cached generation, with a filter of sites."""

import pytest
import torch

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.search import record_codes
from tests.model_zoo import tiny_model


def neox(**overrides: object) -> CodebookModel:
    settings: dict = {"num_codes": 16, "k": 2, "sites": ["attn_heads", "mlp"]} | overrides
    return CodebookModel(tiny_model("gpt_neox"), CodebookModelConfig(**settings))


def tokens(rows: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(2, 61, (rows, length), generator=torch.Generator().manual_seed(length))


@pytest.mark.parametrize("site", ["layers.0.attn_heads", "layers.1.mlp"])
def test_observation_is_exactly_what_the_codebook_computed(site: str) -> None:
    cbm = neox()
    with torch.no_grad(), cbm.force_codes(site, {0: 3}, positions=[1]):
        out, seen = cbm.run_with_codes(tokens(), inputs=True, outputs=True)
        again = cbm.codebook(site)(seen.inputs[site])
    assert torch.equal(seen.ids[site], again.ids)
    assert torch.equal(seen.outputs[site], again.output)
    assert (seen.ids[site][:, 1, 0, -1] == 3).all()  # after the intervention's rewrite
    assert seen.inputs[site].shape == (2, 7, 32)
    assert seen[site] is not None and torch.equal(seen[site], seen.ids[site])
    assert out.logits.shape == (2, 7, 61)


def test_names_filter_and_globs() -> None:
    cbm = neox()
    with torch.no_grad(), cbm.observe("layers.*.mlp") as seen:
        cbm(tokens())
    assert seen.keys() == ["layers.0.mlp", "layers.1.mlp"]
    with pytest.raises(CodebookError, match="was not observed"):
        seen.ids["layers.0.attn_heads"]
    with pytest.raises(CodebookError, match="inputs were not recorded"):
        seen.inputs["layers.0.mlp"]
    with pytest.raises(CodebookError, match=r"no site matches 'layers\.\*\.block'"):
        cbm.observe("layers.*.block")


def test_generation_is_joined_along_the_sequence() -> None:
    cbm = neox()
    prompt = tokens(2, 5)
    with torch.no_grad():
        with cbm.observe(inputs=True) as seen:
            generated = cbm.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=4,
                min_new_tokens=4,
                do_sample=False,
                pad_token_id=1,
                eos_token_id=None,
            )
        _, full = cbm.run_with_codes(generated[:, :-1], inputs=True)
    for site in cbm.sites:
        assert seen.ids[site].shape == (2, 8, *full.ids[site].shape[2:])
        assert len(seen.calls("ids", site)) == 4  # the prompt, then one call per new token
        # the cached steps saw the same activations as one pass over the whole sequence
        torch.testing.assert_close(seen.inputs[site], full.inputs[site], atol=1e-5, rtol=1e-4)


def test_disabled_sites_show_their_input_only() -> None:
    cbm = neox()
    with torch.no_grad():
        with cbm.disabled("layers.1.mlp"), cbm.observe(inputs=True) as seen:
            plain_out = cbm(tokens()).logits
        with cbm.disabled(), cbm.observe(["layers.1.mlp"], inputs=True) as none_on:
            cbm(tokens())
    assert seen.inputs["layers.1.mlp"].shape == (2, 7, 32)
    with pytest.raises(CodebookError, match="codebook was disabled"):
        seen.ids["layers.1.mlp"]
    assert seen.ids["layers.0.mlp"].shape == (2, 7, 1, 2)
    assert none_on.inputs["layers.1.mlp"].shape == (2, 7, 32)
    assert plain_out.shape == (2, 7, 61)


def test_observing_changes_nothing_and_leaves_no_hooks() -> None:
    cbm = neox()
    with torch.no_grad():
        plain = cbm(tokens()).logits
        with cbm.observe(inputs=True, outputs=True):
            watched = cbm(tokens()).logits
    assert torch.equal(plain, watched)
    assert cbm._observers == []


def test_kmeans_initialisation_sees_the_plain_model() -> None:
    cbm = neox()
    batches = [tokens(8, 16), tokens(4, 16)]  # different batch sizes
    # the activations at each site, read independently of the library by hooks on the modules
    direct: dict[str, list[torch.Tensor]] = {site: [] for site in cbm.sites}
    handles = []
    for site, where in cbm.sites.items():
        if where.pre_hook:
            hook = lambda m, args, site=site: direct[site].append(args[0].detach())  # noqa: E731
            handles.append(where.module.register_forward_pre_hook(hook))
        else:
            hook = lambda m, a, out, site=site: direct[site].append(out.detach())  # noqa: E731
            handles.append(where.module.register_forward_hook(hook))
    with torch.no_grad(), cbm.disabled(), cbm.observe(ids=False, inputs=True) as seen:
        for batch in batches:
            cbm(batch)
    for handle in handles:
        handle.remove()
    expected = {}
    for site in cbm.sites:
        assert all(
            torch.equal(a, b) for a, b in zip(seen.calls("inputs", site), direct[site], strict=True)
        )
        own = neox().codebook(site)
        own.init_kmeans(torch.cat([p.reshape(-1, 32) for p in direct[site]]), iters=5, seed=1)
        expected[site] = own.vectors.detach()
    cbm.init_kmeans(batches, iters=5, seed=1)
    for site in cbm.sites:
        assert torch.equal(cbm.codebook(site).vectors.detach(), expected[site])


def test_records_use_the_same_path() -> None:
    cbm = neox()
    batch = tokens(5, 6)
    record = record_codes(cbm, batch, batch_size=2, activations=True, sites="layers.1.*")
    assert list(record.ids) == ["layers.1.attn_heads", "layers.1.mlp"]
    with torch.no_grad():
        _, seen = cbm.run_with_codes(batch, sites="layers.1.*", inputs=True)
    for site in record.ids:
        assert torch.equal(record.ids[site], seen.ids[site].to(torch.int32))
        torch.testing.assert_close(record.activations[site], seen.inputs[site])
    assert record.flat_ids("layers.1.mlp").shape == (30, 1, 2)
    with pytest.warns(DeprecationWarning, match="CodeRecord.ids"):
        assert record.codes is record.ids

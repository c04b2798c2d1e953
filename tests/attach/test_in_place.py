"""A model may change a site's tensor in place after the hook (Falcon adds the attention output
to its parallel MLP's output with ``+=``): training still works, and what is observed is what
the site computed."""

from __future__ import annotations

import pytest
import torch

from codebook_features import CodebookModel, CodebookModelConfig
from codebook_features.attach.families import FAMILIES
from codebook_features.attach.site_names import SITE_KINDS
from codebook_features.errors import CodebookError
from tests.family_zoo import MODEL_TYPES, tiny
from tests.model_zoo import tiny_model


def attach(model: torch.nn.Module, sites: list[str], **extra: object) -> CodebookModel:
    return CodebookModel(model, CodebookModelConfig(num_codes=8, k=1, sites=sites, **extra))


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 61, (2, 5), generator=torch.Generator().manual_seed(seed))


def test_falcon_mlp_trains() -> None:
    model = tiny_model("falcon").train()
    assert model.config.parallel_attn
    cbm = attach(model, ["mlp"])
    ids = tokens()
    out = cbm(input_ids=ids, labels=ids, use_cache=False)
    (out.loss + cbm.codebook_loss()).backward()
    grad = cbm.codebook("layers.0.mlp").vectors.grad
    assert grad is not None and grad.abs().sum() > 0


def test_an_in_place_change_that_keeps_the_values_is_found() -> None:
    """With a zeroed attention output, Falcon's ``mlp_output += attention_output`` leaves the
    values as they were, but it still writes into the tensor (and breaks training on a view)."""
    model = tiny_model("falcon").train()
    with torch.no_grad():
        model.transformer.h[0].self_attention.dense.weight.zero_()
    cbm = attach(model, ["mlp"])
    ids = tokens()
    out = cbm(input_ids=ids, labels=ids, use_cache=False)
    (out.loss + cbm.codebook_loss()).backward()
    assert cbm.codebook("layers.0.mlp").vectors.grad is not None


@pytest.mark.parametrize("enabled", [False, True])
def test_falcon_observed_mlp_output_is_the_mlps(enabled: bool) -> None:
    """The MLP's real output is its projection's; the model's ``+=`` must not reach what the
    observation holds, whether the codebook runs or not."""
    cbm = attach(tiny_model("falcon"), ["mlp"])
    projected = []
    projection = cbm.model.transformer.h[0].mlp.dense_4h_to_h
    handle = projection.register_forward_hook(lambda m, a, out: projected.append(out.clone()))
    with torch.no_grad(), cbm.observe(ids=False, inputs=True, outputs=enabled) as seen:
        if enabled:
            cbm(tokens())
        else:
            with cbm.disabled():
                cbm(tokens())
    handle.remove()
    torch.testing.assert_close(seen.calls("inputs", "layers.0.mlp")[0], projected[0])
    if enabled:
        codes = cbm.codebook("layers.0.mlp")(projected[0]).output
        torch.testing.assert_close(seen.calls("outputs", "layers.0.mlp")[0], codes)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) & set(MODEL_TYPES)))
def test_a_backward_pass_runs_at_every_site_of_a_table_family(family: str) -> None:
    """One training step's backward pass with a codebook at every site the family has."""
    model = tiny(family)
    kinds = []
    for kind in SITE_KINDS:
        try:
            attach(model, [kind]).detach()
        except CodebookError:  # refused kinds (mixture-of-experts mlp_hidden) are tested elsewhere
            continue
        kinds.append(kind)
    cbm = attach(model, kinds)
    ids = tokens()
    loss = cbm(input_ids=ids, use_cache=False).logits.float().square().mean()
    (loss + cbm.codebook_loss()).backward()
    for site in cbm.sites:
        grad = cbm.codebook(site).vectors.grad
        assert grad is not None and bool(torch.isfinite(grad).all()), site

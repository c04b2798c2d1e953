"""Mixture-of-experts families: mlp is the output of the whole sparse block (the paper's "MLP
output"), the per-expert hidden activation is refused, and training with codebooks in the loop
works beside the router's auxiliary loss."""

from __future__ import annotations

import pytest
import torch

from codebook_features import CodebookModel, CodebookModelConfig
from codebook_features.errors import CodebookError
from tests.family_zoo import tiny

MOE = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "gpt_oss"]
"""deepseek_v3 is DeepSeek-style: a dense first layer, then shared plus routed experts."""
NO_AUX_LOSS = {"deepseek_v3"}
"""Balances its experts with a routing bias, without an auxiliary loss."""


def attach(model: torch.nn.Module, **settings: object) -> CodebookModel:
    return CodebookModel(model, CodebookModelConfig(**({"num_codes": 8, "k": 1} | settings)))


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 61, (2, 6), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", MOE)
def test_mlp_site_is_the_whole_sparse_block(family: str) -> None:
    model = tiny(family)
    cbm = attach(model, sites=["attn_heads", "attn", "mlp", "block"])
    assert len(cbm.sites) == 8
    sparse = model.model.layers[-1].mlp
    assert any(name == "experts" for name, _ in sparse.named_children())
    outs = []
    handle = sparse.register_forward_hook(
        lambda m, a, out: outs.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad(), cbm.disabled(), cbm.observe(ids=False, inputs=True) as seen:
        cbm(tokens())
    handle.remove()
    torch.testing.assert_close(seen.calls("inputs", "layers.1.mlp")[0], outs[0])
    with pytest.raises(CodebookError, match=rf"'{family}': site layers\.1\.mlp_hidden .*experts"):
        attach(model, sites=["mlp_hidden"], layers=[-1])


@pytest.mark.parametrize("family", MOE)
def test_training_step_with_the_router_loss(family: str) -> None:
    model = tiny(family).train()
    model.config.output_router_logits = True
    cbm = attach(model, sites=["attn_heads", "mlp"], loss="fullaeloss")
    optimizer = torch.optim.AdamW(cbm.parameters(), lr=1e-2)
    before = cbm.codebook("layers.1.mlp").vectors.detach().clone()
    for step in range(2):
        ids = tokens(step)
        out = cbm(input_ids=ids, labels=ids, use_cache=False)
        if family not in NO_AUX_LOSS:
            assert out.aux_loss is not None and torch.isfinite(out.aux_loss)
            logits = out.logits[:, :-1].flatten(0, 1).float()
            lm_loss = torch.nn.functional.cross_entropy(logits, ids[:, 1:].flatten())
            router = model.config.router_aux_loss_coef * out.aux_loss
            assert router.abs() > 0
            torch.testing.assert_close(out.loss - lm_loss, router, rtol=1e-4, atol=1e-5)
        loss = out.loss + cbm.codebook_loss()  # out.loss includes the router's auxiliary loss
        loss.backward()
        assert cbm.codebook("layers.1.mlp").vectors.grad.abs().sum() > 0
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(cbm.codebook("layers.1.mlp").vectors, before)

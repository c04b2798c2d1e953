"""Gradients of every loss variant against the same gradients written out by hand."""

import pytest
import torch
from torch.func import functional_call

from tests.codebook.helpers import make_codebook

VARIANTS = ["base", "aeloss", "fullaeloss", "vqvae"]
# variant -> (reconstruction term, commitment term, task gradient reaches the codes)
TERMS = {
    "base": (False, False, True),
    "aeloss": (True, False, True),
    "fullaeloss": (True, True, True),
    "vqvae": (True, True, False),
}


@pytest.mark.parametrize("aggregate", ["mean", "sum"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_equal_hand_derived(variant: str, aggregate: str) -> None:
    lam, beta = 0.7, 0.3
    codebook = make_codebook(
        torch.float64, loss=variant, aggregate=aggregate, recon_weight=lam, commitment=beta
    )
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 5, 16, dtype=torch.float64)
    out = codebook(x)
    ((out.output * upstream).sum() + out.loss).backward()

    # The same quantities, by hand: ids fixed, y = sum of selected codes times s.
    recon, commit, task_to_codes = TERMS[variant]
    groups, k, n = 2, 3, 10
    s = 1.0 / k if aggregate == "mean" else 1.0
    ids = out.ids.reshape(n, groups, k)
    xs = x.reshape(n, groups, 8)
    xn = torch.nn.functional.layer_norm(xs, (8,), eps=1e-5)
    xn = xn * codebook.norm_weight + codebook.norm_bias
    codes = codebook.vectors.detach()
    q = torch.stack([s * codes[g, ids[:, g]].sum(1) for g in range(groups)], 1)
    up = upstream.reshape(n, groups, 8)

    grad_xn = up.clone()
    if commit:
        grad_xn += lam * beta * 2 * (xn.detach() - q) / n
    grad_codes = torch.zeros_like(codes)
    for t in range(n):
        for g in range(groups):
            for j in range(k):
                c = ids[t, g, j]
                if task_to_codes:
                    grad_codes[g, c] += s * up[t, g]
                if recon:
                    grad_codes[g, c] += s * lam * 2 * (q[t, g] - xn[t, g].detach()) / n
    gx, gw, gb = torch.autograd.grad(
        xn, [x, codebook.norm_weight, codebook.norm_bias], grad_outputs=grad_xn
    )

    expected_loss = torch.zeros((), dtype=torch.float64)
    if recon:
        expected_loss += lam * (q - xn.detach()).pow(2).sum(-1).mean(0).sum()
    if commit:
        expected_loss += lam * beta * (xn.detach() - q).pow(2).sum(-1).mean(0).sum()
    torch.testing.assert_close(out.loss, expected_loss)
    torch.testing.assert_close(out.output.reshape(n, groups, 8), q)
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(codebook.vectors.grad, grad_codes)
    torch.testing.assert_close(codebook.norm_weight.grad, gw)
    torch.testing.assert_close(codebook.norm_bias.grad, gb)


def test_reconstruction_loss_passes_gradcheck_in_the_codes() -> None:
    # The input sits behind a stop-gradient in this loss, so only the codes are checked.
    codebook = make_codebook(torch.float64, loss="aeloss", recon_weight=0.5)
    params = dict(codebook.named_parameters())
    x = torch.randn(6, 16, dtype=torch.float64)

    def loss(codes: torch.Tensor) -> torch.Tensor:
        return functional_call(codebook, {**params, "vectors": codes}, (x,)).loss

    codes = params["vectors"].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (codes,))


def test_base_variant_returns_zero_loss_and_vqvae_keeps_task_gradient_off_codes() -> None:
    base = make_codebook(loss="base")
    assert base(torch.randn(4, 16)).loss.item() == 0.0
    vq = make_codebook(loss="vqvae", recon_weight=0.0)
    out = vq(torch.randn(4, 16))
    out.output.sum().backward()
    assert vq.vectors.grad is None or not vq.vectors.grad.any()


def test_two_models_keep_their_own_loss_variant() -> None:
    a, b = make_codebook(loss="base"), make_codebook(loss="aeloss")
    x = torch.randn(4, 16)
    assert a(x).loss.item() == 0.0 and b(x).loss.item() > 0.0
    assert a(x).loss.item() == 0.0

"""A slow, obvious codebook, kept to check the fast one against and to time it.

It works the way the original implementation does: a Python loop over groups; per group the full
``tokens x codes`` score matrix, ``topk`` over it and a gather of the ``k`` code vectors, inside
an autograd function whose backward passes the gradient straight through to the input and
computes the codes' gradients with ``torch.autograd.grad`` (the reconstruction term is injected
there, not taken from a loss). Unlike the original, its loss terms are defined exactly as in
:class:`~codebook_features.codebook.Codebook` (means over tokens, weighted by lambda), so the
two give the same values and gradients.

The returned ``loss`` is for reading only: its gradient is already part of the backward pass.
Inputs must be finite (the fast layer's handling of NaN and inf is checked on its own).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from codebook_features.codebook.config import CodebookConfig
from codebook_features.codebook.layer import Codebook, CodebookOutput


def reference_forward(codebook: Codebook, x: Tensor) -> CodebookOutput:
    """Same contract as ``codebook(x)``, without hooks, exclusions or statistics."""
    cfg = codebook.config
    lead = codebook.leading_shape(x)
    flat = x.reshape(-1, cfg.groups, cfg.group_dim).to(codebook.vectors.dtype)
    outputs, ids, loss = [], [], flat.new_zeros(())
    for g in range(cfg.groups):
        xg = flat[:, g]
        if cfg.normalize_input:
            xg = F.layer_norm(
                xg, (cfg.group_dim,), codebook.norm_weight[g], codebook.norm_bias[g], 1e-5
            )
        out, top = _Snap.apply(xg, codebook.vectors[g], cfg)
        outputs.append(out)
        ids.append(top)
        loss = loss + _loss_value(cfg, xg.detach(), out.detach())
    output = torch.stack(outputs, 1).reshape(x.shape).to(x.dtype)
    codes_out = torch.stack(ids, 1).reshape(*lead, cfg.groups, cfg.k)
    return CodebookOutput(output, codes_out, loss)


def _scores(x: Tensor, codes: Tensor, similarity: str) -> Tensor:
    if similarity == "euclidean":
        return -torch.cdist(x, codes)
    scores = x @ codes.T / codes.norm(dim=-1)
    if similarity == "cosine":
        scores = scores / x.norm(dim=-1, keepdim=True)
    return scores


def _loss_value(cfg: CodebookConfig, x: Tensor, y: Tensor) -> Tensor:
    total = x.new_zeros(())
    if cfg.terms.reconstruction:
        total = total + ((y - x) ** 2).sum(-1).mean()
    if cfg.terms.commitment:
        total = total + cfg.commitment * ((x - y) ** 2).sum(-1).mean()
    return cfg.recon_weight * total


class _Snap(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, codes: Tensor, cfg: CodebookConfig) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        top = _scores(x, codes, cfg.similarity).topk(cfg.k, dim=-1).indices
        with torch.enable_grad():
            gathered = F.embedding(top, codes)
            y = gathered.mean(-2) if cfg.aggregate == "mean" else gathered.sum(-2)
        ctx.save_for_backward(x, codes, y)
        ctx.cfg = cfg
        ctx.mark_non_differentiable(top)
        return y.detach().clone(), top

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _grad_ids: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        x, codes, y = ctx.saved_tensors
        cfg, terms = ctx.cfg, ctx.cfg.terms
        grad_x = grad
        grad_codes = torch.zeros_like(codes)
        with torch.enable_grad():
            if terms.task_gradient_to_codes:
                grad_codes += torch.autograd.grad(y, codes, grad, retain_graph=True)[0]
            if terms.reconstruction:
                mse = ((y - x.detach()) ** 2).sum(-1).mean()
                grad_codes += cfg.recon_weight * torch.autograd.grad(mse, codes)[0]
        if terms.commitment:
            scale = 2 * cfg.recon_weight * cfg.commitment / x.shape[0]
            grad_x = grad + scale * (x - y.detach())
        return grad_x, grad_codes, None

"""A slow, obvious codebook forward pass, kept to check the fast one against.

It does what the original implementation does: a Python loop over groups, and per group the full
``tokens x codes`` score matrix, ``topk`` over it and a gather of the ``k`` code vectors. It reads
the parameters of a :class:`Codebook`, so both can run on the same weights. The tests compare
the two, and ``benchmarks/`` times them against each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from codebook_features.codebook.layer import Codebook, CodebookOutput


def reference_forward(codebook: Codebook, x: Tensor) -> CodebookOutput:
    """Same contract as ``codebook(x)``, without hooks, exclusions or statistics."""
    cfg = codebook.config
    lead = codebook.leading_shape(x)
    flat = x.reshape(-1, cfg.groups, cfg.group_dim).to(codebook.codes.dtype)
    outputs, ids, loss = [], [], flat.new_zeros(())
    terms = cfg.terms
    for g in range(cfg.groups):
        xg = flat[:, g]
        if cfg.normalize_input:
            xg = F.layer_norm(
                xg, (cfg.group_dim,), codebook.norm_weight[g], codebook.norm_bias[g], 1e-5
            )
        codes = codebook.codes[g]
        with torch.no_grad():
            if cfg.similarity == "euclidean":
                scores = -torch.cdist(xg, codes)
            elif cfg.similarity == "inner_product":
                scores = xg @ codes.T / codes.norm(dim=-1)
            else:
                scores = xg @ codes.T / (codes.norm(dim=-1) * xg.norm(dim=-1, keepdim=True))
            top = scores.topk(cfg.k, dim=-1).indices
        gathered = F.embedding(top, codes)
        quantized = gathered.mean(1) if cfg.aggregate == "mean" else gathered.sum(1)
        value = quantized if terms.task_gradient_to_codes else quantized.detach()
        outputs.append(value + (xg - xg.detach()))
        if terms.reconstruction:
            loss = loss + ((quantized - xg.detach()) ** 2).sum(-1).mean()
        if terms.commitment:
            loss = loss + cfg.commitment * ((xg - quantized.detach()) ** 2).sum(-1).mean()
        ids.append(top)
    output = torch.stack(outputs, 1).reshape(x.shape).to(x.dtype)
    codes_out = torch.stack(ids, 1).reshape(*lead, cfg.groups, cfg.k)
    return CodebookOutput(output, codes_out, cfg.recon_weight * loss)

"""A small TopK sparse autoencoder, the baseline that codes are compared with.

``encode``: ReLU of an affine map of the (normalized) input, then only the ``k`` largest
latents of each token are kept; ``decode``: a linear map back, plus a bias. Inputs are
normalized with the training data's per-dimension mean and one scale (the root mean square of
the centred data), so the same settings suit any site. Training is plain Adam on the mean
squared error of the normalized reconstruction, with the decoder's rows kept at unit norm; it
is seeded (initialization and batches), so the same data and settings give the same SAE.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codebook_features.errors import CodebookError
from codebook_features.search.config import SAEConfig


class TopKSAE(nn.Module):
    """``x -> topk_k(relu((x - mean) / scale @ W_enc + b_enc)) @ W_dec + b_dec``, rescaled."""

    def __init__(self, width: int, latents: int, k: int, generator: torch.Generator) -> None:
        super().__init__()
        if not 1 <= k <= latents:
            raise CodebookError(f"a TopK SAE needs 1 <= k <= latents, got k={k}, {latents}")
        self.k = k
        decoder = torch.randn(latents, width, generator=generator)
        decoder /= decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        self.W_enc = nn.Parameter(decoder.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(latents))
        self.b_dec = nn.Parameter(torch.zeros(width))
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(()))

    def normalize(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.scale

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(values, indices)``, each ``(tokens, k)``: the kept latents of each token
        (values ``>= 0``; a kept latent may be 0 when fewer than k are positive)."""
        return self._encode_normalized(self.normalize(x))

    def _encode_normalized(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        return pre.topk(self.k, dim=1, sorted=False)

    def dense(self, x: Tensor) -> Tensor:
        """``(tokens, latents)`` latent activations, zero outside each token's top k."""
        values, indices = self.encode(x)
        out = torch.zeros(x.shape[0], self.W_dec.shape[0])
        return out.scatter_(1, indices, values)

    def _decode_normalized(self, values: Tensor, indices: Tensor) -> Tensor:
        # the k decoder rows weighted by their values: embedding_bag's backward sums each
        # row's gradient in an order that does not depend on the threads (training must
        # repeat exactly), and it costs k rows per token, not all of the latents
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum") + (
            self.b_dec
        )

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x``, in the input's own scale."""
        return self._decode_normalized(*self.encode(x)) * self.scale + self.mean


def train_sae(acts: np.ndarray, config: SAEConfig) -> TopKSAE:
    """A TopK SAE trained on ``acts`` ``(tokens, width)`` (any float type; batches are drawn
    from it and converted one at a time, so a memory-mapped array is never loaded whole)."""
    if acts.ndim != 2 or len(acts) < 2:
        raise CodebookError(f"an SAE needs (tokens >= 2, width) activations, got {acts.shape}")
    generator = torch.Generator().manual_seed(config.seed)
    sae = TopKSAE(acts.shape[1], config.latents, config.k, generator)
    mean, square = _moments(acts)
    sae.mean.copy_(mean)
    sae.scale.copy_((square - mean.pow(2)).sum().div(acts.shape[1]).clamp_min(1e-12).sqrt())
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
    batch = min(config.batch_size, len(acts))
    for _ in range(config.steps):
        picks = torch.randint(len(acts), (batch,), generator=generator).sort().values
        x = sae.normalize(torch.from_numpy(np.asarray(acts[picks.numpy()], np.float32)))
        values, indices = sae._encode_normalized(x)
        loss = (sae._decode_normalized(values, indices) - x).pow(2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return sae.eval().requires_grad_(False)


def fraction_of_variance_unexplained(sae: TopKSAE, acts: np.ndarray, chunk: int = 8192) -> float:
    """``sum |x - sae(x)|^2 / sum |x - mean(x)|^2`` over ``acts``: 0 is perfect, 1 is no
    better than predicting the mean."""
    mean, _ = _moments(acts)
    error = total = 0.0
    with torch.no_grad():
        for start in range(0, len(acts), chunk):
            x = torch.from_numpy(np.asarray(acts[start : start + chunk], np.float32))
            error += float((sae(x) - x).double().pow(2).sum())
            total += float((x - mean).double().pow(2).sum())
    return error / total if total else float("nan")


def _moments(acts: np.ndarray, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and mean square, in float64 over chunks."""
    total = np.zeros(acts.shape[1])
    square = np.zeros(acts.shape[1])
    for start in range(0, len(acts), chunk):
        x = np.asarray(acts[start : start + chunk], np.float64)
        total += x.sum(0)
        square += (x * x).sum(0)
    count = max(len(acts), 1)
    return torch.from_numpy(total / count).float(), torch.from_numpy(square / count).float()

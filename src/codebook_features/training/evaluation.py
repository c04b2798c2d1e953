"""Evaluation: LM loss, token accuracy and perplexity; per-site codebook statistics; and the
same model's loss with its codebooks disabled. Sums are combined over processes."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from codebook_features.attach.model import CodebookModel
from codebook_features.codebook.distributed import all_reduce_
from codebook_features.settings.base import Record

SITE_STATISTICS = ("mse", "fvu", "active_codes", "dead_fraction", "entropy")
"""The codebook statistics reported per site (see ``CodeStats.summary``)."""


class SiteMetrics(Record):
    """How one site's codebook did on the validation blocks."""

    mse: float
    """Squared reconstruction error per token and group."""
    fvu: float
    """Fraction of variance unexplained: the error relative to the (normalised) input's
    variance; unlike ``mse`` it does not grow with the activations' scale."""
    active_codes: float
    """Codes used at least once."""
    dead_fraction: float
    """Share of codes never used."""
    entropy: float
    """Entropy (nats) of code usage, averaged over groups."""


class EvalMetrics(Record):
    """One evaluation; :meth:`to_dict` is the ``val`` row of ``metrics.jsonl`` (less split and
    step). The codebook fields are ``None`` for a model without codebooks."""

    loss: float
    """LM loss (nats per token)."""
    accuracy: float
    """Share of next tokens predicted right (argmax)."""
    perplexity: float
    """``exp(loss)``."""
    sites: dict[str, SiteMetrics] | None = None
    """Codebook statistics per site."""
    without_codebooks_loss: float | None = None
    """The same model's loss with its codebooks disabled."""
    without_codebooks_accuracy: float | None = None
    """... and its accuracy."""
    without_codebooks_perplexity: float | None = None
    """... and its perplexity."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, without the fields that are ``None``."""
        return self.model_dump(mode="json", exclude_none=True)


@torch.no_grad()
def lm_sums(module: torch.nn.Module, blocks: Tensor, batch_size: int, device: Any) -> Tensor:
    """``[summed token loss, tokens, correct tokens]`` over ``blocks`` (this process's share)."""
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size].to(device)
        logits = module(input_ids=batch, use_cache=False).logits[:, :-1].float()
        labels = batch[:, 1:]
        sums[0] += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
        ).double()
        sums[1] += labels.numel()
        sums[2] += (logits.argmax(-1) == labels).sum().double()
    return sums


def _lm_metrics(sums: Tensor) -> tuple[float, float, float]:
    """Loss, accuracy and perplexity from :func:`lm_sums`."""
    loss = float(sums[0] / sums[1].clamp_min(1))
    return loss, float(sums[2] / sums[1].clamp_min(1)), math.exp(min(loss, 50.0))


def evaluate(
    module: torch.nn.Module,
    cbm: CodebookModel | None,
    blocks: Tensor,
    batch_size: int,
    device: Any,
) -> EvalMetrics:
    """Metrics of ``module`` on ``blocks`` (already this process's share); every process gets
    the same, combined result."""
    was_training = module.training
    module.eval()
    try:
        if cbm is not None:
            for name in cbm.sites:
                cbm.codebook(name).reset_stats()
        loss, accuracy, perplexity = _lm_metrics(
            all_reduce_(lm_sums(module, blocks, batch_size, device))
        )
        metrics = EvalMetrics(loss=loss, accuracy=accuracy, perplexity=perplexity)
        if cbm is not None:
            sites = {}
            for name in cbm.sites:
                stats = cbm.codebook(name).stats
                stats.all_reduce()
                summary = stats.summary()
                sites[name] = SiteMetrics(**{k: summary[k] for k in SITE_STATISTICS})
            metrics.sites = sites
            with cbm.disabled():
                plain = all_reduce_(lm_sums(module, blocks, batch_size, device))
            (
                metrics.without_codebooks_loss,
                metrics.without_codebooks_accuracy,
                metrics.without_codebooks_perplexity,
            ) = _lm_metrics(plain)
            for name in cbm.sites:
                cbm.codebook(name).reset_stats()
    finally:
        module.train(was_training)
    return metrics


def code_counts(
    cbm: CodebookModel, blocks: Tensor, batch_size: int, device: Any
) -> dict[str, Tensor]:
    """How often each code of each site fires on ``blocks`` (for usage plots). Runs in eval mode:
    in training mode the calls would count as training calls (and could refresh codes)."""
    was_training = cbm.training
    cbm.eval()
    for name in cbm.sites:
        cbm.codebook(name).reset_stats()
    try:
        lm_sums(cbm, blocks, batch_size, device)
    finally:
        cbm.train(was_training)
    counts = {}
    for name in cbm.sites:
        stats = cbm.codebook(name).stats
        stats.all_reduce()
        counts[name] = stats.counts.detach().cpu().clone()
        stats.reset()
    return counts

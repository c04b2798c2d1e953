"""PNG plots of a run: loss curves, and how evenly each site uses its codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def plot_losses(rows: list[dict[str, Any]], path: Path) -> None:
    """Stacked panels, each on its own scale: the LM loss (train, validation, validation with
    the codebooks disabled); the codebook loss (lambda times the summed per-site MSE, which
    grows with the activations' scale); and each site's fraction of variance unexplained,
    which shows reconstruction quality whatever the scale."""
    train = [r for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "val"]
    with_codebooks = any(r.get("codebook_loss") for r in train)
    sites = sorted({name for r in val for name in r.get("sites") or {}})
    panels = 1 + with_codebooks + bool(sites)
    fig, axes = plt.subplots(panels, 1, figsize=(7, 1.2 + 2.6 * panels), sharex=True, squeeze=False)
    lm, *others = axes[:, 0]
    if train:
        lm.plot(_steps(train), [r["lm_loss"] for r in train], label="train", alpha=0.6)
    if val:
        lm.plot(_steps(val), [r["loss"] for r in val], "o-", label="validation")
        if any("without_codebooks_loss" in r for r in val):
            disabled = [r for r in val if "without_codebooks_loss" in r]
            lm.plot(
                _steps(disabled),
                [r["without_codebooks_loss"] for r in disabled],
                "s--",
                label="validation, codebooks disabled",
            )
    lm.set(ylabel="LM loss (nats per token)", title="Language-model loss")
    if with_codebooks:
        cb = others.pop(0)
        cb.plot(_steps(train), [r["codebook_loss"] for r in train], color="tab:red", alpha=0.7)
        cb.set(ylabel="codebook loss", title="Codebook loss (lambda x summed per-site MSE)")
    if sites:
        fvu = others.pop(0)
        for name in sites:
            seen = [r for r in val if name in (r.get("sites") or {})]
            fvu.plot(
                _steps(seen),
                [r["sites"][name]["fvu"] for r in seen],
                "o-",
                ms=3,
                label=name if len(sites) <= 12 else None,
            )
        fvu.set(ylabel="FVU", title="Fraction of variance unexplained, per site (validation)")
        if len(sites) <= 12:
            fvu.legend(fontsize=7, ncol=2)
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
    if lm.get_legend_handles_labels()[0]:
        lm.legend(fontsize=8)
    axes[-1, 0].set(xlabel="step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _steps(rows: list[dict[str, Any]]) -> list[int]:
    return [r["step"] for r in rows]


def plot_code_usage(counts: dict[str, torch.Tensor], path: Path) -> None:
    """Per site: share of activations taken by each code, codes sorted from most used."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, table in counts.items():
        flat = table.double().flatten()
        total = float(flat.sum())
        if total == 0:
            continue
        share = (flat.sort(descending=True).values / total).numpy()
        dead = float((flat == 0).double().mean())
        ax.plot(range(1, len(share) + 1), share, label=f"{name} ({dead:.0%} dead)")
    ax.set(
        xscale="log", yscale="log", xlabel="code rank (all groups)", ylabel="share of activations"
    )
    if len(counts) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""PNG plots of a run: loss curves, and how evenly each site uses its codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def plot_losses(rows: list[dict[str, Any]], path: Path) -> None:
    train = [r for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "val"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(
            [r["step"] for r in train],
            [r["lm_loss"] for r in train],
            label="train LM loss",
            alpha=0.6,
        )
        if any(r.get("codebook_loss") for r in train):
            ax.plot(
                [r["step"] for r in train],
                [r["codebook_loss"] for r in train],
                label="train codebook loss",
                alpha=0.6,
            )
    if val:
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="val loss")
        if "without_codebooks_loss" in val[0]:
            ax.plot(
                [r["step"] for r in val],
                [r["without_codebooks_loss"] for r in val],
                "s--",
                label="val loss, codebooks disabled",
            )
    ax.set(xlabel="step", ylabel="loss (nats per token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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

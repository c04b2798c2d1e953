"""Train a codebook bottleneck on synthetic clustered activations, end to end, on the CPU.

The data are activations of 4 groups (think: attention heads), each drawn near one of 64
hidden centres per group. A codebook with 4 groups x 256 codes, k = 2, learns to reconstruct
them three ways: from random codes; from random codes with dead-code refresh; and after k-means
initialisation (with refresh). It writes ``metrics.json`` and ``training.png`` to
``--output_dir`` and prints how much variance each leaves unexplained on held-out tokens.

    python examples/codebook_layer.py --output_dir runs/codebook-layer
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

from codebook_features import Codebook, CodebookConfig

GROUPS, GROUP_DIM, CENTRES = 4, 16, 64


def make_data(tokens: int, seed: int) -> torch.Tensor:
    """Tokens near fixed hidden centres (the same for every seed); ``seed`` picks the tokens."""
    centres = torch.randn(GROUPS, CENTRES, GROUP_DIM, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(seed)
    which = torch.randint(CENTRES, (tokens, GROUPS), generator=generator)
    points = 2 * centres[torch.arange(GROUPS), which]  # (tokens, groups, dim)
    points = points + 0.1 * torch.randn(points.shape, generator=generator)
    return points.reshape(tokens, GROUPS * GROUP_DIM)


def train(codebook: Codebook, data: torch.Tensor, steps: int, label: str) -> list[dict]:
    optimizer = torch.optim.Adam(codebook.parameters(), lr=3e-3)
    history = []
    codebook.train()
    for step in tqdm(range(steps), desc=label, leave=False, disable=None):  # quiet in logs
        batch = data[torch.randint(len(data), (512,))]
        codebook.reset_stats()
        out = codebook(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        summary = codebook.stats.summary()
        history.append(
            {
                "step": step,
                "loss": out.loss.item(),
                "fvu": summary["fvu"],
                "active_codes": summary["active_codes"],
            }
        )
    return history


def evaluate(codebook: Codebook, data: torch.Tensor) -> dict:
    codebook.eval()
    codebook.reset_stats()
    with torch.no_grad():
        codebook(data)
    return codebook.stats.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=Path("runs/codebook-layer"))
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)
    train_data, test_data = make_data(20_000, seed=1), make_data(4_000, seed=2)
    start = time.perf_counter()
    runs = {}
    variants = (
        ("random init", False, 0),
        ("+ dead-code refresh", False, 50),
        ("k-means init", True, 50),
    )
    for label, use_kmeans, window in variants:
        config = CodebookConfig(
            dim=GROUPS * GROUP_DIM, num_codes=256, k=2, groups=GROUPS, dead_code_window=window
        )
        torch.manual_seed(0)
        codebook = Codebook(config)
        if use_kmeans:
            codebook.init_kmeans(train_data[:8192], iters=10, seed=0)
        before = evaluate(codebook, test_data)
        history = train(codebook, train_data, args.steps, label)
        runs[label] = {"before": before, "after": evaluate(codebook, test_data), "history": history}

    args.output_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        label: {k: v for k, v in run.items() if k != "history"} | {"curve": run["history"]}
        for label, run in runs.items()
    }
    tmp = args.output_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps({"runs": metrics}, indent=2))
    os.replace(tmp, args.output_dir / "metrics.json")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, run in runs.items():
        steps = [h["step"] for h in run["history"]]
        axes[0].plot(steps, [h["fvu"] for h in run["history"]], label=label)
        axes[1].plot(steps, [h["active_codes"] for h in run["history"]], label=label)
    axes[0].set(xlabel="step", ylabel="fraction of variance unexplained", yscale="log")
    axes[1].set(xlabel="step", ylabel="codes used in the batch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.output_dir / "training.png", dpi=120)

    print(f"codebook layer demo ({time.perf_counter() - start:.0f} s), 4,000 held-out tokens:")
    for label, run in runs.items():
        b, a = run["before"], run["after"]
        print(
            f"  {label:>13}: FVU {b['fvu']:.3f} -> {a['fvu']:.4f}, "
            f"dead codes {b['dead_fraction']:.0%} -> {a['dead_fraction']:.0%}"
        )
    print(f"wrote {args.output_dir / 'metrics.json'} and {args.output_dir / 'training.png'}")


if __name__ == "__main__":
    main()

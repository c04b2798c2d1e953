"""What codebooks add to a training step, and where that time goes.

A training step (forward, backward, AdamW) of the TokFSM transformer (GPT-NeoX, 4 layers x 128,
4 heads, MLP 512; batches of 64 sequences of 64 tokens) without codebooks, against the same
model with codebooks on every layer's attention heads and MLP output (k = 1, C = 1,000, the
paper's TokFSM setting), taking turns over several rounds so that a slow phase of a shared
machine does not land on one side only. Then one profile of the codebook step, grouped by
operator, names what the difference is spent on. Results go to
``benchmarks/results/train_step_<device>.json`` and the table in ``benchmarks/README.md``.

    python benchmarks/bench_train_step.py
    python benchmarks/bench_train_step.py --rounds 3 --steps 5     # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from machine import cpu_name
from readme import replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BATCH, SEQ, VOCAB = 64, 64, 128
MODEL = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 256,
    "vocab_size": VOCAB,
}


def build(codebooks: bool, device: str):  # type: ignore[no-untyped-def]
    import torch
    import transformers

    from codebook_features import CodebookModel, CodebookModelConfig

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.GPTNeoXConfig(**MODEL))
    if codebooks:
        config = CodebookModelConfig(sites=["attn_heads", "mlp"], num_codes=1000, k=1)
        model = CodebookModel(model, config)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer


def step_fn(model, optimizer, device: str):  # type: ignore[no-untyped-def]
    import torch

    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator).to(device)

    def step() -> None:
        out = model(batch, labels=batch)
        loss = out.loss
        if hasattr(model, "codebook_loss"):
            loss = loss + model.codebook_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(step, steps: int, device: str) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(steps):
        sync(device)
        started = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - started)
    return times


def profile(step, device: str, rows: int = 12) -> list[dict]:  # type: ignore[no-untyped-def]
    """The operators the codebook step spends its time in, by self time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            step()
        sync(device)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1000 / 3, 2)}
        for e in events[:rows]
    ]


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and side")
    parser.add_argument(
        "--original",
        action="store_true",
        help="also time the original package's step (0.1.2, in benchmarks/.original-venv), "
        "one process per round, taking turns with ours",
    )
    args = parser.parse_args()
    plain, with_codes = build(False, args.device), build(True, args.device)
    steps = {
        "without": step_fn(*plain, args.device),
        "with": step_fn(*with_codes, args.device),
    }
    for step in steps.values():  # warm-up (and the top-k kernel's first build)
        time_steps(step, 2, args.device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    original: list[dict] = []
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name] += time_steps(step, args.steps, args.device)
        if args.original and args.device == "cpu":
            from original import run

            spec = {"model_config": MODEL, "batch": BATCH, "seq": SEQ, "rounds": 1}
            original.append(run("step", **spec, steps=args.steps))
    median = {name: statistics.median(t) for name, t in times.items()}
    results = {
        "machine": cpu_name() if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": args.device,
        "batch": [BATCH, SEQ],
        "step_without_s": round(median["without"], 4),
        "step_with_s": round(median["with"], 4),
        "ratio": round(median["with"] / median["without"], 3),
        **(
            {
                "original_without_s": round(statistics.median(o["without"] for o in original), 4),
                "original_with_s": round(statistics.median(o["with"] for o in original), 4),
            }
            if original
            else {}
        ),
        "profile_with": profile(steps["with"], args.device),
        "profile_without": profile(steps["without"], args.device),
    }
    if original:
        results["original_ratio"] = round(
            results["original_with_s"] / results["original_without_s"], 3
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"train_step_{args.device}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_readme(results)
    print(json.dumps({k: v for k, v in results.items() if not k.startswith("profile")}, indent=2))


def write_readme(r: dict) -> None:
    lines = [
        f"Measured on {r['machine']}, {r['threads']} threads, torch {r['torch']} "
        f"({r['device']}), batches of {r['batch'][0]} x {r['batch'][1]} tokens:",
        "",
        "| training step | seconds | ratio | goal |",
        "|---|---|---|---|",
        f"| without codebooks | {r['step_without_s']} | | |",
        f"| with codebooks (attention heads + MLP, k = 1, C = 1,000) | {r['step_with_s']} "
        f"| {r['ratio']:.2f}x | <= 1.2x |",
        *(
            [
                f"| original 0.1.2 without codebooks (transformers 4.35.2) | "
                f"{r['original_without_s']} | | |",
                f"| original 0.1.2 with its TokFSM codebooks | {r['original_with_s']} | "
                f"{r['original_ratio']:.2f}x | |",
            ]
            if "original_ratio" in r
            else []
        ),
        "",
        "Operators by self time per step, with codebooks | without:",
        "",
        "| with codebooks | ms | without | ms |",
        "|---|---|---|---|",
    ]
    for a, b in zip(r["profile_with"], r["profile_without"], strict=False):
        lines.append(
            f"| `{a['op']}` | {a['self_ms_per_step']} | `{b['op']}` | {b['self_ms_per_step']} |"
        )
    replace_section(README, "train-step", "\n".join(lines))


if __name__ == "__main__":
    main()

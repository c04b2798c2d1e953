"""Runs inside the original package's own environment (see ``original.py``): times its
codebook layer, forward + backward, at the size ``bench_codebook.py`` times ours (``layer``),
or its training step without and with codebooks at the size ``bench_train_step.py`` times
ours (``step``).

The original (codebook-features 0.1.2) is a ``GroupCodebookLayer`` of ``CodebookLayer``s,
one per group, each a LayerNorm and an ``InnerProductSnapFunction`` whose backward passes the
gradient straight through and, with the ``aeloss`` its training uses (and ours is timed with),
adds the reconstruction gradient to the codes; its ``CodebookModel`` sets that loss, so for a
lone layer it is set here. It is imported from that environment (run isolated, ``python -I``),
and checked to be that release. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path


def _proc_status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def measure(groups: int, group_dim: int, k: int, tokens: int, num_codes: int, reps: int) -> dict:
    import torch
    from codebook_features.models import (
        BaseSnapFunction,
        GroupCodebookLayer,
        InnerProductSnapFunction,
    )

    BaseSnapFunction.loss = "aeloss"  # what its CodebookModel sets from its config
    torch.manual_seed(0)
    dim = groups * group_dim
    layer = GroupCodebookLayer(
        dim=dim,
        num_codes=num_codes,
        key="bench",
        num_codebooks=groups,
        snap_fn=InnerProductSnapFunction,
        kcodes=k,
    ).train()
    x = torch.randn(1, tokens, dim, requires_grad=True)
    upstream = torch.randn(1, tokens, dim)

    def step() -> None:
        (layer(x) * upstream).sum().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)

    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set size
    before = _proc_status("VmRSS")
    step()
    peak = _proc_status("VmHWM") - before
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "all_seconds": times, "peak_mib": peak / 2**20}


def measure_step(model_config: dict, batch: int, seq: int, rounds: int, steps: int) -> dict:
    """Median step (forward, backward, AdamW) of the GPT-NeoX without codebooks and with the
    original's TokFSM codebooks (its ``fsm_main.yaml``: group codebooks before the attention
    output projection, one per head, and a codebook on the MLP; k = 1, C = 1,000), in turns."""
    import torch
    import transformers
    from codebook_features.models import CodebookModelConfig, GPTNeoXCodebookModel

    def build(codebooks: bool):  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        config = transformers.GPTNeoXConfig(**model_config)
        model = transformers.AutoModelForCausalLM.from_config(config)
        if codebooks:
            cb_config = CodebookModelConfig(
                codebook_at=["attn_preproj", "mlp"],
                codebook_type=["group", "vanilla"],
                num_codebooks=[-1, 1],
                k_codebook=[1, 1],
                num_codes=1000,
                layers_to_snap=list(range(model_config["num_hidden_layers"])),
                similarity_metric="inner_product",
                loss="aeloss",
            )
            model = GPTNeoXCodebookModel(cb_config, model)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model_config["vocab_size"], (batch, seq), generator=generator)

        def step() -> float:
            start = time.perf_counter()
            out = model(input_ids=ids, labels=ids)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            return time.perf_counter() - start

        return step

    sides = {"without": build(False), "with": build(True)}
    for step in sides.values():
        step(), step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, step in sides.items():
            times[name] += [step() for _ in range(steps)]
    return {name: statistics.median(t) for name, t in times.items()}


def _check_release() -> None:
    import importlib.metadata

    import codebook_features

    version = importlib.metadata.version("codebook-features")
    if version != "0.1.2" or "original-venv" not in codebook_features.__file__:
        raise SystemExit(f"not the original: codebook-features {version} from {codebook_features}")


def main() -> None:
    _check_release()
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["layer", "step"])
    parser.add_argument("--spec", required=True, help="the measurement's sizes, as JSON")
    a = parser.parse_args()
    spec = json.loads(a.spec)
    print(json.dumps(measure(**spec) if a.mode == "layer" else measure_step(**spec)))


if __name__ == "__main__":
    main()

"""Runs inside the original package's own environment (see ``original.py``): times its
codebook layer, forward + backward, at the size ``bench_codebook.py`` times ours.

The original (codebook-features 0.1.2) is a ``GroupCodebookLayer`` of ``CodebookLayer``s,
one per group, each a LayerNorm and an ``InnerProductSnapFunction`` whose backward passes the
gradient straight through and adds the reconstruction gradient to the codes. It is imported
from that environment; nothing of this project is. Prints one JSON line.
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
    from codebook_features.models import GroupCodebookLayer, InnerProductSnapFunction

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


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("groups", "group_dim", "k", "tokens", "codes", "reps"):
        parser.add_argument(f"--{name}", type=int, required=True)
    a = parser.parse_args()
    print(json.dumps(measure(a.groups, a.group_dim, a.k, a.tokens, a.codes, a.reps)))


if __name__ == "__main__":
    main()

"""Forward + backward time and peak memory of the Codebook layer against the naive reference.

Each measurement runs in a fresh process, so peak memory is that of one implementation alone,
and the implementations take turns over several rounds, so a slow phase of a shared machine
does not land on one of them only. Where our search goes through cheap bfloat16 scores, ours is
also timed with the search held to float32 (``ours_float32``); on CUDA, ``ours`` is timed with
the bfloat16 search turned on (``CODEBOOK_FEATURES_BF16_SEARCH_CUDA``). Results go to
``benchmarks/results/codebook_<device>.json`` and the table in ``benchmarks/README.md`` is
rewritten from them.

    python benchmarks/bench_codebook.py                 # both sizes, CPU
    python benchmarks/bench_codebook.py --codes 4096    # one size
    python benchmarks/bench_codebook.py --device cuda
    python benchmarks/bench_codebook.py --codes 4096 --original --busy 1   # a shared machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name
from readme import replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
GROUPS, GROUP_DIM, K, TOKENS = 16, 64, 8, 8192


def measure(impl: str, num_codes: int, reps: int, device: str) -> dict:
    """Runs in the child process: time ``reps`` forward+backward passes after one warm-up."""
    import torch

    from codebook_features import Codebook, CodebookConfig
    from codebook_features.codebook import screened
    from codebook_features.codebook.reference import reference_forward

    if impl == "ours_float32":  # the same layer with its search held to float32 scores
        os.environ[screened.DISABLE_ENV] = "1"
    elif device.startswith("cuda"):
        os.environ[screened.CUDA_ENV] = "1"
    torch.manual_seed(0)
    config = CodebookConfig(dim=GROUPS * GROUP_DIM, num_codes=num_codes, k=K, groups=GROUPS)
    codebook = Codebook(config, device=device)
    x = torch.randn(TOKENS, config.dim, device=device, requires_grad=True)
    upstream = torch.randn(TOKENS, config.dim, device=device)
    forward = codebook if impl != "reference" else lambda t: reference_forward(codebook, t)

    def step() -> None:
        out = forward(x)
        ((out.output * upstream).sum() + out.loss).backward()
        x.grad = None
        codebook.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    before = _reset_peak(device)
    step()
    sync()
    peak = _peak(device) - before
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "all_seconds": times, "peak_mib": peak / 2**20}


def _reset_peak(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set size
    return _proc_status("VmRSS")


def _peak(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated()
    return _proc_status("VmHWM")


def _proc_status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def run_child(impl: str, num_codes: int, reps: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--codes", str(num_codes)]
    cmd += ["--reps", str(reps), "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine(device: str) -> dict:
    import torch

    info = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def screened_search() -> bool:
    """Whether our search goes through cheap bfloat16 scores on this CPU."""
    from codebook_features.codebook import screened

    return screened.native_bfloat16()


def write_readme_table(results: list[dict], info: dict) -> None:
    rows = [
        "| codes C | ours fwd+bwd | ours, float32 search | reference fwd+bwd | speed-up "
        "| ours peak | reference peak | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        float32 = r.get("ours_float32", {}).get("seconds")
        rows.append(
            f"| {r['num_codes']:,} | {r['ours']['seconds']:.2f} s | "
            + (f"{float32:.2f} s | " if float32 else "- | ")
            + f"{r['reference']['seconds']:.2f} s | {r['speedup']:.1f}x | "
            f"{r['ours']['peak_mib']:,.0f} MiB | {r['reference']['peak_mib']:,.0f} MiB | "
            f"{100 * r['memory_ratio']:.1f}% |"
        )
    where = f"{info['cpu']}, {info['threads']} threads" if info["device"] == "cpu" else info["gpu"]
    originals = [r for r in results if "original" in r]
    if originals:
        rows += [
            "",
            "| codes C | ours fwd+bwd | original 0.1.2 fwd+bwd | speed-up | ours peak "
            "| original peak |",
            "|---|---|---|---|---|---|",
        ]
        for r in originals:
            rows.append(
                f"| {r['num_codes']:,} | {r['ours']['seconds']:.2f} s | "
                f"{r['original']['seconds']:.2f} s | {r['vs_original']:.1f}x | "
                f"{r['ours']['peak_mib']:,.0f} MiB | {r['original']['peak_mib']:,.0f} MiB |"
            )
    table = "\n".join(
        [f"Measured on {where}, torch {info['torch']} ({info['device']}):", "", *rows]
    )
    replace_section(README, "results", table)


def write_busy_table(results: list[dict], info: dict) -> None:
    rows = [
        f"Measured on {info['cpu']}, {info['threads']} threads, torch {info['torch']}, with "
        f"{info['busy_processes']} competing busy process(es) running throughout:",
        "",
        "| codes C | ours fwd+bwd | ours, float32 search | reference fwd+bwd "
        "| original 0.1.2 fwd+bwd | vs original |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        original = r.get("original", {}).get("seconds")
        float32 = r.get("ours_float32", {}).get("seconds")
        rows.append(
            f"| {r['num_codes']:,} | {r['ours']['seconds']:.2f} s | "
            + (f"{float32:.2f} s | " if float32 else "- | ")
            + f"{r['reference']['seconds']:.2f} s | "
            + (f"{original:.2f} s | {r['vs_original']:.1f}x |" if original else "- | - |")
        )
    replace_section(README, "busy-results", "\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codes", type=int, nargs="*", default=[4096, 65536])
    parser.add_argument("--reps", type=int, default=None, help="timed runs per process")
    parser.add_argument("--rounds", type=int, default=None, help="processes per implementation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--original",
        action="store_true",
        help="also time the original package (0.1.2, in benchmarks/.original-venv) at sizes "
        "up to 16,384 codes, taking turns with ours",
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        help="keep this many competing busy processes running while timing (a shared "
        "machine); results go to their own file and table",
    )
    parser.add_argument(
        "--child", choices=["ours", "ours_float32", "reference"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.codes[0], args.reps, args.device)))
        return
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        results = timed_rows(args)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    info = machine(args.device) | {"busy_processes": args.busy}
    RESULTS.mkdir(exist_ok=True)
    suffix = f"_busy{args.busy}" if args.busy else ""
    out = RESULTS / f"codebook_{args.device.split(':')[0]}{suffix}.json"
    if out.exists():  # keep the sizes not measured this time
        measured = {r["num_codes"] for r in results}
        earlier = json.loads(out.read_text())["results"]
        results = sorted(
            [r for r in earlier if r["num_codes"] not in measured] + results,
            key=lambda r: r["num_codes"],
        )
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": info, "results": results}, indent=2))
    os.replace(tmp, out)
    if args.busy:
        write_busy_table(results, info)
    else:
        write_readme_table(results, info)
    print(f"wrote {out.relative_to(HERE.parent)} and the table in benchmarks/README.md")


def timed_rows(args: argparse.Namespace) -> list[dict]:
    """Each size's row: the implementations taking turns over the rounds."""
    results = []
    for num_codes in args.codes:
        small = num_codes <= 16384
        reps, rounds = args.reps or (3 if small else 1), args.rounds or (5 if small else 1)
        row = {"num_codes": num_codes, "groups": GROUPS, "group_dim": GROUP_DIM, "k": K}
        row["tokens"] = TOKENS
        runs: dict[str, list[dict]] = {"ours": [], "reference": []}
        if args.device.startswith("cuda") or (args.device == "cpu" and screened_search()):
            runs["ours_float32"] = []
        if args.original and small and args.device == "cpu":
            runs["original"] = []
        for _ in range(rounds):
            for impl in runs:
                if impl == "original":
                    from original import time_layer

                    found = time_layer(GROUPS, GROUP_DIM, K, TOKENS, num_codes, reps)
                else:
                    found = run_child(impl, num_codes, reps, args.device)
                runs[impl].append(found)
        for impl, done in runs.items():
            times = [t for run in done for t in run["all_seconds"]]
            row[impl] = {
                "seconds": statistics.median(times),
                "all_seconds": times,
                "peak_mib": max(run["peak_mib"] for run in done),
            }
            print(
                f"C={num_codes:>6} {impl:>9}: {row[impl]['seconds']:.3f} s, "
                f"peak {row[impl]['peak_mib']:,.0f} MiB",
                flush=True,
            )
        row["speedup"] = row["reference"]["seconds"] / row["ours"]["seconds"]
        if "ours_float32" in row:
            row["bfloat16_gain"] = row["ours_float32"]["seconds"] / row["ours"]["seconds"]
        if "original" in row:
            row["vs_original"] = row["original"]["seconds"] / row["ours"]["seconds"]
        row["memory_ratio"] = row["ours"]["peak_mib"] / row["reference"]["peak_mib"]
        results.append(row)
    return results


if __name__ == "__main__":
    main()

"""Time and quality of every code's automatic description on a recorded store.

Times ``describe_codes`` over every code of every site (what ``codebook index`` adds to the
index), median of ``--rounds`` runs after one warm-up, each on a freshly opened store whose
files were checked beforehand (so checksums are not counted). Then, from the descriptions
the store's index keeps (checked equal to the timed ones): how many codes fire at all, how
many get a held-out F1 of at least 0.5 and 0.3, the kinds chosen, and examples with high and
middling F1.

Results go to ``benchmarks/results/describe_cpu.json`` and the table in
``benchmarks/README.md`` is rewritten from them.

    python benchmarks/bench_describe.py --store runs/demo-lm/store
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter
from pathlib import Path

from codebook_features.persist.files import write_text
from codebook_features.search.describe import describe_codes
from codebook_features.store.descriptions import KINDS, descriptions_from_table
from codebook_features.store.reader import CodeStore
from machine import cpu_name
from readme import replace_section

HERE = Path(__file__).resolve().parent


def timed_run(path: Path) -> tuple[float, list]:
    store = CodeStore(path)
    store.verify()
    start = time.perf_counter()
    found = describe_codes(store)
    return time.perf_counter() - start, found


def examples(found: list, count: int) -> list:
    """The best half of ``count`` by F1, and the rest spread over F1 0.3 to 0.5."""
    scored = sorted((d for d in found if d.kind and d.f1 >= 0.3), key=lambda d: -d.f1)
    high = scored[: count // 2]
    middle = [d for d in scored if d.f1 < 0.5]
    step = max(len(middle) // max(count - len(high), 1), 1)
    return high + middle[::step][: count - len(high)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="a recorded, indexed store")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=10)
    args = parser.parse_args()
    timed_run(args.store)  # warm-up: the file cache
    times, found = [], []
    for _ in range(args.rounds):
        seconds, found = timed_run(args.store)
        times.append(seconds)
        print(f"described {len(found):,} codes in {seconds:.2f} s")
    store = CodeStore(args.store)
    kept = descriptions_from_table(store.descriptions)
    same = [json.dumps(d.to_dict()) for d in kept] == [json.dumps(d.to_dict()) for d in found]
    seconds = statistics.median(times)
    f1 = [d.f1 for d in kept if not math.isnan(d.f1)]
    result = {
        "store": str(args.store),
        "tokens": store.num_tokens,
        "codes": len(kept),
        "seconds": seconds,
        "rounds": times,
        "seconds_per_1000_codes": 1000 * seconds / max(len(kept), 1),
        "index_matches": same,
        "fire": sum(1 for d in kept if d.support + d.fit_support),
        "fire_in_fit_half": sum(1 for d in kept if d.fit_support),
        "described": sum(1 for d in kept if d.kind),
        "f1_at_least_0.5": sum(1 for x in f1 if x >= 0.5),
        "f1_at_least_0.3": sum(1 for x in f1 if x >= 0.3),
        "kinds": {kind: n for kind, n in Counter(d.kind for d in kept if d.kind).most_common()},
        "examples": [d.to_dict() for d in examples(kept, args.examples)],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    write_text(HERE / "results" / "describe_cpu.json", json.dumps(result, indent=2) + "\n")
    lines = [
        f"Measured on {cpu_name()}, median of {args.rounds} runs, store of "
        f"{store.num_tokens:,} tokens and {len(kept):,} codes:",
        "",
        "| describe all codes | per 1,000 codes | fire | F1 >= 0.5 | F1 >= 0.3 | kinds |",
        "|---|---|---|---|---|---|",
        f"| {seconds:.2f} s | {result['seconds_per_1000_codes']:.3f} s | {result['fire']:,} | "
        f"{result['f1_at_least_0.5']:,} | {result['f1_at_least_0.3']:,} | "
        + ", ".join(f"{k} {result['kinds'].get(k, 0):,}" for k in KINDS)
        + " |",
        "",
        "| code | held-out F1 | precision | recall | support | description |",
        "|---|---|---|---|---|---|",
        *(
            f"| `{e['code']}` | {e['f1']:.2f} | {e['precision']:.2f} | {e['recall']:.2f} | "
            f"{e['support']:,} | `{e['text'].replace('|', chr(92) + '|')}` |"
            for e in result["examples"]
        ),
    ]
    print("\n".join(lines))
    replace_section(HERE / "README.md", "describe-results", "\n".join(lines))


if __name__ == "__main__":
    main()

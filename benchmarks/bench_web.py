"""Latency of the code browser (``codebook serve``) on a real store, over HTTP.

The server runs as its own process (``python -m codebook_features serve STORE --model MODEL``),
the client here sends one request at a time and times each answer in full: regex searches for a
set of word patterns, then the pages of the codes those searches rank first (with the model
loaded, so similar codes and the logit effect are computed), each as its JSON endpoint and as
its HTML page (and the page of their next contexts), the document of each code's first context
at its token with the codes recorded there, codes found by the words of their descriptions,
and topic codes (also ranked by a label, down to low shares). One round warms up; the next
``--rounds`` are measured.

Results go to ``benchmarks/results/web_<device>.json`` and the table in ``benchmarks/README.md``
is rewritten from them.

    python benchmarks/bench_web.py --store runs/demo-lm/store \
        --model runs/demo-lm/attention-codebooks/final
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from codebook_features.persist.files import write_text
from machine import cpu_name
from readme import replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
PATTERNS = [
    r"\bthe\b",
    r"\bthou\b|\bthee\b",
    r"\bking\b",
    r"ing\b",
    r"\bGod\b",
    r"\d+",
    r"\bshe\b",
    r"\blove\w*",
    r"\bwar\b",
    r"Mr\.",
    r"[A-Z][a-z]+ed\b",
    r"\b(?:said|says)\b",
]
WORDS = ["said", "the", "king", "don't", "love", "ship"]
"""Words looked up in the codes' descriptions."""
TOPIC_QUERIES = [
    {"sort": sort, "min_share": share, "min_documents": 1}
    for sort in ("precision", "lift", "f1")
    for share in (0.5, 0.05, 0.01)
]
"""Topic codes ranked by each code's own label, down to codes covering 1% of a document."""
GOAL_MS = 200


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_server(store: str, model: str | None, port: int, concepts: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "codebook_features", "serve", store, "--port", str(port)]
    argv += ["--concepts_dir", str(concepts)] + (["--model", model] if model else [])
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    if not process.stdout.readline().startswith("code browser on"):
        raise SystemExit("the server did not start (see its error above)")
    return process


def timed(client: httpx.Client, url: str, params: dict | None = None) -> tuple[float, dict | None]:
    started = time.perf_counter()
    response = client.get(url, params=params)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    is_json = response.headers["content-type"].startswith("application/json")
    return seconds, response.json() if is_json else None


def measure(base: str, rounds: int, codes_per_search: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(200):
            try:
                client.get("/api/overview")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        for round_ in range(rounds + 1):
            codes: list[str] = []
            for pattern in PATTERNS:
                seconds, data = timed(client, "/api/search/regex", {"pattern": pattern})
                times.setdefault("regex search (JSON)", []).append(seconds)
                codes += [c["code"] for c in data["codes"][:codes_per_search]]
                seconds, _ = timed(client, "/search", {"pattern": pattern})
                times.setdefault("regex search (page)", []).append(seconds)
            contexts: list[tuple[int, int]] = []
            for code in dict.fromkeys(codes):
                seconds, data = timed(client, f"/api/codes/{code}")
                times.setdefault("code page (JSON)", []).append(seconds)
                contexts += [(e["document"], e["position"]) for e in data["examples"][:1]]
                times.setdefault("code page (page)", []).append(timed(client, f"/codes/{code}")[0])
                seconds = timed(client, f"/codes/{code}", {"offset": 10})[0]
                times.setdefault("code page, next contexts (page)", []).append(seconds)
            for document, position in dict.fromkeys(contexts):
                seconds = timed(client, f"/documents/{document}", {"at": position})[0]
                times.setdefault("document (page)", []).append(seconds)
                seconds = timed(client, f"/api/documents/{document}/tokens/{position}")[0]
                times.setdefault("codes at a token (JSON)", []).append(seconds)
            for word in WORDS:
                seconds = timed(client, "/api/search/descriptions", {"query": word})[0]
                times.setdefault("codes by description (JSON)", []).append(seconds)
                seconds = timed(client, "/describe", {"query": word})[0]
                times.setdefault("codes by description (page)", []).append(seconds)
            times.setdefault("topic codes (JSON)", []).append(timed(client, "/api/topics")[0])
            times.setdefault("topic codes (page)", []).append(timed(client, "/topics")[0])
            for query in TOPIC_QUERIES:
                seconds = timed(client, "/api/topics", query)[0]
                times.setdefault("topic codes by a label (JSON)", []).append(seconds)
                seconds = timed(client, "/topics", query)[0]
                times.setdefault("topic codes by a label (page)", []).append(seconds)
            if round_ == 0:
                times.clear()  # the warm-up round
    return times


def table(result: dict) -> str:
    lines = [
        f"Measured on {result['machine']}, store of {result['tokens']:,} tokens in "
        f"{result['documents']:,} documents, {len(result['sites'])} sites "
        f"({result['ids_per_token']} code ids per token), model loaded: {result['model_loaded']}:",
        "",
        "| request | n | median | p95 | goal (p95) |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["latency_ms"].items():
        goal = f"<= {GOAL_MS} ms"
        lines.append(
            f"| {name} | {row['n']} | {row['median']:.1f} ms | {row['p95']:.1f} ms | {goal} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", help="the model the store was recorded with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--codes-per-search", type=int, default=5)
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    concepts = Path(tempfile.mkdtemp()) / "concepts"  # the browser may write only there
    server = start_server(args.store, args.model, port, concepts)
    try:
        times = measure(f"http://127.0.0.1:{port}", args.rounds, args.codes_per_search)
        overview = httpx.get(f"http://127.0.0.1:{port}/api/overview").json()
    finally:
        server.terminate()
        server.wait(timeout=30)
    import torch

    result = {
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads",
        "tokens": overview["tokens"],
        "documents": overview["documents"],
        "sites": [s["name"] for s in overview["sites"]],
        "ids_per_token": sum(s["groups"] * s["k"] for s in overview["sites"]),
        "model_loaded": overview["model_loaded"],
        "latency_ms": {
            name: {
                "n": len(values),
                "median": 1000 * statistics.median(values),
                "p95": 1000 * percentile(values, 0.95),
            }
            for name, values in times.items()
        },
    }
    write_text(RESULTS / "web_cpu.json", json.dumps(result, indent=2) + "\n")
    print(table(result))
    if not args.no_readme:
        replace_section(README, "web-results", table(result))


if __name__ == "__main__":
    main()

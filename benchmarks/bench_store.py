"""Recording throughput of ``codebook record`` and query latency of a code store.

Two parts, each on a random GPT-NeoX built from a config (speed does not depend on training) with
codebooks on every layer's attention heads (4 layers x 8 heads, 1,024 codes per head, k = 8) and
a word-level tokenizer over a synthetic corpus (Zipf-distributed words, documents of 100 to 900
words, 8 labels, a rare planted word family for the regex query):

* **recording**: ``record()`` against the same model's forward pass over the same windows
  without writing (data loading, tokenization and batching included on both sides, as is
  loading the model), alternating, best of ``--rounds``; plus the store's bytes per token;
* **queries** on stores of ``--sizes`` tokens (default 1M and 4M): building the index (which
  ``record`` does at its end), then median times, over ``--repeats`` runs on the opened store,
  of regex -> ranked codes for a word pattern, a code page (store facts: no model), and topic
  codes. The query stores are recorded with a narrower model of the same code layout (hidden
  size 64), since query speed depends on the codes per token, not on the width, and recording
  millions of tokens with the wide model takes long on a CPU.

Results go to ``benchmarks/results/store_<device>.json`` and the table in
``benchmarks/README.md`` is rewritten from them.

    python benchmarks/bench_store.py          # everything (about 20 minutes on 2 cores)
    python benchmarks/bench_store.py --sizes 100000 --record-tokens 50000    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from machine import cpu_name
from readme import replace_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
LAYERS, HEADS, NUM_CODES, K = 4, 8, 1024, 8
LABELS = ["news", "lore", "poems", "letters", "science", "law", "sports", "recipes"]
PLANTED = ["dragon", "dragons", "dragonfly", "dragoon"]
WORD_PATTERN = r"\bdrag\w*"
VOCAB = 4000
WINDOW, BATCH = 256, 16


# ------------------------------------------------------------------ data and models
def vocabulary() -> list[str]:
    """Pronounceable pseudo-words, so a word regex has something to match."""
    rng = random.Random(0)
    onsets, vowels, codas = (
        ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"],
        ["a", "e", "i", "o", "u"],
        "nrstlk",
    )
    words: set[str] = set()
    while len(words) < VOCAB - len(PLANTED):
        parts = [rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 3))]
        word = "".join(parts) + (rng.choice(codas) if rng.random() < 0.5 else "")
        if not word.startswith("drag"):
            words.add(word)
    return sorted(words) + PLANTED


def write_corpus(path: Path, tokens: int, seed: int = 0) -> int:
    """A jsonl corpus of about ``tokens`` words, each document with a label; returns the
    number of words written (one token per word with the word-level tokenizer)."""
    rng = np.random.default_rng(seed)
    words = np.array(vocabulary()[: -len(PLANTED)])
    weights = 1.0 / np.arange(1, len(words) + 1)  # Zipf
    written = 0
    with path.open("w") as f:
        while written < tokens:
            label = int(rng.integers(len(LABELS)))
            size = int(min(rng.integers(100, 900), tokens - written)) or 1
            # each label prefers its own slice of the vocabulary, so documents differ by topic
            bias = weights.copy()
            bias[label * 400 : label * 400 + 400] *= 8
            text = rng.choice(words, size=size, p=bias / bias.sum())
            planted = rng.random(size) < 0.002
            text[planted] = rng.choice(PLANTED, size=int(planted.sum()))
            f.write(json.dumps({"text": " ".join(text), "label": LABELS[label]}) + "\n")
            written += size
    return written


def write_model(directory: Path, hidden: int) -> None:
    """A random codebook model with its tokenizer, saved as ``codebook record`` reads it."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from codebook_features import CodebookModel, CodebookModelConfig

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", *vocabulary()])}
    core = Tokenizer(models.WordLevel(vocab, "<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>")
    config = transformers.GPTNeoXConfig(
        hidden_size=hidden,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=4 * hidden,
        vocab_size=len(vocab),
        max_position_embeddings=2 * WINDOW,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    cbm = CodebookModel(
        model,
        CodebookModelConfig(sites=["layers.*.attn_heads"], num_codes=NUM_CODES, k=K),
    )
    cbm.save(directory, tokenizer=tokenizer)


def record_config(model: Path, corpus: Path, out: Path) -> object:
    from codebook_features.store.record import RecordConfig

    return RecordConfig(
        model=str(model),
        dataset=str(corpus),
        output_dir=str(out),
        max_length=WINDOW,
        batch_size=BATCH,
        progress=False,
        device="cpu",
    )


# ------------------------------------------------------------------ recording
def forward_only(config: object) -> int:
    """What ``record`` does without observing or writing anything: load the model and the
    data, tokenize, cut windows, batch them and run the forward pass. Returns the tokens."""
    import torch

    from codebook_features.store.documents import cut_windows, load_corpus
    from codebook_features.store.model_loading import load_recording_model

    model = load_recording_model(config, 1)  # type: ignore[arg-type]
    corpus = load_corpus(config)  # type: ignore[arg-type]
    tokens, windows = 0, []

    def run() -> None:
        width = max(len(w.ids) for w in windows)
        ids = np.full((len(windows), width), model.pad_id, dtype=np.int64)
        for i, w in enumerate(windows):
            ids[i, : len(w.ids)] = w.ids
        lengths = np.array([len(w.ids) for w in windows])
        valid = np.arange(width)[None, :] < lengths[:, None]
        mask = None if valid.all() else torch.from_numpy(valid.astype(np.int64))
        with torch.inference_mode():
            model.cbm.model(input_ids=torch.from_numpy(ids), attention_mask=mask, use_cache=False)
        windows.clear()

    for document in corpus.tokenized(model.tokenizer, 0, 0, 1):
        tokens += len(document.ids)
        for window in cut_windows(document, model.max_length):
            windows.append(window)
            if len(windows) == BATCH:
                run()
    if windows:
        run()
    return tokens


def bench_recording(work: Path, tokens: int, rounds: int) -> dict:
    from codebook_features.store.record import record

    model, corpus = work / "model-wide", work / "corpus-record.jsonl"
    if not model.exists():
        write_model(model, hidden=256)
    written = write_corpus(corpus, tokens, seed=1)
    forward_only(record_config(model, corpus, work / "unused"))  # warm-up: imports, caches
    recorded, forward = [], []
    size = 0
    for _ in range(rounds):
        out = work / "store-record"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        result = record(record_config(model, corpus, out))  # type: ignore[arg-type]
        # the index it writes at the end is timed with the queries
        recorded.append(time.perf_counter() - started - result.index_seconds)
        size = sum(p.stat().st_size for p in (out / "shards").iterdir())
        started = time.perf_counter()
        counted = forward_only(record_config(model, corpus, out))
        forward.append(time.perf_counter() - started)
        assert counted == result.tokens == written, (counted, result.tokens, written)
    best_record, best_forward = min(recorded), min(forward)
    return {
        "tokens": written,
        "record_s": round(best_record, 2),
        "forward_s": round(best_forward, 2),
        "record_tokens_per_s": round(written / best_record),
        "forward_tokens_per_s": round(written / best_forward),
        "overhead": round(best_record / best_forward - 1, 3),
        "bytes_per_token": round(size / written, 1),
        "all_record_s": [round(t, 2) for t in recorded],
        "all_forward_s": [round(t, 2) for t in forward],
    }


# ------------------------------------------------------------------ queries
def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_queries(work: Path, tokens: int, repeats: int) -> dict:
    from codebook_features.search import regex_codes, topic_codes
    from codebook_features.search.code_page import code_page
    from codebook_features.store.index import ensure_index
    from codebook_features.store.reader import CodeStore, read_manifest
    from codebook_features.store.record import record

    model = work / "model-narrow"
    if not model.exists():
        write_model(model, hidden=64)
    store_dir = work / f"store-{tokens}"
    if not (store_dir / "manifest.json").exists():
        corpus = work / f"corpus-{tokens}.jsonl"
        write_corpus(corpus, tokens, seed=2)
        started = time.perf_counter()
        record(record_config(model, corpus, store_dir))  # type: ignore[arg-type]
        print(f"  recorded {tokens:,} tokens in {time.perf_counter() - started:.0f} s")
        corpus.unlink()
    shutil.rmtree(store_dir / "index", ignore_errors=True)  # built again, timed: what the
    started = time.perf_counter()  # end of record() (or `codebook index`) costs
    ensure_index(store_dir, read_manifest(store_dir))
    open_s = time.perf_counter() - started
    store = CodeStore(store_dir)
    index_bytes = sum(p.stat().st_size for p in (store_dir / "index").iterdir())
    store_bytes = sum(p.stat().st_size for p in (store_dir / "shards").iterdir())
    # first calls load what later ones reuse (texts, document bounds): timed separately
    started = time.perf_counter()
    ranked, matched = regex_codes(store, WORD_PATTERN)
    first_regex_s = time.perf_counter() - started
    ref = ranked[0].code
    return {
        "tokens": store.num_tokens,
        "documents": store.num_documents,
        "first_open_s": round(open_s, 2),
        "first_regex_s": round(first_regex_s, 3),
        "regex_s": round(timed(lambda: regex_codes(store, WORD_PATTERN), repeats), 4),
        "regex_matches": matched,
        "code_page_s": round(timed(lambda: code_page(store, ref), repeats), 4),
        "topics_s": round(timed(lambda: topic_codes(store, label_field="label"), repeats), 4),
        "store_bytes_per_token": round(store_bytes / store.num_tokens, 1),
        "index_bytes_per_token": round(index_bytes / store.num_tokens, 1),
    }


# ------------------------------------------------------------------ report
def write_readme(results: dict) -> None:
    rec, queries = results["recording"], results["queries"]
    lines = [
        f"Measured on {results['machine']}, torch {results['torch']} ({results['device']}):",
        "",
        "| recording | tokens/s | seconds | goal |",
        "|---|---|---|---|",
        f"| `record()` | {rec['record_tokens_per_s']:,} | {rec['record_s']} | |",
        f"| forward pass only | {rec['forward_tokens_per_s']:,} | {rec['forward_s']} | |",
        f"| overhead | {rec['overhead']:.1%} | | <= 15% |",
        "",
        f"{rec['tokens']:,} tokens; the store takes {rec['bytes_per_token']} bytes per token "
        "(Parquet shards, zstd).",
        "",
        "| store tokens | index build | regex -> codes | code page | topic codes "
        "| shards B/token | index B/token |",
        "|---|---|---|---|---|---|---|",
    ]
    for q in queries:
        lines.append(
            f"| {q['tokens']:,} | {q['first_open_s']} s | {q['regex_s'] * 1000:.0f} ms "
            f"| {q['code_page_s'] * 1000:.1f} ms | {q['topics_s']:.2f} s "
            f"| {q['store_bytes_per_token']} | {q['index_bytes_per_token']} |"
        )
    lines.append("| goal (1M tokens) | | <= 200 ms | <= 50 ms | <= 2 s | | |")
    if len(queries) > 1:
        a, b = queries[0], queries[-1]
        scale = b["tokens"] / a["tokens"]
        growth = ", ".join(
            f"{name} x{b[key] / a[key]:.1f}"
            for name, key in (
                ("index build", "first_open_s"),
                ("regex", "regex_s"),
                ("code page", "code_page_s"),
                ("topics", "topics_s"),
            )
        )
        lines += ["", f"From {a['tokens']:,} to {b['tokens']:,} tokens (x{scale:.1f}): {growth}."]
    table = "\n".join(lines)
    replace_section(README, "store-results", table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record-tokens", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2, help="recording rounds (best is kept)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeats", type=int, default=5, help="runs per query (median)")
    parser.add_argument("--workdir", help="keep stores here for reruns (default: a temp dir)")
    parser.add_argument(
        "--only", choices=["recording", "queries"], help="run one part (the table needs both)"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-store-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        recording, queries = None, []
        if args.only != "queries":
            print(f"recording {args.record_tokens:,} tokens, {args.rounds} round(s) ...")
            recording = bench_recording(work, args.record_tokens, args.rounds)
            print(json.dumps(recording))
        for size in args.sizes if args.only != "recording" else []:
            print(f"queries on a store of {size:,} tokens ...")
            queries.append(bench_queries(work, size, args.repeats))
            print(json.dumps(queries[-1]))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    results = {
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "device": "cpu",
        "model": f"GPT-NeoX {LAYERS} layers x {HEADS} heads, attn_heads codebooks "
        f"C={NUM_CODES} k={K}",
        "recording": recording,
        "queries": queries,
    }
    out = RESULTS / "store_cpu.json"
    if recording is None and queries and out.is_file():  # new queries, earlier recording
        results["recording"] = recording = json.loads(out.read_text())["recording"]
    if recording is None or not queries:
        return  # printed only: the table needs both parts
    RESULTS.mkdir(exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    write_readme(results)
    print(f"wrote {out} and the table in {README}")


if __name__ == "__main__":
    main()

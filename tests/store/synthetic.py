"""A code store written directly in the documented format (no model): words as tokens, with
codes planted so that the right answers are known."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from codebook_features.persist.checksums import file_sha256
from codebook_features.persist.files import DOCUMENTS_SHARD, MANIFEST, SHARDS_DIR, TOKENS_SHARD
from codebook_features.store.index import ensure_index
from codebook_features.store.reader import read_manifest
from codebook_features.store.schema import SCHEMA_VERSION, id_dtype

WORDS = ["the", "red", "dragon", "flies", "over", "a", "café", "near", "日本", "town", "at", "dawn"]
SITES = {"layers.0.mlp": (1, 2, 50), "layers.1.attn_heads": (2, 1, 300)}
"""site -> (groups, k, num_codes)."""
DRAGON = 7
"""Code 7 of group 0 at layers.0.mlp fires exactly on the word "dragon"."""
TOPIC = 5
"""Code 5 of group 1 at layers.1.attn_heads fires on every token of documents about dragons
(those labelled "fantasy")."""


def write_store(
    root: Path,
    documents: int = 40,
    per_shard: int = 15,
    seed: int = 0,
    *,
    index: bool = True,
    empty: tuple[int, ...] = (),
) -> Path:
    """``empty``: documents whose text is empty (no tokens), as a corpus may hold."""
    rng = random.Random(seed)
    (root / SHARDS_DIR).mkdir(parents=True)
    shards, files, total = [], {}, 0
    for shard, first in enumerate(range(0, documents, per_shard)):
        docs = list(range(first, min(documents, first + per_shard)))
        texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in docs]
        texts = ["" if doc in empty else text for doc, text in zip(docs, texts, strict=True)]
        columns: dict[str, list] = {
            n: [] for n in ("document", "position", "token", "start", "end")
        }
        codes: dict[str, list] = {site: [] for site in SITES}
        for doc, text in zip(docs, texts, strict=True):
            for position, match in enumerate(re.finditer(r"\S+", text)):
                word = match.group()
                start = match.start() - (1 if match.start() else 0)  # BPE-like: " word"
                columns["document"].append(doc)
                columns["position"].append(position)
                columns["token"].append(WORDS.index(word))
                columns["start"].append(start)
                columns["end"].append(match.end())
                for site, (groups, k, num_codes) in SITES.items():
                    slots = []
                    for group in range(groups):
                        picks = rng.sample(range(10, num_codes), k)
                        if site == "layers.0.mlp" and word == "dragon":
                            picks[-1] = DRAGON
                        if site == "layers.1.attn_heads" and group == 1 and "dragon" in text:
                            picks[0] = TOPIC
                        slots += picks
                    codes[site].append(slots)
        documents_file = DOCUMENTS_SHARD.format(rank=0, shard=shard)
        tokens_file = TOKENS_SHARD.format(rank=0, shard=shard)
        labels = ["fantasy" if "dragon" in t else "other" for t in texts]
        pq.write_table(
            pa.table({"document": docs, "text": texts, "label": labels}),
            root / SHARDS_DIR / documents_file,
            compression="zstd",
        )
        table = {
            "document": pa.array(columns["document"], pa.int64()),
            "position": pa.array(columns["position"], pa.int32()),
            "token": pa.array(columns["token"], pa.int32()),
            "start": pa.array(columns["start"], pa.int32()),
            "end": pa.array(columns["end"], pa.int32()),
        }
        for site, (groups, k, num_codes) in SITES.items():
            kind = pa.from_numpy_dtype(id_dtype(num_codes))
            values = pa.array(np.asarray(codes[site]).reshape(-1), kind)
            table[site] = pa.FixedSizeListArray.from_arrays(values, groups * k)
        pq.write_table(pa.table(table), root / SHARDS_DIR / tokens_file, compression="zstd")
        for name in (documents_file, tokens_file):
            files[f"{SHARDS_DIR}/{name}"] = file_sha256(root / SHARDS_DIR / name)
        count = len(columns["document"])
        shards.append(
            {
                "documents": documents_file,
                "tokens": tokens_file,
                "rank": 0,
                "shard": shard,
                "documents_count": len(docs),
                "tokens_count": count,
            }
        )
        total += count
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "sites": {
            site: {"groups": g, "k": k, "num_codes": c, "dtype": str(id_dtype(c))}
            for site, (g, k, c) in SITES.items()
        },
        "data": {"label_fields": ["label"]},
        "counts": {"documents": documents, "tokens": total},
        "shards": shards,
        "files": files,
    }
    (root / MANIFEST).write_text(json.dumps(manifest))
    if index:
        reindex(root)  # as record does
    return root


def reindex(root: Path) -> None:
    """Build a store's index anew, as ``codebook index`` does (after a test edits it)."""
    ensure_index(root, read_manifest(root), rebuild=True)

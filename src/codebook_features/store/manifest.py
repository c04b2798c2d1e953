"""The manifest: written last, by the first process, once every process has finished, so a
store with a manifest is a complete one::

    schema_version        format of the store (schema.SCHEMA_VERSION)
    model                 {name, fingerprint (sha256 of codebook_config.json then
                          codebooks.safetensors), model_type}
    tokenizer             the tokenizer's name (hub name or directory)
    data                  {dataset, config, split (None for local files), text_field,
                          label_fields, labels (names of class-label columns)}
    sites                 {site: {groups, k, num_codes, dtype}}
    counts                {documents, tokens}
    shards                [{documents, tokens (file names in shards/), rank, shard,
                          documents_count, tokens_count}] in store order: the global row of a
                          token is its row in the tokens files taken in this order
    activations           None, or {sites: {site: {dim}}, dtype, max_tokens, tokens,
                          files: [{file (in activations/), shard (index in shards), rows}]}:
                          the float16 inputs of those sites for the first ``rows`` rows of
                          that shard's tokens
    recording             {max_length, batch_size, shard_tokens, max_documents, processes}
    files                 {relative path: sha256} of every shard and activations file
    codebook_features_version
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from codebook_features.store.progress import finished_shards
from codebook_features.store.schema import MANIFEST, SCHEMA_VERSION, id_dtype

if TYPE_CHECKING:
    from codebook_features.store.documents import Corpus
    from codebook_features.store.model_loading import RecordingModel
    from codebook_features.store.record import RecordConfig


def write_manifest(
    root: Path, config: RecordConfig, model: RecordingModel, corpus: Corpus, world: int
) -> None:
    """Write the manifest of the store in ``root`` from the progress files of its ``world``
    processes (refused unless every one of them finished)."""
    from codebook_features.persist.files import write_json
    from codebook_features.settings.saved import stamp

    shards = finished_shards(root, world)
    files: dict[str, str] = {}
    for shard in shards:
        files.update(shard.sha256)
    c, cbm = config, model.cbm
    activations: dict[str, Any] | None = None
    if model.activation_sites:
        listed = [
            {"file": s.activations, "shard": i, "rows": s.activation_rows}
            for i, s in enumerate(shards)
            if s.activations
        ]
        activations = {
            "sites": {
                site: {"dim": cbm.codebook(site).config.dim} for site in model.activation_sites
            },
            "dtype": "float16",
            "max_tokens": c.max_activation_tokens,
            "tokens": sum(item["rows"] for item in listed),
            "files": listed,
        }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": c.model,
            "fingerprint": model.fingerprint,
            "model_type": getattr(cbm.model.config, "model_type", None),
        },
        "tokenizer": model.tokenizer_name,
        "data": {
            "dataset": c.dataset,
            "config": c.dataset_config,
            "split": corpus.split,
            "text_field": c.text_field,
            "label_fields": corpus.label_fields,
            "labels": corpus.label_names,
        },
        "sites": {
            site: {
                "groups": cbm.codebook(site).config.groups,
                "k": cbm.codebook(site).config.k,
                "num_codes": cbm.codebook(site).config.num_codes,
                "dtype": str(id_dtype(cbm.codebook(site).config.num_codes)),
            }
            for site in model.sites
        },
        "counts": {
            "documents": sum(s.documents_count for s in shards),
            "tokens": sum(s.tokens_count for s in shards),
        },
        "shards": [
            {
                "documents": s.documents,
                "tokens": s.tokens,
                "rank": s.rank,
                "shard": s.shard,
                "documents_count": s.documents_count,
                "tokens_count": s.tokens_count,
            }
            for s in shards
        ],
        "activations": activations,
        "recording": {
            "max_length": model.max_length,
            "batch_size": c.batch_size,
            "shard_tokens": c.shard_tokens,
            "max_documents": c.max_documents,
            "processes": world,
        },
        "files": dict(sorted(files.items())),
    }
    write_json(root / MANIFEST, stamp(manifest))

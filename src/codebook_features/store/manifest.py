"""The manifest (:class:`Manifest`): written last, by the first process, once every process
has finished, so a store with a manifest is a complete one. ``manifest.json`` holds::

    schema_version        format of the store (schema.SCHEMA_VERSION)
    model                 {name, fingerprint (of its codebooks, as concepts record it;
                          format 1: sha256 of its saved codebook files), model_type}
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
from typing import TYPE_CHECKING

from pydantic import Field

from codebook_features.persist.files import MANIFEST
from codebook_features.settings.base import NonNegativeInt, PositiveInt, Record
from codebook_features.store.progress import finished_shards
from codebook_features.store.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from codebook_features.store.config import RecordConfig
    from codebook_features.store.documents import Corpus
    from codebook_features.store.model_loading import RecordingModel


class ModelRecord(Record):
    """The codebook model a store was recorded with."""

    name: str | None = None
    """The saved model as given to ``codebook record`` (a directory or a hub name)."""
    fingerprint: str | None = None
    """Its codebooks' fingerprint (``attach.fingerprint``), as concepts record it; in stores
    of format 1, the sha256 of its ``codebook_config.json`` then ``codebooks.safetensors``."""
    model_type: str | None = None
    """The transformers model type (``gpt_neox``, ...)."""


class DataRecord(Record):
    """The text a store was recorded from."""

    dataset: str | None = None
    """The hub dataset name or local files."""
    config: str | None = None
    """The hub dataset's configuration."""
    split: str | None = None
    """The split recorded (``None`` for local files)."""
    text_field: str | None = None
    """The column of the text."""
    label_fields: list[str] = Field(default_factory=list)
    """The label columns copied into the documents table."""
    labels: dict[str, list[str]] = Field(default_factory=dict)
    """The names of the classes of class-label columns."""


class SiteRecord(Record):
    """What one recorded site holds."""

    groups: PositiveInt
    """Groups of codes (one per head at ``attn_heads`` sites)."""
    k: PositiveInt
    """Codes per token and group."""
    num_codes: PositiveInt
    """Codes per group."""
    dtype: str
    """The integer type of its ids (see ``schema.id_dtype``)."""


class Counts(Record):
    """How much a store holds."""

    documents: NonNegativeInt
    tokens: NonNegativeInt


class ShardRecord(Record):
    """One shard: its documents and tokens files in ``shards/``."""

    documents: str
    tokens: str
    rank: NonNegativeInt
    """The process that wrote it."""
    shard: NonNegativeInt
    """Its number among that process's shards."""
    documents_count: NonNegativeInt
    tokens_count: NonNegativeInt


class ActivationSite(Record):
    dim: PositiveInt
    """Width of the site's codebook input."""


class ActivationFile(Record):
    """Activations of the first ``rows`` token rows of one shard."""

    file: str
    """The file in ``activations/``."""
    shard: NonNegativeInt
    """The shard's index in the manifest's ``shards``."""
    rows: NonNegativeInt


class Activations(Record):
    """The codebook inputs kept for some sites (``codebook record --activation_sites``)."""

    sites: dict[str, ActivationSite]
    dtype: str
    max_tokens: PositiveInt | None = None
    """The most tokens kept per process."""
    tokens: NonNegativeInt
    """Token rows kept in all."""
    files: list[ActivationFile]


class Recording(Record):
    """How a store was recorded."""

    max_length: PositiveInt
    batch_size: PositiveInt
    shard_tokens: PositiveInt
    max_documents: PositiveInt | None = None
    processes: PositiveInt


class Manifest(Record):
    """``manifest.json``: what a finished store holds (see the module's description)."""

    schema_version: PositiveInt
    """The store's format (``schema.SCHEMA_VERSION``)."""
    model: ModelRecord = Field(default_factory=ModelRecord)
    tokenizer: str | None = None
    """The tokenizer (hub name or directory)."""
    data: DataRecord = Field(default_factory=DataRecord)
    sites: dict[str, SiteRecord]
    """The recorded sites, in natural order."""
    counts: Counts
    shards: list[ShardRecord]
    """In store order."""
    activations: Activations | None = None
    recording: Recording | None = None
    files: dict[str, str] = Field(default_factory=dict)
    """Relative path -> sha256 of every shard and activations file."""


def write_store_manifest(
    root: Path, config: RecordConfig, model: RecordingModel, corpus: Corpus, world: int
) -> None:
    """Write the manifest of the store in ``root`` from the progress files of its ``world``
    processes (refused unless every one of them finished)."""
    from codebook_features.persist.files import write_json
    from codebook_features.settings.base import stamp
    from codebook_features.store.schema import id_dtype

    shards = finished_shards(root, world)
    files: dict[str, str] = {}
    for shard in shards:
        files.update(shard.sha256)
    c, cbm = config, model.cbm
    activations = None
    if model.activation_sites:
        listed = [
            ActivationFile(file=s.activations, shard=i, rows=s.activation_rows)
            for i, s in enumerate(shards)
            if s.activations
        ]
        activations = Activations(
            sites={
                site: ActivationSite(dim=cbm.codebook(site).config.dim)
                for site in model.activation_sites
            },
            dtype="float16",
            max_tokens=c.max_activation_tokens,
            tokens=sum(item.rows for item in listed),
            files=listed,
        )
    codebooks = {site: cbm.codebook(site).config for site in model.sites}
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model=ModelRecord(
            name=c.model,
            fingerprint=model.fingerprint,
            model_type=getattr(cbm.model.config, "model_type", None),
        ),
        tokenizer=model.tokenizer_name,
        data=DataRecord(
            dataset=c.dataset,
            config=c.dataset_config,
            split=corpus.split,
            text_field=c.text_field,
            label_fields=corpus.label_fields,
            labels=corpus.label_names,
        ),
        sites={
            site: SiteRecord(
                groups=cb.groups, k=cb.k, num_codes=cb.num_codes, dtype=str(id_dtype(cb.num_codes))
            )
            for site, cb in codebooks.items()
        },
        counts=Counts(
            documents=sum(s.documents_count for s in shards),
            tokens=sum(s.tokens_count for s in shards),
        ),
        shards=[
            ShardRecord(
                documents=s.documents,
                tokens=s.tokens,
                rank=s.rank,
                shard=s.shard,
                documents_count=s.documents_count,
                tokens_count=s.tokens_count,
            )
            for s in shards
        ],
        activations=activations,
        recording=Recording(
            max_length=model.max_length,
            batch_size=c.batch_size,
            shard_tokens=c.shard_tokens,
            max_documents=c.max_documents,
            processes=world,
        ),
        files=dict(sorted(files.items())),
    )
    write_json(root / MANIFEST, stamp(manifest.to_dict()))

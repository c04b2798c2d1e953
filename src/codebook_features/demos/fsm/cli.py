"""``codebook fsm ...``: each stage of the TokFSM experiment on its own, and the whole demo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codebook_features.cli import add_command, command, integer
from codebook_features.errors import CodebookError
from codebook_features.persist.ownership import RESULT_KEY, check_output_file
from codebook_features.settings.saved import stamp

if TYPE_CHECKING:
    from codebook_features.demos.fsm.results import StateAnalysis


def _print_json(data: Any, args: argparse.Namespace) -> None:
    """Print a result, and write it to ``--out``, stamped as a result of this command and with
    the library version (so that it may be overwritten later)."""
    out = args.out
    text = json.dumps(stamp({RESULT_KEY: f"fsm {args.fsm_command}", **data}), indent=2)
    if out:
        from codebook_features.persist.files import write_text

        write_text(out, text + "\n")
    print(text)


def _model_and_data(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The model and data of ``--model``/``--data``, checked to fit each other before work."""
    from codebook_features.demos.fsm.data import FSMData
    from codebook_features.demos.fsm.pipeline import load_for_eval
    from codebook_features.persist.files import MODEL_CONFIG

    if getattr(args, "out", None):
        check_output_file(args.out)
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise CodebookError(f"{model_dir} is not a directory: give a trained model's directory")
    if not (model_dir / MODEL_CONFIG).exists():
        raise CodebookError(f"{model_dir} is not a saved model (no {MODEL_CONFIG})")
    data = FSMData(Path(args.data))
    fsm = data.fsm()
    model = load_for_eval(model_dir)
    vocab = model.get_input_embeddings().num_embeddings
    if vocab < fsm.vocab_size:
        raise CodebookError(
            f"{model_dir} has a vocabulary of {vocab} tokens, but the data in {args.data} uses "
            f"{fsm.vocab_size}: use the data the model was trained on"
        )
    return model, fsm, data


@command("fsm", "the TokFSM experiment: make data, train, evaluate, analyse, intervene, demo")
def _fsm_command(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fsm_command", metavar="STEP", required=True)

    make = add_command(sub, "make", "create an FSM, its tokenizer and token datasets")
    make.add_argument("--out", required=True, help="data directory to create")
    make.add_argument("--states", type=integer(2), default=40, help="states (paper: 100)")
    make.add_argument("--edges", type=integer(1), default=4, help="out-edges (paper: 10)")
    make.add_argument("--base", type=integer(2), default=10, help="digits are in this base")
    make.add_argument("--seed", type=integer(0), default=0)
    make.add_argument("--train-sequences", type=integer(1), default=40_000)
    make.add_argument("--val-sequences", type=integer(1), default=512)
    make.add_argument("--states-per-sequence", type=integer(2), default=32)
    make.add_argument("--overwrite", action="store_true", help="replace existing FSM data")

    def run_make(args: argparse.Namespace) -> None:
        from codebook_features.demos.fsm.data import make_data

        data = make_data(
            args.out,
            args.states,
            args.edges,
            args.base,
            args.seed,
            args.train_sequences,
            args.val_sequences,
            args.states_per_sequence,
            overwrite=args.overwrite,
        )
        fsm = data.fsm()
        print(
            f"wrote {data.root}: {fsm.num_states} states x {fsm.num_edges} edges, "
            f"{fsm.digits} digits per state"
        )

    make.set_defaults(run=run_make)

    train = add_command(
        sub, "train", "train a baseline, or a codebook model (from a baseline with --start-from)"
    )
    train.add_argument("--data", required=True, help="data directory from `codebook fsm make`")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--start-from", help="trained model to finetune with codebooks")
    train.add_argument("--sites", nargs="+", default=["attn_heads", "mlp"])
    train.add_argument("--k", type=integer(1), default=1)
    train.add_argument("--codes", type=integer(1), default=512)
    train.add_argument(
        "--steps", type=integer(1), default=None, help="default: 1000 (baseline), 600 (codebooks)"
    )
    train.add_argument("--seed", type=integer(0), default=0)

    def run_train(args: argparse.Namespace) -> None:
        from dataclasses import replace

        from codebook_features.demos.fsm.data import FSMData
        from codebook_features.demos.fsm.pipeline import PRESETS, Variant, train_run

        preset = PRESETS["default"]
        if args.steps is not None and not args.start_from:
            preset = replace(preset, baseline_steps=args.steps)
        variant = None
        if args.start_from:
            steps = 600 if args.steps is None else args.steps
            variant = Variant("codebooks", args.sites, args.k, args.codes, steps)
        start = Path(args.start_from) if args.start_from else None
        model_dir = train_run(
            FSMData(Path(args.data)),
            Path(args.out),
            preset,
            args.seed,
            variant,
            start,
            progress=True,
        )
        print(f"model: {model_dir}")

    train.set_defaults(run=run_train)

    evaluate = add_command(sub, "evaluate", "state accuracy, first-transition accuracy, loss")
    analyze = add_command(sub, "analyze", "codes vs states, the neuron baseline, purity")
    intervene = add_command(sub, "intervene", "swap state codes and measure the effect")
    for p in (evaluate, analyze, intervene):
        p.add_argument("--model", required=True, help="trained model directory")
        p.add_argument("--data", required=True, help="data directory")
        p.add_argument("--out", help="also write the JSON result to this file")
        p.add_argument("--seed", type=integer(0), default=0)
    evaluate.add_argument("--samples", type=integer(1), default=256, help="sequences to sample")
    intervene.add_argument("--transitions", type=integer(1), default=500)

    def run_evaluate(args: argparse.Namespace) -> None:
        from codebook_features.demos.fsm.evaluation import evaluate_model

        model, fsm, data = _model_and_data(args)
        metrics = evaluate_model(model, fsm, data.validation_tokens(), args.samples, args.seed)
        _print_json(metrics.to_dict(), args)

    def analysis_of(args: argparse.Namespace) -> tuple[Any, Any, Any, StateAnalysis]:
        import torch

        from codebook_features.attach.model import CodebookModel
        from codebook_features.demos.fsm.analysis import analyze as run_analysis

        model, fsm, data = _model_and_data(args)
        if not isinstance(model, CodebookModel):
            raise CodebookError(f"{args.model} has no codebooks to analyse")
        tokens = torch.as_tensor(data.validation_tokens())
        return model, fsm, tokens, run_analysis(model, fsm, tokens)

    def run_analyze(args: argparse.Namespace) -> None:
        _, _, _, result = analysis_of(args)
        _print_json(result.to_dict(), args)

    def run_intervene(args: argparse.Namespace) -> None:
        from codebook_features.demos.fsm.interventions import state_swaps

        model, fsm, tokens, result = analysis_of(args)
        swaps = state_swaps(model, fsm, tokens, result.state_codes, args.transitions, args.seed)
        _print_json(swaps.to_dict(), args)

    evaluate.set_defaults(run=run_evaluate)
    analyze.set_defaults(run=run_analyze)
    intervene.set_defaults(run=run_intervene)

    demo = add_command(sub, "demo", "the whole experiment with a report (offline)")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument(
        "--full",
        action="store_true",
        help="the paper's machine (100 states, 10 edges) and more of Table 1; hours",
    )
    demo.add_argument("--seed", type=integer(0), default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress output")

    def run_demo(args: argparse.Namespace) -> None:
        from codebook_features.demos.fsm.pipeline import run_pipeline
        from codebook_features.demos.fsm.report import summary_lines
        from codebook_features.persist.files import REPORT_FILE

        results = run_pipeline(
            args.out, "full" if args.full else "default", args.seed, progress=not args.quiet
        )
        print("\n".join(summary_lines(results)))
        print(f"report: {Path(args.out) / REPORT_FILE}")

    demo.set_defaults(run=run_demo)

"""``codebook fsm ...``: each stage of the TokFSM experiment on its own, and the whole demo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codebook_features.demos.fsm.config import (
    DEFAULT,
    AnalyzeStep,
    DemoSettings,
    EvaluateStep,
    InterveneStep,
    MakeData,
    ModelOnData,
    TrainStep,
)
from codebook_features.errors import CodebookError
from codebook_features.settings.options import add_options, add_subcommand, settings_from_args

if TYPE_CHECKING:
    from codebook_features.demos.fsm.results import StateAnalysis


def _make(step: MakeData) -> None:
    from codebook_features.demos.fsm.config import MachineSettings
    from codebook_features.demos.fsm.data import make_data

    machine = MachineSettings(
        **{name: getattr(step, name) for name in MachineSettings.model_fields}
    )
    data = make_data(step.output_dir, machine, step.seed, overwrite=step.overwrite)
    fsm = data.fsm()
    print(
        f"wrote {data.root}: {fsm.num_states} states x {fsm.num_edges} edges, "
        f"{fsm.digits} digits per state"
    )


def _train(step: TrainStep) -> None:
    from codebook_features.demos.fsm.data import FSMData
    from codebook_features.demos.fsm.pipeline import train_run
    from codebook_features.demos.runner import Variant

    preset, variant = DEFAULT, None
    if step.start_from:
        variant = Variant(
            name="codebooks",
            sites=step.sites,
            k=step.k,
            num_codes=step.num_codes,
            steps=step.steps,
        )
    elif step.steps is not None:
        preset = DEFAULT.replace(baseline_steps=step.steps)
    start = Path(step.start_from) if step.start_from else None
    data = FSMData(Path(step.data))
    model_dir = train_run(data, Path(step.output_dir), preset, step.seed, variant, start, True)
    print(f"model: {model_dir}")


def _evaluate(step: EvaluateStep) -> None:
    from codebook_features.demos.fsm.evaluation import evaluate_model

    model, fsm, data = _model_and_data(step)
    metrics = evaluate_model(model, fsm, data.validation_tokens(), step.samples, step.seed)
    _print_json(metrics.to_dict(), step, "evaluate")


def _analyze(step: AnalyzeStep) -> None:
    _, _, _, result = _analysis(step)
    _print_json(result.to_dict(), step, "analyze")


def _intervene(step: InterveneStep) -> None:
    from codebook_features.demos.fsm.interventions import state_swaps

    model, fsm, tokens, result = _analysis(step)
    swaps = state_swaps(model, fsm, tokens, result.state_codes, step.transitions, step.seed)
    _print_json(swaps.to_dict(), step, "intervene")


def _demo(step: DemoSettings) -> None:
    from codebook_features.demos.fsm.pipeline import run_pipeline
    from codebook_features.demos.fsm.report import summary_lines
    from codebook_features.persist.files import REPORT_FILE

    results = run_pipeline(step.output_dir, step.preset, step.seed, progress=step.progress)
    print("\n".join(summary_lines(results)))
    print(f"report: {Path(step.output_dir) / REPORT_FILE}")


def _print_json(data: Any, step: ModelOnData, command: str) -> None:
    """Print a result, and write it to ``output_file``, stamped as a result of this command and
    with the library version (so that it may be overwritten later)."""
    from codebook_features.persist.ownership import RESULT_KEY
    from codebook_features.settings.base import stamp

    text = json.dumps(stamp({RESULT_KEY: f"fsm {command}", **data}), indent=2)
    if step.output_file:
        from codebook_features.persist.files import write_text

        write_text(step.output_file, text + "\n")
    print(text)


def _model_and_data(step: ModelOnData) -> tuple[Any, Any, Any]:
    """The model and data of a step, checked to fit each other before work."""
    from codebook_features.demos.fsm.data import FSMData
    from codebook_features.demos.fsm.pipeline import load_for_eval
    from codebook_features.persist.files import MODEL_CONFIG
    from codebook_features.persist.ownership import check_output_file

    if step.output_file:
        check_output_file(step.output_file)
    model_dir = Path(step.model)
    if not model_dir.is_dir():
        raise CodebookError(f"{model_dir} is not a directory: give a trained model's directory")
    if not (model_dir / MODEL_CONFIG).exists():
        raise CodebookError(f"{model_dir} is not a saved model (no {MODEL_CONFIG})")
    data = FSMData(Path(step.data))
    fsm = data.fsm()
    model = load_for_eval(model_dir)  # its damage is named before its tokenizer is read
    vocab = model.get_input_embeddings().num_embeddings
    if vocab < fsm.vocab_size or _other_vocabulary(model_dir, data.tokenizer):
        raise CodebookError(
            f"{model_dir} was trained on another vocabulary than the data in {step.data} (it "
            f"has {vocab} tokens, the data {fsm.vocab_size}): use the data the model was "
            "trained on"
        )
    return model, fsm, data


def _other_vocabulary(model_dir: Path, data_tokenizer: Path) -> bool:
    """Whether the model's saved tokenizer (when it has one) maps tokens to other ids than
    the data's: a model of other text can have as many tokens or more."""
    from codebook_features.attach.loading import load_tokenizer
    from codebook_features.persist.sources import TOKENIZER_FILES

    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        return False  # only the size can be checked
    mine = load_tokenizer(str(model_dir)).get_vocab()
    return mine != load_tokenizer(str(data_tokenizer)).get_vocab()


def _analysis(step: ModelOnData) -> tuple[Any, Any, Any, StateAnalysis]:
    import torch

    from codebook_features.attach.model import CodebookModel
    from codebook_features.demos.fsm.analysis import analyze

    model, fsm, data = _model_and_data(step)
    if not isinstance(model, CodebookModel):
        raise CodebookError(f"{step.model} has no codebooks to analyse")
    tokens = torch.as_tensor(data.validation_tokens())
    return model, fsm, tokens, analyze(model, fsm, tokens)


STEPS = {
    "make": (MakeData, _make, "create an FSM, its tokenizer and token datasets"),
    "train": (TrainStep, _train, "train a baseline, or a codebook model (--start_from a baseline)"),
    "evaluate": (EvaluateStep, _evaluate, "state accuracy, first-transition accuracy, loss"),
    "analyze": (AnalyzeStep, _analyze, "codes vs states, the neuron baseline, purity"),
    "intervene": (InterveneStep, _intervene, "swap state codes and measure the effect"),
    "demo": (DemoSettings, _demo, "the whole experiment with a report (offline)"),
}
"""Step name -> its settings, what it runs and its one-line help."""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fsm_command", metavar="STEP", required=True)
    for name, (settings, run, help_text) in STEPS.items():
        step = add_subcommand(sub, name, help_text)
        step.description = settings.__doc__
        add_options(step, settings)
        step.set_defaults(
            run=lambda args, settings=settings, run=run: run(settings_from_args(settings, args))
        )

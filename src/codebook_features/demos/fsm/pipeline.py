"""The TokFSM experiment end to end: data, baseline, codebook models, evaluation, analysis,
interventions and a report. Every stage writes its results into the output directory and is
skipped when they are already there, so an interrupted pipeline continues where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from safetensors import SafetensorError

from codebook_features.demos.fsm.config import PRESETS, Preset
from codebook_features.demos.fsm.data import FSMData, make_data
from codebook_features.demos.fsm.results import ModelAnalysis, SwapResults, TrainedModel
from codebook_features.demos.runner import (
    DemoResults,
    Stages,
    Variant,
    resume_results,
    train_or_reuse,
)
from codebook_features.errors import CodebookError
from codebook_features.persist.files import (
    BASELINE_RUN,
    CODEBOOK_CONFIG,
    CODEBOOK_WEIGHTS,
    DATA_DIR,
    FINAL_DIR,
    FSM_FILE,
    RESULTS_FILE,
    slug,
)
from codebook_features.persist.model_files import verify_model_dir
from codebook_features.persist.ownership import FSM_DEMO, check_output_dir, mark

logger = logging.getLogger(__name__)

BASELINE = "Baseline (no codebooks)"
"""The name of the model without codebooks in the comparison."""


class PipelineResults(DemoResults[Preset]):
    """Everything the demo measured; ``results.json`` is :meth:`to_dict`, written after every
    stage, so a run continues where it stopped."""

    models: dict[str, TrainedModel] = Field(default_factory=dict)
    """Each model of the comparison (the baseline, then the codebook variants)."""
    analysis: ModelAnalysis | None = None
    """Codes vs states of the analysed variant."""
    interventions: SwapResults | None = None
    """Swapping state codes in the analysed variant."""


def train_run(
    data: FSMData,
    out: Path,
    preset: Preset,
    seed: int,
    variant: Variant | None,
    start_from: Path | None,
    progress: bool,
) -> Path:
    """Train the baseline (``variant`` None) or a codebook variant; resumes an unfinished run,
    and reuses a finished one made with the same settings (see :func:`train_or_reuse`)."""
    from codebook_features.training import DataConfig, ModelConfig, RunConfig, TrainingConfig

    model = (
        ModelConfig(name_or_path=str(start_from))
        if start_from
        else ModelConfig(init=dict(preset.model), tokenizer=str(data.tokenizer))
    )
    steps = (variant.steps or preset.variant_steps) if variant else preset.baseline_steps
    config = RunConfig(
        model=model,
        data=DataConfig(
            dataset=str(data.train),
            validation_dataset=str(data.validation),
            block_size=data.validation_tokens().shape[1],  # one sequence per block
        ),
        codebooks=variant.codebooks() if variant else None,
        training=TrainingConfig(
            output_dir=str(out),
            mode="finetune" if variant else "baseline",
            steps=steps,
            batch_size=preset.batch_size,
            lr=(variant.lr or preset.variant_lr) if variant else preset.baseline_lr,
            schedule="cosine" if not variant else "constant",
            warmup_steps=0 if variant else preset.warmup_steps,
            eval_every=max(1, steps // 5),
            save_every=max(1, steps // 5),
            kmeans_init=variant is not None,
            seed=seed,
            progress=progress,
        ),
    )
    return train_or_reuse(config, out)


def load_for_eval(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    from codebook_features.attach.model import CodebookModel

    if (model_dir / CODEBOOK_CONFIG).exists():
        return CodebookModel.from_pretrained(model_dir).eval()
    if (model_dir / CODEBOOK_WEIGHTS).exists():
        raise CodebookError(
            f"{model_dir} has {CODEBOOK_WEIGHTS} but no {CODEBOOK_CONFIG}: the saved model is "
            "damaged; save or copy it again"
        )
    verify_model_dir(model_dir)
    try:
        return AutoModelForCausalLM.from_pretrained(model_dir).eval()
    except (OSError, ValueError, SafetensorError) as error:
        raise CodebookError(
            f"the model in {model_dir} could not be loaded ({str(error).splitlines()[0]}); "
            "save or copy it again"
        ) from error


def run_pipeline(
    out: str | Path,
    preset: str | Preset = "default",
    seed: int = 0,
    progress: bool = True,
    say: Callable[[str], None] = logger.info,
) -> PipelineResults:
    """Run every stage into ``out``; returns the results that the report is made from.

    ``preset`` names one of :data:`PRESETS` or is a :class:`Preset` of its own. ``progress``
    shows training progress bars; ``say`` receives a line per stage and result.
    """
    from codebook_features.demos.fsm.analysis import analyze
    from codebook_features.demos.fsm.evaluation import evaluate_model
    from codebook_features.demos.fsm.interventions import state_swaps
    from codebook_features.demos.fsm.report import write_report

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise CodebookError(f"unknown preset {preset!r}: choose {', '.join(PRESETS)}")
        preset_name, preset = preset, PRESETS[preset]
    else:
        preset_name = "custom"
    out = Path(out)
    check_output_dir(out, FSM_DEMO)  # continuing our own demo is the point; nothing else
    mark(out, FSM_DEMO)
    results_file = out / RESULTS_FILE
    results = resume_results(
        results_file,
        PipelineResults.load,
        lambda saved: saved.settings == preset and saved.seed == seed,
    )
    if results is None:
        results = PipelineResults(preset=preset_name, seed=seed, settings=preset)
    results.preset = preset_name
    stages = Stages(results_file, results, say)

    data_dir = out / DATA_DIR
    if not (data_dir / FSM_FILE).exists():
        with stages.stage("data"):
            make_data(data_dir, preset.machine, seed)
    data = FSMData(data_dir)
    fsm = data.fsm()
    validation = data.validation_tokens()

    runs = {BASELINE: None, **{v.name: v for v in preset.variants}}
    model_dirs: dict[str, Path] = {}
    table = results.models
    for name, variant in runs.items():
        run_dir = out / (BASELINE_RUN if variant is None else slug(name))
        if name not in table:
            with stages.stage(f"train {name}"):
                start_from = model_dirs.get(BASELINE) if variant else None
                model_dirs[name] = train_run(
                    data, run_dir, preset, seed, variant, start_from, progress
                )
            with stages.stage(f"evaluate {name}"):
                model = load_for_eval(model_dirs[name])
                metrics = evaluate_model(model, fsm, validation, preset.eval_samples, seed)
                table[name] = TrainedModel.of(metrics, str(run_dir.relative_to(out)))
            say(f"  {name}: state accuracy {metrics.state_accuracy:.1%}, loss {metrics.loss:.4f}")
        else:
            model_dirs[name] = run_dir / FINAL_DIR

    if preset.analysed and (results.analysis is None or results.interventions is None):
        # the analysis also gives the state codes the interventions need: redo it if needed
        results.seconds.pop("analysis", None)  # a stage done again is timed afresh
        with stages.stage("analysis", f"analyse codes of {preset.analysed}"):
            cbm = load_for_eval(model_dirs[preset.analysed])
            tokens = torch.as_tensor(validation)
            analysis = analyze(cbm, fsm, tokens)
            results.analysis = ModelAnalysis(
                model=preset.analysed, summary=analysis.summary, sites=analysis.sites
            )
        results.seconds.pop("interventions", None)
        with stages.stage("interventions", "state interventions"):
            results.interventions = state_swaps(
                cbm, fsm, tokens, analysis.state_codes, preset.transitions, seed
            )
    stages.save()
    write_report(out, results, fsm)
    return results

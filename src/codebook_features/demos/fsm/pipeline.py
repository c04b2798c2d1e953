"""The TokFSM experiment end to end: data, baseline, codebook models, evaluation, analysis,
interventions and a report. Every stage writes its results into the output directory and is
skipped when they are already there, so an interrupted pipeline continues where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from codebook_features.demos.fsm.data import FSMData, make_data
from codebook_features.demos.fsm.results import ModelAnalysis, SwapResults, TrainedModel
from codebook_features.demos.runner import Stages, resume_results, train_or_reuse
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
from codebook_features.settings.saved import Record, read_saved, stamp

logger = logging.getLogger(__name__)

GPT_NEOX_4L = {
    "model_type": "gpt_neox",
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 256,
}
"""The paper's TokFSM transformer: 4 layers, width 128, 4 heads, MLP 512."""


@dataclass
class Variant:
    """A codebook model of the comparison, finetuned from the trained baseline."""

    name: str
    sites: list[str]
    k: int
    num_codes: int
    steps: int
    lr: float = 1e-3


@dataclass
class Preset:
    num_states: int
    num_edges: int
    base: int = 10
    states_per_sequence: int = 32
    train_sequences: int = 40_000
    val_sequences: int = 512
    baseline_steps: int = 1000
    baseline_lr: float = 3e-3
    batch_size: int = 32
    warmup_steps: int = 100
    variants: list[Variant] = field(default_factory=list)
    analysed: str = ""
    """Variant whose codes are analysed and intervened on."""
    eval_samples: int = 256
    transitions: int = 500
    model: dict[str, Any] = field(default_factory=lambda: dict(GPT_NEOX_4L))


PRESETS: dict[str, Preset] = {
    # The paper's machine (100 states, 10 edges) does not reach 95% state accuracy in minutes
    # on two CPU cores; 40 states with 4 edges does, with the same model.
    "default": Preset(
        num_states=40,
        num_edges=4,
        variants=[Variant("Attn+MLP, k=1, C=512", ["attn_heads", "mlp"], 1, 512, 600)],
        analysed="Attn+MLP, k=1, C=512",
    ),
    "full": Preset(
        num_states=100,
        num_edges=10,
        states_per_sequence=64,
        train_sequences=200_000,
        baseline_steps=20_000,
        baseline_lr=1e-3,
        batch_size=64,
        warmup_steps=500,
        variants=[
            Variant("Attn only, k=1, C=2000", ["attn_heads"], 1, 2000, 5000),
            Variant("Attn+MLP, k=1, C=10000", ["attn_heads", "mlp"], 1, 10000, 5000),
            Variant("Attn+MLP, k=4, C=10000", ["attn_heads", "mlp"], 4, 10000, 5000),
            Variant("Attn+MLP, k=16, C=10000", ["attn_heads", "mlp"], 16, 10000, 5000),
        ],
        analysed="Attn+MLP, k=1, C=10000",
        eval_samples=512,
    ),
}


BASELINE = "Baseline (no codebooks)"
"""The name of the model without codebooks in the comparison."""


@dataclass
class PipelineResults(Record):
    """Everything the demo measured; ``results.json`` is :meth:`to_dict`, written after every
    stage, so a run continues where it stopped."""

    preset: str
    """The preset's name (``custom`` for a :class:`Preset` given directly)."""
    seed: int
    settings: Preset
    """The preset itself."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage."""
    models: dict[str, TrainedModel] = field(default_factory=dict)
    """Each model of the comparison (the baseline, then the codebook variants)."""
    analysis: ModelAnalysis | None = None
    """Codes vs states of the analysed variant."""
    interventions: SwapResults | None = None
    """Swapping state codes in the analysed variant."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "preset": self.preset,
            "seed": self.seed,
            "settings": asdict(self.settings),
            "seconds": dict(self.seconds),
            "models": {name: row.to_dict() for name, row in self.models.items()},
        }
        if self.analysis is not None:
            data["analysis"] = self.analysis.to_dict()
        if self.interventions is not None:
            data["interventions"] = self.interventions.to_dict()
        return stamp(data)

    @classmethod
    def load(cls, path: Path) -> PipelineResults:
        """Read ``results.json`` (a newer version's file loads with a warning)."""
        try:
            data = json.loads(path.read_text())
            return cls.from_dict(read_saved(data, cls, str(path)))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CodebookError(
                f"{path} is damaged ({error}); delete it to run every stage again"
            ) from error


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
    from codebook_features.attach.model import CodebookModelConfig
    from codebook_features.training import DataConfig, ModelConfig, RunConfig, TrainingConfig

    model = (
        ModelConfig(name_or_path=str(start_from))
        if start_from
        else ModelConfig(init=dict(preset.model), tokenizer=str(data.tokenizer))
    )
    steps = variant.steps if variant else preset.baseline_steps
    config = RunConfig(
        model=model,
        data=DataConfig(
            dataset=str(data.train),
            validation_dataset=str(data.validation),
            block_size=data.validation_tokens().shape[1],  # one sequence per block
        ),
        codebooks=CodebookModelConfig(num_codes=variant.num_codes, k=variant.k, sites=variant.sites)
        if variant
        else None,
        training=TrainingConfig(
            output_dir=str(out),
            mode="finetune" if variant else "baseline",
            steps=steps,
            batch_size=preset.batch_size,
            lr=variant.lr if variant else preset.baseline_lr,
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
        results = PipelineResults(preset_name, seed, preset)
    results.preset = preset_name
    stages = Stages(results_file, results, say)

    data_dir = out / DATA_DIR
    if not (data_dir / FSM_FILE).exists():
        with stages.stage("data"):
            make_data(
                data_dir,
                preset.num_states,
                preset.num_edges,
                preset.base,
                seed,
                preset.train_sequences,
                preset.val_sequences,
                preset.states_per_sequence,
            )
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
            results.analysis = ModelAnalysis(preset.analysed, analysis.summary, analysis.sites)
        results.seconds.pop("interventions", None)
        with stages.stage("interventions", "state interventions"):
            results.interventions = state_swaps(
                cbm, fsm, tokens, analysis.state_codes, preset.transitions, seed
            )
    stages.save()
    write_report(out, results, fsm)
    return results

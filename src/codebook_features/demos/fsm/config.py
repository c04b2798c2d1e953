"""The TokFSM experiment's settings: the machine and its data, the models compared, the presets,
and the settings of each ``codebook fsm`` step. Each setting is declared once here; the steps'
defaults are the default preset's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from codebook_features.demos.runner import Variant
from codebook_features.settings.base import (
    NonNegativeInt,
    PositiveInt,
    PositiveNumber,
    Settings,
)
from codebook_features.settings.options import POSITIONAL

GPT_NEOX_4L = {
    "model_type": "gpt_neox",
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 256,
}
"""The paper's TokFSM transformer: 4 layers, width 128, 4 heads, MLP 512."""


class MachineSettings(Settings):
    """A random finite state machine and the token sequences it writes."""

    num_states: int = Field(40, ge=2)
    """States of the machine (paper: 100)."""
    num_edges: PositiveInt = 4
    """Out-edges of every state (paper: 10)."""
    base: int = Field(10, ge=2)
    """States are written as digits in this base."""
    states_per_sequence: int = Field(32, ge=2)
    """States per sequence (rollout)."""
    train_sequences: PositiveInt = 40_000
    """Training sequences."""
    val_sequences: PositiveInt = 512
    """Validation sequences."""


class Preset(Settings):
    """Sizes of every stage of the demo."""

    machine: MachineSettings = Field(default_factory=MachineSettings)
    baseline_steps: PositiveInt = 1000
    baseline_lr: PositiveNumber = 3e-3
    batch_size: PositiveInt = 32
    warmup_steps: NonNegativeInt = 100
    variants: list[Variant] = Field(default_factory=list)
    """The codebook models compared with the baseline (finetuned from it)."""
    variant_steps: PositiveInt = 600
    """Steps of a variant that does not give its own."""
    variant_lr: PositiveNumber = 1e-3
    """Learning rate of a variant that does not give its own."""
    analysed: str = ""
    """Variant whose codes are analysed and intervened on."""
    eval_samples: PositiveInt = 256
    transitions: PositiveInt = 500
    model: dict[str, Any] = Field(default_factory=lambda: dict(GPT_NEOX_4L))

    @model_validator(mode="before")
    @classmethod
    def _machine_of_earlier_files(cls, data: Any) -> Any:
        """Results files written before the machine's settings were nested hold them beside
        the others: read them into ``machine``."""
        if isinstance(data, dict) and "machine" not in data:
            flat = {k: data[k] for k in MachineSettings.model_fields if k in data}
            if flat:
                rest = {k: v for k, v in data.items() if k not in flat}
                return {**rest, "machine": flat}
        return data


PRESETS: dict[str, Preset] = {
    # The paper's machine (100 states, 10 edges) does not reach 95% state accuracy in minutes
    # on two CPU cores; 40 states with 4 edges does, with the same model.
    "default": Preset(
        variants=[
            Variant(
                name="Attn+MLP, k=1, C=512",
                sites=["attn_heads", "mlp"],
                k=1,
                num_codes=512,
                steps=600,
                lr=1e-3,
            )
        ],
        analysed="Attn+MLP, k=1, C=512",
    ),
    "full": Preset(
        machine=MachineSettings(
            num_states=100, num_edges=10, states_per_sequence=64, train_sequences=200_000
        ),
        baseline_steps=20_000,
        baseline_lr=1e-3,
        batch_size=64,
        warmup_steps=500,
        variants=[
            Variant(
                name=f"{sites}, k={k}, C={codes}",
                sites=kinds,
                k=k,
                num_codes=codes,
                steps=5000,
                lr=1e-3,
            )
            for sites, kinds, k, codes in (
                ("Attn only", ["attn_heads"], 1, 2000),
                ("Attn+MLP", ["attn_heads", "mlp"], 1, 10000),
                ("Attn+MLP", ["attn_heads", "mlp"], 4, 10000),
                ("Attn+MLP", ["attn_heads", "mlp"], 16, 10000),
            )
        ],
        analysed="Attn+MLP, k=1, C=10000",
        eval_samples=512,
    ),
}
DEFAULT = PRESETS["default"]
CODEBOOK_VARIANT = DEFAULT.variants[0]


# ---------------------------------------------------------------------- the steps' settings
class MakeData(MachineSettings):
    """Create an FSM, its tokenizer and token datasets."""

    output_dir: str = Field(json_schema_extra=POSITIONAL)
    """The data directory to create."""
    seed: NonNegativeInt = 0
    """Seeds the machine and the sequences."""
    overwrite: bool = False
    """Replace TokFSM data made earlier in ``output_dir``."""


class TrainStep(Settings):
    """Train a baseline, or a codebook model (from a baseline, with ``start_from``)."""

    data: str
    """The data directory (``codebook fsm make``)."""
    output_dir: str
    """The run directory."""
    start_from: str | None = None
    """A trained baseline to finetune with codebooks (empty: train a baseline)."""
    sites: list[str] = Field(default_factory=lambda: list(CODEBOOK_VARIANT.sites))
    """Codebook sites (with ``start_from``)."""
    k: PositiveInt = CODEBOOK_VARIANT.k
    """Codes per token and group (with ``start_from``)."""
    num_codes: PositiveInt = CODEBOOK_VARIANT.num_codes
    """Codes per group (with ``start_from``)."""
    steps: PositiveInt | None = None
    """Optimizer steps (default: the default preset's, 1000 for a baseline, 600 with
    codebooks)."""
    seed: NonNegativeInt = 0
    """Seeds the model and the data order."""


class ModelOnData(Settings):
    """A trained model and the data it was trained on, and where the JSON result goes."""

    model: str
    """The trained model's directory (a run's ``final/``)."""
    data: str
    """The data directory."""
    output_file: str | None = None
    """Also write the JSON result to this file."""
    seed: NonNegativeInt = 0
    """Seeds the sampling."""


class EvaluateStep(ModelOnData):
    """State accuracy, first-transition accuracy and loss."""

    samples: PositiveInt = DEFAULT.eval_samples
    """Sequences sampled from BOS."""


class AnalyzeStep(ModelOnData):
    """Codes vs states, the neuron baseline, purity."""


class InterveneStep(ModelOnData):
    """Swap state codes and measure the effect."""

    transitions: PositiveInt = DEFAULT.transitions
    """Transitions swapped."""


class DemoSettings(Settings):
    """The whole experiment with a report (offline)."""

    output_dir: str = "runs/demo"
    """The demo's directory (new, or an earlier demo to continue)."""
    preset: Literal["default", "full"] = "default"
    """``full``: the paper's machine (100 states, 10 edges) and more of Table 1; hours."""
    seed: NonNegativeInt = 0
    """Seeds the machine, the data and every model."""
    progress: bool = True
    """Show progress (stages and training bars)."""

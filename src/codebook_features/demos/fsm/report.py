"""The TokFSM report: Markdown tables in the shape of the paper's, PNG plots, and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from codebook_features.demos.fsm.machine import FSM
from codebook_features.demos.fsm.results import ModelAnalysis, SwapResults
from codebook_features.persist.files import (
    CODES_VS_NEURONS_PLOT,
    INTERVENTIONS_PLOT,
    PLOTS_DIR,
    REPORT_FILE,
    TRAINING_PLOT,
    write_text,
)
from codebook_features.persist.rundir import RunDir

if TYPE_CHECKING:
    from codebook_features.demos.fsm.pipeline import PipelineResults

PAPER = {
    "Table 1 (N=100, E=10)": "no codebook 96.77% state accuracy; Attn only k=1 96.39%; "
    "Attn+MLP k=1 63.65%, k=4 80.69%, k=16 91.53%",
    "Codes vs neurons": "mean precision of state codes 97.1% vs best neurons 70.5%",
}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def plot_training(out: Path, results: PipelineResults, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, row in results.models.items():
        val = RunDir(out / row.run).val_rows()
        if not val:
            continue
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label=name)
    ax.set(
        xlabel="step (codebook models continue from the trained baseline)",
        ylabel="validation loss",
        title="Training",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_codes_vs_neurons(analysis: ModelAnalysis, path: Path) -> None:
    per_state = analysis.summary.per_state
    states = [r.state for r in per_state]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(
        [s - 0.2 for s in states],
        [r.precision for r in per_state],
        width=0.4,
        label="best state code",
    )
    ax.bar(
        [s + 0.2 for s in states],
        [r.neuron_precision for r in per_state],
        width=0.4,
        label="best neuron at the code's recall",
    )
    ax.set(
        xlabel="FSM state",
        ylabel="precision",
        ylim=(0, 1.05),
        title="Classifying the current state: codes vs neurons",
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_interventions(interventions: SwapResults, path: Path) -> None:
    names = list(interventions.components)
    token = [interventions.components[n].normalized_jsd for n in names]
    state = [interventions.components[n].next_state_normalized_jsd for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    rows = range(len(names))
    ax.barh([r + 0.2 for r in rows], token[::-1], height=0.4, label="next token")
    ax.barh([r - 0.2 for r in rows], state[::-1], height=0.4, label="next state (all digits)")
    ax.set_yticks(list(rows), names[::-1])
    ax.legend(fontsize=8)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set(
        xlabel="JSD to the target state's true next-state distribution (none = 1)",
        title="Swapping state codes",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _describe_model(init: dict[str, Any]) -> str:
    names = {
        "num_hidden_layers": "layers",
        "n_layer": "layers",
        "hidden_size": "width",
        "n_embd": "width",
        "num_attention_heads": "heads",
        "n_head": "heads",
        "intermediate_size": "MLP width",
    }
    parts = [f"{names[k]} {v}" for k, v in init.items() if k in names]
    return f"{init.get('model_type', 'model')} ({', '.join(parts)})" if parts else str(init)


def write_report(out: Path, results: PipelineResults, fsm: FSM) -> Path:
    plots = out / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    plot_training(out, results, plots / TRAINING_PLOT)
    settings = results.settings
    lines = [
        "# TokFSM: codebook features on a finite state machine",
        "",
        f"Preset `{results.preset}`, seed {results.seed}. Machine: {fsm.num_states} states, "
        f"{fsm.num_edges} out-edges each (uniform), base {fsm.base} ({fsm.digits} digits per "
        f"state), {settings.machine.states_per_sequence} states per sequence. Model: "
        f"{_describe_model(settings.model)}, trained from scratch as the baseline; "
        "codebook models are finetuned from it with codebooks in the loop (k-means initialised).",
    ]
    if fsm.num_states != 100 or fsm.num_edges != 10:
        lines += [
            "",
            "The paper's machine has 100 states and 10 edges (`--preset full`); this "
            "run uses a smaller one so that it fits in minutes on a CPU.",
        ]
    lines += [
        "",
        "## Models (cf. the paper's Table 1)",
        "",
        "| Model | Loss | LM accuracy | State accuracy | First-transition accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, row in results.models.items():
        lines.append(
            f"| {name} | {row.loss:.4f} | {_pct(row.token_accuracy)} | "
            f"{_pct(row.state_accuracy)} | {_pct(row.first_transition_accuracy)} |"
        )
    lines += [
        "",
        f"Paper: {PAPER['Table 1 (N=100, E=10)']}.",
        "",
        f"![training]({PLOTS_DIR}/{TRAINING_PLOT})",
    ]
    analysis = results.analysis
    if analysis:
        plot_codes_vs_neurons(analysis, plots / CODES_VS_NEURONS_PLOT)
        s = analysis.summary
        lines += [
            "",
            f"## Codes that stand for states ({analysis.model})",
            "",
            f"Over {s.tokens:,} validation tokens ({s.state_tokens:,} complete a state), "
            f'the best {s.code_sites.upper()} code for each state classifies "the current '
            f'state is s" with mean precision **{_pct(s.mean_code_precision)}** (mean recall '
            f"{_pct(s.mean_code_recall)}); the single best neuron of any site, thresholded at "
            f"each code's recall, reaches **{_pct(s.mean_neuron_precision)}**. "
            f"Paper: {PAPER['Codes vs neurons']}.",
            "",
            "| Site | Mean precision | Mean recall | Purity | States with a code >90% precise "
            "and >50% recall |",
            "|---|---|---|---|---|",
        ]
        for site, scores in analysis.sites.items():
            lines.append(
                f"| {site} | {_pct(scores.mean_precision)} | {_pct(scores.mean_recall)}"
                f" | {_pct(scores.purity)} | "
                f"{scores.states_with_a_precise_code} |"
            )
        lines += [
            "",
            "Purity: the share of a site's firings on state tokens that fall on the "
            "state each code fires for most.",
            "",
            f"![codes vs neurons]({PLOTS_DIR}/{CODES_VS_NEURONS_PLOT})",
        ]
    interventions = results.interventions
    if interventions:
        plot_interventions(interventions, plots / INTERVENTIONS_PLOT)
        lines += [
            "",
            "## Swapping state codes (cf. the paper's Figure 4)",
            "",
            f"For {interventions.transitions} random transitions, the codes at the last token "
            "of a prefix ending in state a are replaced by the codes of a random target state b. "
            "Shown: the Jensen-Shannon divergence between the model's next-token distribution "
            "and state b's true one, averaged over transitions and divided by the same without "
            "intervention (1 = no effect, 0 = the model acts as in b); the same for the whole "
            "next state (all its digits, each predicted after the previous ones, with the "
            "intervention still at the prefix's last token); and how many of the model's top "
            "next states are b's out-neighbours.",
            "",
            "| Component | Normalised JSD, next token | Normalised JSD, next state | "
            "Top next states that are b's |",
            "|---|---|---|---|",
        ]
        for name, row in interventions.components.items():
            lines.append(
                f"| {name} | {row.normalized_jsd:.3f} | "
                f"{row.next_state_normalized_jsd:.3f} | "
                f"{_pct(row.target_edge_overlap)} |"
            )
        lines += ["", f"![interventions]({PLOTS_DIR}/{INTERVENTIONS_PLOT})"]
    timings = results.seconds
    if timings:
        lines += ["", "## Time", "", "| Stage | Seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    path = out / REPORT_FILE
    write_text(path, "\n".join(lines) + "\n")
    return path


def summary_lines(results: PipelineResults) -> list[str]:
    """A few lines for the terminal."""
    lines = []
    for name, row in results.models.items():
        lines.append(
            f"{name:<28} state accuracy {_pct(row.state_accuracy):>7}  loss {row.loss:.4f}"
        )
    analysis = results.analysis
    if analysis:
        s = analysis.summary
        lines.append(
            f"state codes: mean precision {_pct(s.mean_code_precision)} vs best "
            f"neurons {_pct(s.mean_neuron_precision)}"
        )
    interventions = results.interventions
    if interventions:
        parts = [
            f"{n} {v.normalized_jsd:.2f}"
            for n, v in interventions.components.items()
            if n != "none"
        ]
        lines.append(
            "swapping state codes, normalised next-token JSD (no effect = 1): " + ", ".join(parts)
        )
    return lines

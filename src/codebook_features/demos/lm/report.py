"""The language demo's report: ``report.md`` (Table 2 and Table 3 analogues, codes found,
codes vs neurons vs SAE latents), ``plots/models.png``, and a short summary for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from codebook_features.persist.files import LM_LOSS_PLOT, PLOTS_DIR, REPORT_FILE, write_text
from codebook_features.steering.results import ConditionResult, Reported, TopicResult

if TYPE_CHECKING:
    from codebook_features.demos.lm.pipeline import LmResults

PAPER_TABLE_2 = "TinyStories: 1.57 finetuned vs 1.66 with attention codebooks (k = 8)"


def write_report(out: Path, results: LmResults) -> None:
    plot_models(out, results)
    write_text(out / REPORT_FILE, markdown(out, results))


def _pct(rate: dict[str, Any] | None) -> str:
    if rate is None or rate.get("rate") is None:
        return "-"
    return f"{rate['rate']:.0%} [{rate['low']:.0%}, {rate['high']:.0%}]"


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(out: Path, results: LmResults) -> str:
    p = results.settings
    m = p.model
    lines = [
        "# Codebook features on a small language model, offline",
        "",
        f"Scale: a GPT-NeoX of {m['num_hidden_layers']} "
        f"layer{'s' if m['num_hidden_layers'] != 1 else ''} x {m['hidden_size']} "
        f"({m['num_attention_heads']} heads), byte-level BPE of {p.vocab_size} tokens, trained "
        f"from scratch for {p.base_steps} steps of {p.batch_size} x {p.block_size} tokens on two "
        "CPU cores; each Table 2 model then trains "
        f"{p.variant_steps} more steps. The paper finetuned Pythia-410M on WikiText-103 and "
        "1-layer TinyStories models on GPUs: read these numbers as the method working at toy "
        "scale, not as a reproduction of its values.",
        "",
    ]
    lines += _corpus(results)
    lines += _table2(results)
    lines += _search(results)
    lines += _table3(results)
    lines += _timings(results)
    lines += [
        "## Files",
        "",
        f"`results.json` (everything above), `{PLOTS_DIR}/{LM_LOSS_PLOT}`, the runs "
        "(`base/`, one directory per model, each with its metrics and plots), the code store "
        "(`store/`, browse it with `codebook search ... --store store`), and the steering "
        "evaluation (`steering/steering.md`, `steering/plots/steering.png`).",
        "",
    ]
    return "\n".join(lines)


def _corpus(results: LmResults) -> list[str]:
    corpus = results.corpus or {}
    train, validation = corpus.get("train", {}), corpus.get("validation", {})
    lines = [
        "## Corpus",
        "",
        "| label | train documents | train words | validation documents |",
        "|---|---|---|---|",
    ]
    for label in sorted(train):
        lines.append(
            f"| {label} | {train[label]['documents']:,} | {train[label]['words']:,} | "
            f"{validation.get(label, {}).get('documents', 0):,} |"
        )
    return [*lines, ""]


def _table2(results: LmResults) -> list[str]:
    models = results.settings.reference
    reference = results.models.get(models, {}).get("loss") if models else None
    models = results.models
    lines = [
        "## Table 2: what codebooks cost",
        "",
        "Validation loss (nats per token) and perplexity after the same number of steps from "
        f"the base model (paper, {PAPER_TABLE_2}).",
        "",
        "| model | loss | perplexity | accuracy | loss vs plain finetune |",
        "|---|---|---|---|---|",
    ]
    compared = {v.name for v in results.settings.variants if v.sites}
    for name, row in models.items():
        change = f"{row['loss'] / reference - 1:+.1%}" if reference and name in compared else "-"
        lines.append(
            f"| {name} | {row['loss']:.3f} | {row['perplexity']:.1f} | {row['accuracy']:.3f} | "
            f"{change} |"
        )
    steered = models.get(results.settings.steered)
    if reference and steered:
        cost = steered["loss"] / reference - 1
        verdict = "within" if cost <= 0.08 else "not within"
        lines += [
            "",
            f"Goal: attention codebooks within 8% of the plain finetune's loss: {verdict} "
            f"({cost:+.1%}).",
        ]
    return [*lines, ""]


def _timings(results: LmResults) -> list[str]:
    seconds = results.seconds
    lines = ["## Time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {value:,.0f} |" for name, value in seconds.items()]
    lines.append(f"| total | {sum(seconds.values()):,.0f} |")
    return [*lines, ""]


def _search(results: LmResults) -> list[str]:
    search = results.search
    if search is None:
        return []
    lines = ["## Codes found", "", "Topic codes (best by F1 for each label):", ""]
    lines += ["| label | codes (documents covered, precision, recall) |", "|---|---|"]
    for label, codes in search["topics"].items():
        shown = ", ".join(
            f"`{c['code']}` ({c['documents']}, {_num(c.get('precision'))}, {_num(c.get('recall'))})"
            for c in codes
        )
        lines.append(f"| {label} | {shown or '-'} |")
    lines += ["", "Regex features (best codes by F1):", ""]
    lines += ["| regex | matches | best code | precision | recall |", "|---|---|---|---|---|"]
    for pattern, found in search["regexes"].items():
        best = found["codes"][0] if found["codes"] else None
        lines.append(
            f"| `{pattern}` | {found['matches']:,} | "
            + (
                f"`{best['code']}` | {best['precision']:.2f} | {best['recall']:.2f} |"
                if best
                else "- | - | - |"
            )
        )
    lines += [
        "",
        f"Codes vs neurons vs SAE latents at `{search['baseline_site']}` (precision at the "
        "best code's recall, the paper's protocol; the SAE is a TopK SAE with as many latents "
        "as codes and the same k, trained on the stored activations):",
        "",
        "| regex | code precision | neuron precision | SAE precision |",
        "|---|---|---|---|",
    ]
    for row in search["baselines"]:
        lines.append(
            f"| `{row['pattern']}` | {_num(row['code_precision'])} | "
            f"{_num(row['neuron_precision'])} | {_num(row['sae_precision'])} |"
        )
    return [*lines, ""]


def _table3(results: LmResults) -> list[str]:
    steering = results.steering
    if steering is None:
        return []
    topics = steering.get("topics") or {}
    choice = steering.get("topic_choice") or {}
    rows = steering["rows"]
    p = results.settings
    accuracy = steering["classifier"]["accuracy"]
    if not topics:  # an evaluation of an earlier version: its own report has the sweep
        return [
            "## Table 3: steering toward a topic",
            "",
            f"See `{steering['dir']}/steering.md`.",
            "",
        ]
    moved = sum(t["moved"] for t in topics.values())
    texts = (
        "the documents"
        if p.classifier_window is None
        else f"{p.classifier_window}-word windows of the documents"
    )
    fluency = next(iter(topics.values()))["unsteered"]["perplexity"] if topics else None
    lines = [
        "## Table 3: steering toward a topic",
        "",
        f"Steered model: {p.steered}, validation loss "
        f"{_num((results.models.get(p.steered) or {}).get('loss'), 3)}. Fluency: its unsteered "
        f"generations have a perplexity of {_num(fluency, 1)} under it (lower is closer to "
        "its training text).",
        "",
        f"Topics: {choice.get('rule', 'given in the preset')}. The judge is a bag-of-words "
        f"classifier trained on {texts} of the training split; it labels {_pct(accuracy)} "
        f"of {texts} of the validation split right, and human text is the share of a label's "
        "that it calls on topic, the rate genuine text of the topic gets. The codes were chosen "
        f"on the validation documents (the store), {_chosen_by(p)}. The code setting is "
        "chosen on a sweep with its own "
        f"seeds ({p.selection_samples} samples per prompt): the highest classifier rate with "
        "perplexity under 2x the unsteered; activation addition is the alpha whose sweep "
        "perplexity is closest to it. Both are then generated again from fresh seeds "
        f"({p.generation.samples} samples x {len(p.prompts)} prompts, temperature "
        f"{p.generation.temperature:g}), and those texts are the ones scored here, with 95% "
        "intervals. Moved: from at most 20% to at least 60%, intervals apart, under 2x the "
        f"perplexity. **{moved} of {len(topics)} topics moved.**",
        "",
        *_prompt_leans(choice.get("prompts")),
        "| topic | human text | unsteered | codes | setting | perplexity "
        "(unsteered -> codes) | regex (unsteered -> codes) | activation addition | its "
        "perplexity | moved |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_label = steering["classifier"].get("per_label", {})
    for name, topic in topics.items():
        base, codes, added = topic["unsteered"], topic["steered"], topic["activation_addition"]
        human = (per_label.get(name) or {}).get("recall")
        lines.append(
            f"| {name} | {'-' if human is None else f'{human:.0%}'} | {_ci(base, 'classifier')} | "
            f"{_ci(codes, 'classifier')} | {_setting(codes)} | {_num(base['perplexity'], 1)} "
            f"-> {_num(codes and codes['perplexity'], 1)} | {_ci(base, 'regex')} -> "
            f"{_ci(codes, 'regex')} | {_ci(added, 'classifier')} ({_setting(added)}) | "
            f"{_num(added and added['perplexity'], 1)} | "
            f"{TopicResult.model_validate(topic).verdict} |"
        )
    lines += ["", *_sweep(rows, topics)]
    lines += ["Steered generations (codes forced, fresh seeds):", ""]
    for name in topics:
        fresh = [
            r
            for r in rows
            if r["concept"] == name and r["method"] == "codes" and r.get("seeds") == "fresh"
        ]
        if fresh and fresh[0]["examples"]:
            lines.append(f"- **{name}**: {' '.join(fresh[0]['examples'][0].split())}")
    return [*lines, ""]


def _chosen_by(p: Any) -> str:
    """How the demo chose each topic's codes, in words."""
    if p.codes_from == "texts":
        return (
            f"one per head by log-odds of firing on at most {p.examples} of the label's "
            "documents rather than on twice as many others"
        )
    return f"one per head ranked by {p.rule.rank} on the label's tokens"


def _prompt_leans(leans: dict[str, Any] | None) -> list[str]:
    """Which label each prompt's first word leans to in the training corpus."""
    if not leans:  # a demo of an earlier version
        return []
    from codebook_features.steering.topics import LEANING_SHARE

    cells = [
        f"{prompt!r}: " + ("-" if lean is None else f"{lean['label']} {lean['share']:.0%}")
        for prompt, lean in leans.items()
    ]
    return [
        "Prompts, with the label whose sentences most often start with their first word (its "
        "share of the labels' rates; over "
        f"{LEANING_SHARE:.0%}, and over twice an even share, it leans, so its unsteered texts "
        f"would too): {', '.join(cells)}.",
        "",
    ]


def _sweep(rows: list[dict[str, Any]], topics: dict[str, Any]) -> list[str]:
    """The sweep the settings were chosen on: classifier rate (perplexity) per setting."""
    swept = [
        r for r in rows if r.get("seeds", "selection") == "selection" and r["method"] != "none"
    ]
    settings = list(dict.fromkeys(_row_setting(r) for r in swept))
    if not settings:
        return []
    lines = [
        "The sweep (its own seeds): on topic by the classifier (perplexity); unsteered first.",
        "",
        "| topic | unsteered | " + " | ".join(settings) + " |",
        "|---" * (len(settings) + 2) + "|",
    ]
    for name in topics:
        mine = {_row_setting(r): r for r in swept if r["concept"] == name}
        base = next(
            r
            for r in rows
            if r["concept"] == name and r["method"] == "none" and r.get("seeds") != "fresh"
        )
        cells = [_cell(base)] + [_cell(mine.get(s)) for s in settings]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _row_setting(row: dict[str, Any]) -> str:
    return ConditionResult.model_validate(row).strength


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    return f"{row['classifier']['rate']:.0%} ({_num(row['perplexity'], 0)})"


def _ci(reported: dict[str, Any] | None, measure: Literal["classifier", "regex"]) -> str:
    return "-" if reported is None else Reported.model_validate(reported).on_topic(measure)


def _setting(reported: dict[str, Any] | None) -> str:
    return "-" if reported is None else Reported.model_validate(reported).setting


def plot_models(out: Path, results: LmResults) -> None:
    """Validation loss of the base and of every Table 2 model, by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codebook_features.persist.files import atomic_file
    from codebook_features.persist.rundir import RunDir

    fig, ax = plt.subplots(figsize=(6, 4))
    offset = 0
    for name, row in results.models.items():
        points = [(r["step"], r["loss"]) for r in RunDir(out / row["run"]).val_rows()]
        if name == "base":
            offset = row["steps"]
            ax.plot(*zip(*points, strict=True), "k-o", label="base", markersize=3)
        elif points:
            steps, losses = zip(*points, strict=True)
            ax.plot([s + offset for s in steps], losses, "-o", label=name, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / PLOTS_DIR / LM_LOSS_PLOT
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def summary_lines(results: LmResults) -> list[str]:
    """A few lines for the terminal."""
    lines = []
    name = results.settings.reference
    reference = results.models.get(name, {}).get("loss") if name else None
    compared = {v.name for v in results.settings.variants if v.sites}
    for model, row in results.models.items():
        extra = (
            f" ({row['loss'] / reference - 1:+.1%} vs {name})"
            if reference and model in compared
            else ""
        )
        lines.append(f"{model}: validation loss {row['loss']:.3f}{extra}")
    for name, topic in ((results.steering or {}).get("topics") or {}).items():
        codes = topic["steered"]
        lines.append(
            f"{name}: on topic {_ci(topic['unsteered'], 'classifier')} unsteered, "
            f"{_ci(codes, 'classifier')} with its codes forced ({_setting(codes)})"
            + (" - moved" if topic["moved"] else "")
        )
    return lines

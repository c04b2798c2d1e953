"""The steering evaluation's report: ``steering.json``, a Markdown table and a plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from codebook_features.persist.files import (
    PLOTS_DIR,
    STEERING_PLOT,
    STEERING_REPORT,
    STEERING_RESULTS,
    write_json,
    write_text,
)
from codebook_features.steering.metrics import Rate
from codebook_features.steering.results import (
    GOAL,
    ConditionResult,
    Reported,
    SteeringReport,
    TopicResult,
)


def write_report(out: Path, report: SteeringReport) -> None:
    write_json(out / STEERING_RESULTS, report.to_dict())
    write_text(out / STEERING_REPORT, markdown(report))
    plot(report, out / PLOTS_DIR / STEERING_PLOT)


def load_report(out: Path) -> SteeringReport:
    path = out / STEERING_RESULTS
    return SteeringReport.from_saved(json.loads(path.read_text()), str(path))


def _rate(rate: Rate | None) -> str:
    if rate is None:
        return "-"
    return f"{rate.rate:.0%} [{rate.low:.0%}, {rate.high:.0%}]"


def _number(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def markdown(report: SteeringReport) -> str:
    from codebook_features.steering.eval_config import nested_content

    settings = nested_content(report.settings)  # also a report of the earlier, flat layout
    generation = settings["generation"]
    if settings.get("classifier_data"):
        judge = (
            f"Codes and steering vectors were chosen on all of the store's documents; the topic "
            f"classifier (bag of words) learned from `{settings['classifier_data']}` and labels "
        )
    else:
        judge = (
            f"Codes and steering vectors were chosen on {settings['selection_fraction']:.0%} of "
            "the store's documents; the topic classifier (bag of words) learned from the "
            "others and labels "
        )
    lines = [
        "# Steering evaluation",
        "",
        f"Model `{report.model}`, store `{report.store}`. {len(settings['prompts'])} prompts x "
        f"{generation['samples']} samples per reported condition, "
        f"{generation['max_new_tokens']} new tokens, temperature {generation['temperature']}, "
        f"seed {generation['seed']}. "
        + judge
        + f"{_rate(report.classifier.accuracy)} of the "
        + (
            f"{window}-word windows of the "
            if (window := settings.get("classifier_window")) is not None
            else ""
        )
        + "store's documents it did not learn from right.",
        "",
        "On-topic rates are shares of generations with a 95% Wilson interval; perplexity is that "
        "of the generated tokens under the unsteered model.",
        "",
    ]
    if report.topics:
        ratio = settings.get("max_perplexity_ratio", 2.0)
        lines += [
            "## Reported, on fresh generations",
            "",
            "The code setting is the sweep's highest classifier rate with perplexity under "
            f"{ratio:g}x the unsteered; activation addition is the alpha whose sweep "
            "perplexity is closest to it. Both were generated again from fresh seeds. Moved: "
            f"from at most {GOAL['from_at_most']:.0%} to at least {GOAL['to_at_least']:.0%} "
            "(classifier), intervals apart, under the perplexity limit.",
            "",
            "Human text: the share of the classifier's held-out texts of the label"
            + (f" ({window}-word windows)" if window is not None else "")
            + " that it calls on topic, the rate genuine text of the topic gets.",
            "",
            "| topic | human text (classifier) | unsteered (classifier) | codes (classifier) | "
            "codes (regex) | perplexity (unsteered, codes) | setting | activation addition "
            "(classifier) | its perplexity | moved |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for concept, topic in report.topics.items():
            score = report.classifier.per_label.get(concept)
            lines.append(_topic_line(concept, topic, None if score is None else score.recall))
        lines.append("")
    lines += ["## The sweep", ""]
    for concept in report.concepts:
        saved = report.concepts[concept]
        codes = ", ".join(c["code"] for c in saved["codes"])
        if not saved.get("held_out", True):
            chosen = "from a concept file chosen on other documents: **not held out**"
        elif settings.get("classifier_data"):
            chosen = "chosen on the store's documents, none of which the classifier learned from"
        else:
            chosen = "chosen on the selection documents (held out from the classifier)"
        lines += [
            f"### {concept}",
            "",
            f"Codes, best first ({chosen}): {codes}",
            "",
            "| condition | on topic (regex) | on topic (classifier) | perplexity | distinct-1 "
            "| distinct-2 |",
            "|---|---|---|---|---|---|",
        ]
        for row in report.rows_of(concept):
            lines.append(
                f"| {row.strength} | {_rate(row.regex)} | {_rate(row.classifier)} | "
                f"{_number(row.perplexity, 1)} | {_number(row.distinct_1)} | "
                f"{_number(row.distinct_2)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _setting(reported: Reported | None) -> str:
    return "-" if reported is None else reported.setting


def _topic_line(concept: str, topic: TopicResult, human: float | None) -> str:
    base, codes, actadd = topic.unsteered, topic.steered, topic.activation_addition
    limit = "" if topic.within_perplexity or codes is None else " (none under the limit)"
    human_rate = "-" if human is None or math.isnan(human) else f"{human:.0%}"
    return (
        f"| {concept} | {human_rate} | {base.on_topic('classifier')} | "
        + (
            f"{codes.on_topic('classifier')} | "
            f"{codes.on_topic('regex')} | "
            f"{_number(base.perplexity, 1)}, {_number(codes.perplexity, 1)} | "
            if codes is not None
            else "- | - | - | "
        )
        + f"{_setting(codes)}{limit} | "
        + (
            f"{actadd.on_topic('classifier')} ({_setting(actadd)}) | "
            f"{_number(actadd.perplexity, 1)} | "
            if actadd is not None
            else "- | - | "
        )
        + topic.verdict
        + " |"
    )


def summary_lines(report: SteeringReport) -> list[str]:
    """One line per concept, for a terminal: the reported conditions on fresh generations
    (classifier rates), or for a report of an earlier version the sweep's strongest ones."""
    lines = []
    for concept in report.concepts:
        topic = report.topics.get(concept)
        if topic is not None:
            base = topic.unsteered
            parts = [f"{concept}: unsteered {base.classifier:.0%}"]
            for name, reported in (
                ("codes", topic.steered),
                ("activation addition", topic.activation_addition),
            ):
                if reported is not None:
                    parts.append(
                        f"{name} {reported.classifier:.0%} ({_setting(reported)}; perplexity "
                        f"{_number(reported.perplexity, 1)} vs {_number(base.perplexity, 1)})"
                    )
            lines.append(", ".join(parts) + (" - moved" if topic.moved else ""))
            continue
        base_row = report.rows_of(concept, "none")[0]
        parts = [f"{concept}: unsteered {base_row.classifier.rate:.0%}"]
        for method, name in (("codes", "codes"), ("actadd", "activation addition")):
            rows = report.rows_of(concept, method)
            if rows:
                best = max(rows, key=lambda r: r.classifier.rate)
                parts.append(
                    f"{name} up to {best.classifier.rate:.0%} ({best.strength}; perplexity "
                    f"{_number(best.perplexity, 1)} vs {_number(base_row.perplexity, 1)})"
                )
        lines.append(", ".join(parts))
    return lines


def plot(report: SteeringReport, path: Path) -> None:
    """Per concept: on-topic rate against perplexity, by the classifier (top row) and by the
    regex (bottom row, when concepts have one), for the code sweep (one line per slot mode
    and positions) and the activation-addition sweep, each from the unsteered point, with
    the reported conditions on fresh generations in red, so both methods are compared at
    matched perplexity on one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codebook_features.persist.files import atomic_file

    concepts = list(report.concepts)
    measures = [("classifier", "on topic (classifier)")]
    if any(r.regex is not None for r in report.rows):
        measures.append(("regex", "on topic (regex)"))
    fig, axes = plt.subplots(
        len(measures),
        len(concepts),
        figsize=(4.5 * len(concepts), 3.8 * len(measures)),
        squeeze=False,
        sharey=True,
    )
    for column, concept in enumerate(concepts):
        base = report.rows_of(concept, "none")[0]
        series: dict[str, list[ConditionResult]] = {}
        for row in report.rows_of(concept):
            if row.method == "codes":
                series.setdefault(f"codes ({row.mode}, {row.positions})", []).append(row)
            elif row.method == "actadd":
                series.setdefault(f"activation addition ({row.positions})", []).append(row)
        for line, (measure, axis_label) in enumerate(measures):
            ax = axes[line][column]
            if getattr(base, measure) is None:
                ax.set_axis_off()
                continue

            def rate(r: ConditionResult, measure: str = measure) -> float:
                return getattr(r, measure).rate

            for label, rows in series.items():
                points = [base, *rows]
                ax.plot(
                    [r.perplexity for r in points], [rate(r) for r in points], "o-", label=label
                )
                for r in rows:
                    if r.method == "actadd" and r.alpha == 0:
                        continue  # the unsteered point
                    text = f"{r.codes}" if r.method == "codes" else f"a={r.alpha:g}"
                    ax.annotate(text, (r.perplexity, rate(r)), fontsize=7)
            ax.scatter([base.perplexity], [rate(base)], color="black", zorder=5)
            for r in report.rows_of(concept, seeds="fresh"):
                if getattr(r, measure) is None:
                    continue
                marker = {"none": "s", "codes": "*", "actadd": "D"}[r.method]
                ax.scatter(
                    [r.perplexity],
                    [rate(r)],
                    marker=marker,
                    s=90,
                    color="red",
                    zorder=6,
                    label=f"reported: {r.strength}" if line == 0 else None,
                )
            ax.set_title(concept)
            ax.set_xlabel("perplexity under the unsteered model")
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if column == 0:
                ax.set_ylabel(axis_label)
    for ax in axes[0]:
        if ax.axison:
            ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)

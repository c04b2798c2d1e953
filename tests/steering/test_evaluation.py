"""The steering evaluation on a tiny model trained with a planted concept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codebook_features.errors import CodebookError
from codebook_features.steering.config import GenerationSettings
from codebook_features.steering.evaluation import SteeringEvalConfig, evaluate_steering
from codebook_features.steering.report import load_report
from codebook_features.store.reader import CodeStore
from tests.steering.planted import DRAGON_REGEX, planted

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`


def settings(world, out: Path, generation: dict | None = None, **changes) -> SteeringEvalConfig:
    values = {
        "model": str(world.model),
        "store": str(world.store),
        "concepts": [f"dragon={DRAGON_REGEX}", "sea"],
        "output_dir": str(out),
        "prompts": ["the", "the old"],
        "generation": {"samples": 20, "max_new_tokens": 16} | (generation or {}),
        "strengths": [2, 8],
        "modes": ["all"],
        "positions": ["new"],
        "alphas": [0.0, 4.0],
        "progress": False,
    } | changes
    return SteeringEvalConfig(**values)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    world = planted(tmp_path_factory)
    out = tmp_path_factory.mktemp("evaluation") / "eval"
    return world, out, evaluate_steering(settings(world, out))


def test_forcing_the_concepts_codes_raises_its_rates(evaluated) -> None:
    _, _, report = evaluated
    rows = {(r.method, r.codes, r.alpha): r for r in report.rows_of("dragon")}
    base, strong = rows[("none", None, None)], rows[("codes", 8, None)]
    # the planted topic is a minority: rarely written unsteered, mostly written when forced
    assert base.regex.rate < 0.4
    assert strong.regex.low > base.regex.high
    assert strong.classifier.low > base.classifier.high
    # the codes were chosen on the selection half and are the best of distinct heads
    codes = report.concepts["dragon"]["codes"]
    heads = {tuple(c["code"].split("/")[:2]) for c in codes}
    assert len(heads) == len(codes)
    assert report.concepts["dragon"]["selection"]["store"]["documents"]["count"] == 150


def test_activation_addition_with_alpha_zero_equals_no_steering(evaluated) -> None:
    _, out, report = evaluated
    rows = {(r.method, r.alpha): r for r in report.rows_of("dragon")}
    zero, base = rows[("actadd", 0.0)], rows[("none", None)]
    assert (zero.regex, zero.classifier, zero.perplexity) == (
        base.regex,
        base.classifier,
        base.perplexity,
    )
    generations = out / "generations"
    plain = {p.read_text() for p in generations.glob("unsteered-*.jsonl")}
    assert len(plain) == 2  # the sweep's and the fresh seeds' unsteered texts
    (zero_file,) = generations.glob("actadd-dragon-0.0-new-*.jsonl")
    assert zero_file.read_text() in plain
    # alpha 0 changes nothing, so it is never the reported activation addition
    assert report.topics["dragon"].activation_addition.settings["alpha"] == 4.0


def test_report_files_and_rerun_gives_the_same_table(evaluated) -> None:
    world, out, report = evaluated
    assert (out / "plots" / "steering.png").stat().st_size > 0
    table = (out / "steering.md").read_text()
    assert "### dragon" in table and "8 code(s), all, new" in table
    assert "## Reported, on fresh generations" in table
    assert load_report(out).to_dict() == report.to_dict()
    # a second run finds every condition's generations and gives the same numbers
    files = sorted((out / "generations").iterdir())
    again = evaluate_steering(settings(world, out))
    assert json.dumps(again.to_dict()) == json.dumps(report.to_dict())
    assert sorted((out / "generations").iterdir()) == files


def test_a_fresh_run_generates_the_same_table(evaluated, tmp_path) -> None:
    world, _, report = evaluated
    fresh = evaluate_steering(settings(world, tmp_path / "fresh", concepts=["sea"]))
    assert [r.to_dict() for r in fresh.rows] == [
        r.to_dict() for r in report.rows if r.concept == "sea"
    ]
    assert fresh.topics["sea"] == report.topics["sea"]


def test_the_reported_setting_is_chosen_on_the_sweep_and_judged_on_fresh_seeds(
    evaluated,
) -> None:
    _, out, report = evaluated
    topic = report.topics["dragon"]
    sweep = report.rows_of("dragon")
    fresh = report.rows_of("dragon", seeds="fresh")
    assert [r.method for r in fresh] == ["none", "codes", "actadd"]
    assert all(r.seeds == "selection" for r in sweep) and len(sweep) == 5
    # the rule: the sweep's best classifier rate under twice the unsteered perplexity
    base = sweep[0]
    allowed = [r for r in sweep if r.method == "codes" and r.perplexity < 2 * base.perplexity]
    best = max(allowed, key=lambda r: (r.classifier.rate, -r.perplexity))
    assert topic.steered.settings["codes"] == best.codes == fresh[1].codes
    # reported on texts of other seeds than those it was chosen on
    assert fresh[1].examples != next(r for r in sweep if r.codes == best.codes).examples
    assert fresh[0].examples != base.examples
    assert topic.steered.classifier == fresh[1].classifier.rate
    assert topic.unsteered.perplexity == pytest.approx(fresh[0].perplexity)
    # the planted topic moves on the fresh texts: rarely written unsteered, more often with
    # its codes forced (not to 60% under the perplexity limit: not "moved" by the goal)
    assert topic.steered.classifier_ci[0] > topic.unsteered.classifier_ci[1]
    goal = (
        topic.unsteered.classifier <= 0.2
        and topic.steered.classifier >= 0.6
        and topic.steered.classifier_ci[0] > topic.unsteered.classifier_ci[1]
        and topic.steered.perplexity < 2 * topic.unsteered.perplexity
    )
    assert topic.moved is goal
    saved = json.loads((out / "steering.json").read_text())["topics"]["dragon"]
    assert set(saved["steered"]) >= {"classifier", "classifier_ci", "regex", "regex_ci"}
    assert saved["steered"]["perplexity"] == pytest.approx(fresh[1].perplexity, rel=1e-5)


def test_a_changed_concept_file_is_generated_again(tmp_path_factory, tmp_path) -> None:
    from codebook_features.attach.loading import load_codebook_model
    from codebook_features.steering.concept import save_concept
    from codebook_features.steering.selection import SelectionRule, concept_from_label

    world = planted(tmp_path_factory)
    cbm, store = load_codebook_model(str(world.model)), CodeStore(world.store)
    concepts = tmp_path / "concepts"

    def run(codes: int) -> dict:
        rule = SelectionRule(max_codes=codes)
        concept = concept_from_label(store, cbm, "dragon", "label", "dragon", rule)
        save_concept(concept, concepts / "dragon.json", overwrite=True)
        small = {"strengths": [8], "alphas": [], "concepts_dir": str(concepts)}
        report = evaluate_steering(settings(world, tmp_path / "eval", {"samples": 4}, **small))
        return report.concepts["dragon"], report.rows_of("dragon", "codes")[0]

    first, first_row = run(8)
    second, second_row = run(1)
    assert len(first["codes"]) == 8 and len(second["codes"]) == 1
    assert first_row.codes == 8 and second_row.codes == 1
    assert not second["held_out"]  # chosen on every document, and the report says so
    assert "not held out" in (tmp_path / "eval" / "steering.md").read_text()
    # each concept's sweep and its reported condition on fresh seeds: no file was reused
    assert len(list((tmp_path / "eval" / "generations").glob("codes-dragon-*"))) == 4


def test_settings_of_another_evaluation_are_refused(evaluated) -> None:
    world, out, _ = evaluated
    before = (out / "steering.json").read_text()
    with pytest.raises(CodebookError, match=r"other settings \(generation\.samples\)"):
        evaluate_steering(settings(world, out, {"samples": 3}))
    assert (out / "steering.json").read_text() == before


def test_settings_saved_by_the_earlier_flat_layout_are_the_same_settings(evaluated) -> None:
    """An evaluation directory whose settings.json has the generation and rule settings side by
    side with the others (as before they were nested) continues with the same settings."""
    world, out, report = evaluated
    saved = json.loads((out / "settings.json").read_text())
    rule, generation = saved.pop("rule"), saved.pop("generation")
    flat = saved | generation | {k: v for k, v in rule.items() if k != "smoothing"}
    (out / "settings.json").write_text(json.dumps(flat | {"sites": []}))
    files = sorted((out / "generations").iterdir())
    again = evaluate_steering(settings(world, out))
    assert json.dumps(again.to_dict()) == json.dumps(report.to_dict())
    assert sorted((out / "generations").iterdir()) == files  # nothing generated again
    assert json.loads((out / "settings.json").read_text())["generation"] == generation
    (out / "settings.json").write_text(json.dumps(flat | {"max_codes": 3}))
    with pytest.raises(CodebookError, match=r"other settings \(rule\.max_codes\)"):
        evaluate_steering(settings(world, out))


def test_generation_given_in_part_keeps_the_paper_protocol_for_the_rest() -> None:
    required = {"model": "m", "store": "s", "output_dir": "o", "concepts": ["dragon"]}
    paper = SteeringEvalConfig(**required).generation
    assert paper == GenerationSettings(max_new_tokens=200, samples=10)
    assert GenerationSettings() == GenerationSettings(max_new_tokens=60, samples=1)
    partly = SteeringEvalConfig(**required, generation={"samples": 3}).generation
    assert partly == GenerationSettings(max_new_tokens=200, samples=3)
    given = GenerationSettings(samples=3)  # a whole settings value is taken as it is
    assert SteeringEvalConfig(**required, generation=given).generation == given


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"concepts": ["unicorn"]}, "no document of the store has label = 'unicorn'"),
        ({"concepts": ["dragon=("]}, "bad regex"),
        ({"label_field": "topic"}, "has no column 'topic'"),
        ({"strengths": [0]}, "strengths.0: input should be greater than or equal to 1"),
        ({"generation": {"temperature": -1.0}}, "generation.temperature: input should be greater"),
        ({"rule": {"max_codes": 0}}, "rule.max_codes: input should be greater than or equal to 1"),
        ({"concepts": ["sea", "sea=x"]}, "concepts names a label twice"),
        ({"concepts_dir": "/nonexistent"}, "not a directory"),
        ({"selection_seed": 0}, "selection_seed equals generation.seed"),
    ],
)
def test_mistakes(tmp_path_factory, tmp_path, changes, message) -> None:
    world = planted(tmp_path_factory)
    with pytest.raises(CodebookError, match=message):
        evaluate_steering(settings(world, tmp_path / "eval", **changes))


def test_command_line(tmp_path_factory, tmp_path, capsys) -> None:
    from codebook_features.cli import main

    world = planted(tmp_path_factory)
    out = tmp_path / "cli"
    config = tmp_path / "steering.yaml"  # sections as the options' dotted names
    config.write_text("generation:\n  samples: 4\n  max_new_tokens: 99\nrule:\n  max_codes: 2\n")
    argv = [
        "evaluate-steering",
        "--config", str(config),
        "--model", str(world.model),
        "--store", str(world.store),
        "--concepts", f"dragon={DRAGON_REGEX}",
        "--output_dir", str(out),
        "--prompts", "the",
        "--generation.max_new_tokens", "4",
        "--strengths", "1",
        "--modes", "all",
        "--alphas", "2",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert printed.startswith("dragon: unsteered ")
    assert str(out / "steering.md") in printed
    saved = json.loads((out / "steering.json").read_text())
    # the line gives what the report holds: a reported setting appears only where the rule
    # found one (with 4 new tokens a forced code may leave every text as it was)
    topic, line = saved["topics"]["dragon"], printed.splitlines()[0]
    assert (", codes " in line) == (topic["steered"] is not None)
    assert ("activation addition " in line) == (topic["activation_addition"] is not None)
    assert line.endswith(" - moved") == topic["moved"]
    # samples and the rule from the file, max_new_tokens from the option over the file's 99
    generation, rule = saved["settings"]["generation"], saved["settings"]["rule"]
    assert (generation["samples"], generation["max_new_tokens"], rule["max_codes"]) == (4, 4, 2)
    assert len(saved["concepts"]["dragon"]["codes"]) == 2
    rows = saved["rows"]
    assert [(r["method"], r["codes"], r["mode"], r["alpha"], r["seeds"]) for r in rows] == [
        ("none", None, None, None, "selection"),
        ("codes", 1, "all", None, "selection"),
        ("actadd", None, None, 2.0, "selection"),
        ("none", None, None, None, "fresh"),
        ("codes", 1, "all", None, "fresh"),
        ("actadd", None, None, 2.0, "fresh"),
    ]
    # a mistake is one line, and the finished evaluation is untouched
    before = (out / "steering.json").read_text()
    assert main([*argv[:-2], "--alphas", "nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "alphas.0: input should be a finite number" in err and "\n" not in err
    assert (out / "steering.json").read_text() == before


def test_a_concept_chosen_on_another_store_of_the_same_ids_is_not_held_out(
    tmp_path_factory, tmp_path
) -> None:
    """Two stores of the same size and document ids, with other texts: a concept chosen on
    the selection half of one is not held out on the other, though the ids are the same."""
    from codebook_features.attach.loading import load_codebook_model
    from codebook_features.steering.concept import save_concept
    from codebook_features.steering.selection import (
        SelectionRule,
        concept_from_label,
        split_documents,
    )
    from codebook_features.store.reader import CodeStore
    from codebook_features.store.record import RecordConfig, record
    from tests.steering.planted import write_corpus

    world = planted(tmp_path_factory)
    other = tmp_path / "other-store"
    record(
        RecordConfig(
            model=str(world.model),
            dataset=str(write_corpus(tmp_path / "other.jsonl", 300, seed=7)),
            output_dir=str(other),
            max_length=64,
            progress=False,
        )
    )
    cbm = load_codebook_model(str(world.model))
    mine, theirs = CodeStore(world.store), CodeStore(other)
    assert sorted(mine.texts) == sorted(theirs.texts)  # the same ids ...
    assert mine.texts != theirs.texts  # ... of other documents
    assert mine.documents_fingerprint() != theirs.documents_fingerprint()
    concepts = tmp_path / "concepts"
    for store, name in ((mine, "mine"), (theirs, "theirs")):
        selection, _ = split_documents(store, 0.5, 0)
        concept = concept_from_label(
            store, cbm, "dragon", "label", "dragon", SelectionRule(max_codes=2), selection
        )
        save_concept(concept, concepts / name / "dragon.json")
    small = {"strengths": [2], "alphas": [], "generation": {"samples": 2}}
    for name, held_out in (("mine", True), ("theirs", False)):
        report = evaluate_steering(
            settings(world, tmp_path / name, concepts_dir=str(concepts / name), **small)
        )
        assert report.concepts["dragon"]["held_out"] is held_out


def test_a_classifier_learns_from_other_texts_than_the_store(tmp_path_factory, tmp_path) -> None:
    world = planted(tmp_path_factory)
    texts = world.store.parent / "train.jsonl"  # the training corpus: not in the store
    small = {"strengths": [8], "alphas": [4.0], "generation": {"samples": 4}}
    report = evaluate_steering(
        settings(world, tmp_path / "eval", classifier_data=str(texts), **small)
    )
    # codes chosen on the whole store; the classifier judged on all of its documents
    assert report.concepts["dragon"]["selection"]["store"]["documents"] == "all"
    assert report.classifier.accuracy.total == 300
    assert report.classifier.accuracy.rate > 0.9
    assert "learned from `" in (tmp_path / "eval" / "steering.md").read_text()
    # windows: the classifier learns from and is checked on texts of a generation's length
    windowed = evaluate_steering(
        settings(
            world, tmp_path / "windows", classifier_data=str(texts), classifier_window=4, **small
        )
    )
    documents = CodeStore(world.store).documents.column("text").to_pylist()
    assert windowed.classifier.accuracy.total == sum(
        max(1, len(text.split()) // 4) for text in documents
    )
    human = windowed.classifier.per_label["dragon"].recall
    table = (tmp_path / "windows" / "steering.md").read_text()
    assert "4-word windows" in table
    assert f"| dragon | {human:.0%} | " in table
    # texts of the store itself are refused, and nothing is written
    with pytest.raises(CodebookError, match=r"300 text\(s\) of classifier_data .* are documents"):
        evaluate_steering(
            settings(
                world,
                tmp_path / "leak",
                classifier_data=str(world.store.parent / "valid.jsonl"),
                **small,
            )
        )
    assert not (tmp_path / "leak" / "steering.json").exists()

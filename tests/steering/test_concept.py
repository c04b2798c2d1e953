"""Concepts: the fingerprint, JSON and files (readable, editable by hand, strict), the refusal
of another model's concept, forcing a concept's codes, and ``codebook concept``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from codebook_features import CodebookError, CodebookModel
from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.fingerprint import codebooks_fingerprint
from codebook_features.attach.interventions import Force
from codebook_features.cli import main
from codebook_features.settings.base import VERSION_KEY, SavedFileWarning
from codebook_features.steering.concept import (
    Concept,
    check_name,
    find_concept,
    list_concepts,
    load_concept,
    save_concept,
    site_shapes,
)
from tests.steering.recorded import World, save_model, world

CODES = ("layers.0.attn_heads/1/3", "layers.0.attn_heads/2/7", "layers.1.mlp/0/5")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> World:
    return world(tmp_path_factory)


@pytest.fixture(scope="module")
def cbm(recorded: World) -> CodebookModel:
    return CodebookModel.from_pretrained(recorded.model).eval()


@pytest.fixture(scope="module")
def other(recorded: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture and codebook sizes, another seed, saved."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("other") / "model"
    save_model(path, AutoTokenizer.from_pretrained(recorded.model), seed=1)
    return path


def make(cbm: CodebookModel, codes=CODES, name: str = "demo", **extra) -> Concept:
    refs = tuple(CodeRef.parse(c) for c in codes)
    return Concept(
        name=name,
        codes=refs,
        fingerprint=codebooks_fingerprint(cbm),
        sites=site_shapes(cbm, [r.site for r in refs]),
        selection={"method": "by hand"},
        scores=tuple({"precision": 0.5 + i / 10, "support": 10 - i} for i in range(len(refs))),
        **extra,
    )


# ---------------------------------------------------------------------------- fingerprint
def test_fingerprint_survives_save_and_load_and_tells_models_apart(cbm, recorded, other, tmp_path):
    cbm.save(tmp_path / "copy")
    again = CodebookModel.from_pretrained(tmp_path / "copy")
    assert codebooks_fingerprint(again) == codebooks_fingerprint(cbm)
    assert len(codebooks_fingerprint(cbm)) == 64
    assert codebooks_fingerprint(CodebookModel.from_pretrained(other)) != codebooks_fingerprint(cbm)


# ---------------------------------------------------------------------------- JSON and files
def test_round_trip_through_json_and_a_readable_file(cbm, tmp_path):
    concept = make(cbm, description="dragons", mode="least", positions=[3, 4])
    assert Concept.from_json(concept.to_json(), cbm) == concept
    path = save_concept(concept, tmp_path / "demo.json")
    text = path.read_text()
    assert text.startswith('{\n  "kind": "concept",\n')
    code_lines = [line for line in text.splitlines() if '"code":' in line]
    assert len(code_lines) == 3 and '"layers.0.attn_heads/1/3"' in code_lines[0]
    data = json.loads(text)
    assert data["codes"][2]["code"] == "layers.1.mlp/0/5" and data[VERSION_KEY]
    loaded = load_concept(path, cbm)
    assert loaded == concept and loaded.positions == (3, 4)


def test_removing_a_code_by_hand_loads(cbm, tmp_path):
    path = save_concept(make(cbm), tmp_path / "demo.json")
    lines = [line for line in path.read_text().splitlines() if CODES[1] not in line]
    path.write_text("\n".join(lines))
    loaded = load_concept(path, cbm)
    assert [str(c) for c in loaded.codes] == [CODES[0], CODES[2]]
    assert [s["support"] for s in loaded.scores] == [10, 8]
    data = json.loads(path.read_text()) | {"codes": [CODES[2]]}  # plain strings load too
    loaded = Concept.from_json(json.dumps(data), cbm)
    assert loaded.codes == (CodeRef.parse(CODES[2]),) and loaded.scores == ({},)


def test_a_concept_for_another_model_is_refused(cbm, other, tmp_path):
    path = save_concept(make(cbm), tmp_path / "demo.json")
    with pytest.raises(CodebookError, match="concept 'demo' was made for another model") as info:
        load_concept(path, CodebookModel.from_pretrained(other))
    assert "build it again for this model" in str(info.value)
    assert "\n" not in str(info.value)


def edit(data: dict, **changes) -> dict:
    return {k: v for k, v in (data | changes).items() if v is not None}


MISTAKES = {
    "unknown-key": (lambda d: edit(d, colour="red"), "unknown setting colour; known: name"),
    "bad-code": (lambda d: edit(d, codes=["layers.0.mlp/0"]), "codes.0: 'layers.0.mlp/0' does not"),
    "code-type": (lambda d: edit(d, codes=[3]), "codes.0: a code must be a SITE/GROUP/ID"),
    "out-of-range": (lambda d: edit(d, codes=["layers.1.mlp/0/99"]), "out of range"),
    "site-unlisted": (lambda d: edit(d, codes=["layers.0.mlp/0/1"]), "is not in sites"),
    "bad-name": (lambda d: edit(d, name="two words"), "name may hold only"),
    "name-type": (lambda d: edit(d, name=3), "name: input should be a valid string"),
    "no-codes": (lambda d: edit(d, codes=[]), "codes is empty"),
    "repeat": (lambda d: edit(d, codes=[CODES[0], CODES[0]]), "more than once"),
    "mode": (lambda d: edit(d, mode="sideways"), "mode: input should be 'least', 'all' or 'add'"),
    "positions": (lambda d: edit(d, positions="later"), "positions must be"),
    "sites-shape": (
        lambda d: edit(d, sites={"layers.1.mlp": 16}),
        "sites.layers.1.mlp: input should be a valid dictionary",
    ),
    "site-key": (
        lambda d: edit(d, sites={"layers.1.mlp": {"groups": 1, "num_codes": 16, "dim": 8}}),
        "unknown setting sites.layers.1.mlp.dim",
    ),
    "scores": (
        lambda d: edit(
            d, codes=[{"code": CODES[0], "precision": 1}, {"code": CODES[1]}], scores=[]
        ),
        "unknown setting scores",  # scores belong to their code in a file
    ),
    "not-concept": (lambda d: edit(d, kind="force"), "is not a concept"),
    "no-fingerprint": (lambda d: edit(d, fingerprint=None), "fingerprint is required"),
    "both-names": (lambda d: edit(d, model=d["fingerprint"]), "unknown setting model"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_mistakes_in_a_file_are_refused_in_one_line(cbm, case):
    change, message = MISTAKES[case]
    data = change(make(cbm).to_dict())
    with pytest.raises(CodebookError) as info:
        Concept.from_json(json.dumps(data), cbm)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_invalid_json_and_codes_the_model_lacks(cbm):
    with pytest.raises(CodebookError, match="not valid JSON"):
        Concept.from_json("{", cbm)
    sites = {"layers.1.mlp": {"groups": 1, "num_codes": 99}}  # as edited by hand
    wide = Concept(
        name="wide",
        codes=("layers.1.mlp/0/50",),
        fingerprint=codebooks_fingerprint(cbm),
        sites=sites,
    )
    with pytest.raises(CodebookError, match=r"code 50 is out of range at layers\.1\.mlp"):
        wide.check(cbm)


def test_keys_of_a_newer_version_are_dropped_with_a_warning(cbm):
    data = make(cbm).to_dict() | {"future": 1}
    with pytest.raises(CodebookError, match="unknown setting future"):
        Concept.from_json(json.dumps(data))
    data["sites"]["layers.1.mlp"]["dim"] = 32
    with pytest.warns(SavedFileWarning, match=r"sites\.layers\.1\.mlp\.dim, future"):
        loaded = Concept.from_json(json.dumps(data | {VERSION_KEY: "99.0.0"}), cbm)
    assert loaded == make(cbm)


def test_a_file_that_names_the_fingerprint_model_still_loads(cbm):
    """Concept files written before the key was named ``fingerprint`` called it ``model``."""
    data = make(cbm).to_dict()
    data["model"] = data.pop("fingerprint")
    assert Concept.from_json(json.dumps(data), cbm) == make(cbm)


def test_overwriting_only_a_concept_and_only_when_asked(cbm, tmp_path):
    path = save_concept(make(cbm), tmp_path / "demo.json")
    with pytest.raises(CodebookError, match="already holds a concept"):
        save_concept(make(cbm, codes=CODES[:1]), path)
    save_concept(make(cbm, codes=CODES[:1]), path, overwrite=True)
    assert len(load_concept(path).codes) == 1
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": true}')
    with pytest.raises(CodebookError, match="not a concept file"):
        save_concept(make(cbm), foreign, overwrite=True)
    assert foreign.read_text() == '{"mine": true}'
    with pytest.raises(CodebookError, match="is a directory"):
        save_concept(make(cbm), tmp_path)


def test_a_directory_of_concepts(cbm, tmp_path):
    save_concept(make(cbm, name="b"), tmp_path / "b.json")
    save_concept(make(cbm, name="a"), tmp_path / "a.json")
    (tmp_path / "other.json").write_text("[1, 2]")
    (tmp_path / "readme.txt").write_text("hello")
    assert [c.name for c in list_concepts(tmp_path)] == ["a", "b"]
    assert find_concept("a", tmp_path) == tmp_path / "a.json"
    assert find_concept(tmp_path / "b.json") == tmp_path / "b.json"
    with pytest.raises(CodebookError, match="no concept 'c'"):
        find_concept("c", tmp_path)
    (tmp_path / "broken.txt.json").write_text("{not json, and not a concept")
    assert [c.name for c in list_concepts(tmp_path)] == ["a", "b"]  # not ours: skipped
    # a concept file cut short is damaged, not skipped
    text = (tmp_path / "b.json").read_text()
    (tmp_path / "b.json").write_text(text[: len(text) // 2])
    with pytest.raises(CodebookError, match=r"b\.json"):
        list_concepts(tmp_path)


def test_concept_names_are_matched_in_full() -> None:
    assert check_name("dragon.v2_x-1") == "dragon.v2_x-1"
    for bad in ("nl\n", "a b", "a/b", "..", "", "x\n\n"):
        with pytest.raises(CodebookError, match="only letters, digits"):
            check_name(bad)


# ---------------------------------------------------------------------------- forcing
def test_force_specs_take_the_first_codes_by_site_and_group(cbm):
    concept = make(cbm)
    assert concept.force_specs() == [
        Force("layers.0.attn_heads", {1: [3], 2: [7]}, mode="all", positions="new"),
        Force("layers.1.mlp", {0: [5]}, mode="all", positions="new"),
    ]
    assert concept.force_specs(top=1, mode="least", positions="all") == [
        Force("layers.0.attn_heads", {1: [3]}, mode="least", positions="all")
    ]
    assert concept.force_specs(top=10) == concept.force_specs()
    with pytest.raises(CodebookError, match="top must be"):
        concept.force_specs(top=0)


def test_applying_the_specs_forces_the_codes(cbm):
    concept = make(cbm)
    tokens = torch.randint(3, 30, (2, 6))
    with cbm.intervene(concept.force_specs(positions="all")):
        _, seen = cbm.run_with_codes(input_ids=tokens)
    heads = seen.ids["layers.0.attn_heads"]  # (batch, seq, groups, k): every slot forced
    assert (heads[:, :, 1] == 3).all() and (heads[:, :, 2] == 7).all()
    assert (seen.ids["layers.1.mlp"][:, :, 0] == 5).all()
    assert not (heads[:, :, 0] == 3).all()
    with cbm.intervene(concept.force_specs(top=1)):  # "new": a prompt's own pass is left alone
        _, seen = cbm.run_with_codes(input_ids=tokens)
    assert not (seen.ids["layers.0.attn_heads"][:, :, 1] == 3).all()


# ---------------------------------------------------------------------------- the command
def test_concept_commands(recorded, tmp_path, capsys):
    out = tmp_path / "concepts"
    base = ["concept", "new", "--model", str(recorded.model), "--concepts_dir", str(out)]
    store = ["--store", str(recorded.store)]
    argv = [*base, *store, "--name", "dragon", "--pattern", "dragon", "--rule.min_precision", "0.3"]
    assert main(argv) == 0
    assert "saved concept dragon" in capsys.readouterr().out
    (tmp_path / "ex.txt").write_text("the dragon sees the dragon\n\nthe red dragon\n")
    (tmp_path / "co.jsonl").write_text('"the cat sees the king"\n{"text": "the old ship"}\n')
    texts = ["--examples", str(tmp_path / "ex.txt"), "--contrast", str(tmp_path / "co.jsonl")]
    assert main([*base, "--name", "texts", *texts, "--rule.min_support", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["selection"]["method"] == "texts"
    label = ["--label_field", "topic", "--label", "dragon", "--mode", "least"]
    label += ["--rule.max_codes", "2", "--rule.sites", "attn_heads"]
    assert main([*base, *store, "--name", "topic", *label]) == 0  # by texts: the default
    capsys.readouterr()
    by_tokens = ["--name", "tokens", *label, "--label_by", "tokens"]
    assert main([*base, *store, *by_tokens, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["selection"]["method"] == "label"

    assert (
        main(
            ["concept", "show", "topic", "--concepts_dir", str(out), "--model", str(recorded.model)]
        )
        == 0
    )
    shown = capsys.readouterr().out
    assert "topic: 2 codes, mode least" in shown
    assert "contrast texts (documents with topic = 'dragon')" in shown
    assert main(["concept", "show", str(out / "dragon.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["selection"]["pattern"] == "dragon"
    topic = json.loads((out / "topic.json").read_text())
    rule = topic["selection"]["rule"]
    assert (rule["sites"], rule["max_codes"], rule["min_support"]) == (["attn_heads"], 2, 5)
    assert all(".attn_heads/" in code["code"] for code in topic["codes"])
    assert main(["concept", "list", str(out)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed[1:]] == ["dragon", "texts", "tokens", "topic"]
    assert "label topic = 'dragon'" in listed[3]
    assert main(["concept", "list", "--concepts_dir", str(out), "--json"]) == 0
    names = [c["name"] for c in json.loads(capsys.readouterr().out)["concepts"]]
    assert names == ["dragon", "texts", "tokens", "topic"]
    # a damaged concept file is reported, after the ones that can be read
    text = (out / "texts.json").read_text()
    (out / "texts.json").write_text(text[: len(text) // 2])
    assert main(["concept", "list", str(out)]) == 2
    captured = capsys.readouterr()
    listed = [line.split()[0] for line in captured.out.splitlines()[1:]]
    assert listed == ["dragon", "tokens", "topic"]
    assert captured.err.count("\n") == 1 and "texts.json" in captured.err
    (out / "texts.json").write_text(text)


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


COMMAND_MISTAKES = [
    ("no-way", "new --model {model} --name x --store {store}", "choose the codes one way"),
    (
        "two-ways",
        "new --model {model} --name x --store {store} --pattern a --examples {ex} --contrast {ex}",
        "choose the codes one way",
    ),
    ("no-store", "new --model {model} --name x --pattern dragon", "give --store"),
    ("half-label", "new --model {model} --name x --store {store} --label dragon", "together"),
    ("bad-name", "new --model {model} --name a/b --store {store} --pattern dragon", "name may"),
    (
        "bad-rule",
        "new --model {model} --name x --store {store} --pattern a --rule.per_group 0",
        "rule.per_group: input should be greater than or equal to 1, got '0'",
    ),
    ("exists", "new --model {model} --name kept --store {store} --pattern dragon", "--overwrite"),
    (
        "foreign",
        "new --model {model} --name notes --store {store} --pattern dragon",
        "not a concept file",
    ),
    (
        "other-store",
        "new --model {other} --name x --store {store} --pattern dragon",
        "is not the model",
    ),
    (
        "no-examples",
        "new --model {model} --name x --examples {root}/none.txt --contrast {ex}",
        "no text file",
    ),
    (
        "nothing-passes",
        "new --model {model} --name x --store {store} --pattern dragon --rule.min_support 100000",
        "no code passed",
    ),
    ("show-missing", "show nothing --concepts_dir {concepts}", "no concept 'nothing'"),
    ("show-other", "show kept --concepts_dir {concepts} --model {other}", "made for another model"),
    ("show-nothing", "show --concepts_dir {concepts}", "concept is required"),
    ("new-unknown", "new --model {model} --name x --pattern a --per_group 1", "--per_group"),
    ("list-missing", "list {root}/none", "not a directory of concepts"),
]


@pytest.mark.parametrize(
    ("line", "message"), [c[1:] for c in COMMAND_MISTAKES], ids=[c[0] for c in COMMAND_MISTAKES]
)
def test_command_mistakes_get_one_line_and_change_nothing(
    recorded, other, tmp_path, capsys, line, message
):
    concepts = tmp_path / "concepts"
    kept = ["--name", "kept", "--store", str(recorded.store), "--pattern", "dragon"]
    assert (
        main(
            [
                "concept",
                "new",
                "--model",
                str(recorded.model),
                "--concepts_dir",
                str(concepts),
                *kept,
            ]
        )
        == 0
    )
    (concepts / "notes.json").write_text("{}")
    (tmp_path / "ex.txt").write_text("the dragon\n")
    before = snapshot(tmp_path), snapshot(recorded.root)
    capsys.readouterr()
    fields = {"model": recorded.model, "store": recorded.store, "other": other, "root": tmp_path}
    argv = ["concept", *line.format(**fields, ex=tmp_path / "ex.txt", concepts=concepts).split()]
    try:
        code = main([*argv, "--concepts_dir", str(concepts)] if argv[1] == "new" else argv)
    except SystemExit as stop:
        code = stop.code
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert message in err[0], err[0]
    assert (snapshot(tmp_path), snapshot(recorded.root)) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pattern": "x", "seed": 1}, "--seed only apply with --label"),
        ({"label": "a", "label_by": "tokens", "label_examples": 5}, "--label_examples only"),
        ({"label": "a", "rule": {"rank": "precision"}}, "texts are ranked by log-odds"),
        ({"examples": "a.txt", "contrast": "b.txt", "rule": {"rank": "recall"}}, "--rule.rank"),
    ],
)
def test_concept_options_without_effect_are_refused(options, message) -> None:
    from codebook_features.steering.concept_cli import NewConcept

    base = {"model": "m", "name": "c"}
    if "examples" not in options:
        base |= {"store": "s"}
    if "label" in options:
        base |= {"label_field": "topic"}
    with pytest.raises(CodebookError, match=message):
        NewConcept.from_dict(base | options)
    tokens = NewConcept.from_dict(
        {"model": "m", "name": "c", "store": "s", "label_field": "t", "label": "a"}
        | {"label_by": "tokens", "rule": {"rank": "precision"}}
    )
    assert tokens.rule.rank == "precision"

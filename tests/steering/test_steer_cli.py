"""``codebook steer``: unsteered and steered continuations of a prompt, as text or JSON, the same
on every run; mistakes end in one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from codebook_features import CodebookModel, CodebookModelConfig
from codebook_features.attach.fingerprint import codebooks_fingerprint
from codebook_features.cli import main
from codebook_features.steering.generate import GenerationSettings, SteeringResult
from codebook_features.steering.steer_cli import format_result
from tests.model_zoo import neox_model
from tests.text_fixtures import write_corpus, write_tokenizer

FAST = ["--generation.max_new_tokens", "6", "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model with its tokenizer, a concept file for it, and a file that is no model."""
    root = tmp_path_factory.mktemp("steer")
    tokenizer_dir = write_tokenizer(root / "tok", write_corpus(root / "corpus.txt", lines=60))
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = CodebookModelConfig(num_codes=16, k=2, sites=["attn_heads", "mlp"])
    cbm = CodebookModel(neox_model(vocab_size=len(tok)), config)
    cbm.save(root / "model", tokenizer=tok)
    (root / "afile.txt").write_text("not a model\n")
    from codebook_features.steering.concept import (
        Concept,
        save_concept,
        site_shapes,
    )

    codes = ("layers.0.mlp/0/3", "layers.1.attn_heads/2/5", "layers.1.mlp/0/9")
    concept = Concept(
        name="dragons",
        codes=codes,
        fingerprint=codebooks_fingerprint(cbm),
        sites=site_shapes(cbm, ["layers.0.mlp", "layers.1.attn_heads", "layers.1.mlp"]),
    )
    save_concept(concept, root / "dragons.json")
    return root


def steer(world: Path, capsys: pytest.CaptureFixture, *options: str) -> str:
    capsys.readouterr()
    argv = ["steer", "--model", str(world / "model"), "--prompt", "the red cat", *FAST, *options]
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_text_shows_the_prompt_and_both_continuations_per_sample(world, capsys) -> None:
    out = steer(world, capsys, "--codes", "layers.0.mlp/0/3", "layers.1.attn_heads/2/5")
    assert out.startswith("prompt: the red cat\n")
    assert "steering: force layers.0.mlp/0/3 (mode all, positions new)" in out
    assert "steering: force layers.1.attn_heads/2/5 (mode all, positions new)" in out
    assert "sample 1 (seed " in out and "sample 2" not in out
    assert "unsteered" in out and "steered" in out


def test_json_is_complete_and_the_same_on_every_run(world, capsys) -> None:
    options = ["--codes", "layers.1.mlp/0/9", "--generation.samples", "3", "--mode", "least"]
    options += ["--positions", "all", "--generation.top_k", "5"]
    options += ["--generation.temperature", "0.8", "--json"]
    data = json.loads(steer(world, capsys, *options, "--generation.seed", "4"))
    assert data == json.loads(steer(world, capsys, *options, "--generation.seed", "4"))
    assert data["prompt"] == "the red cat" and data["model"] == str(world / "model")
    assert len(data["unsteered"]) == len(data["steered"]) == len(data["seeds"]) == 3
    force = {"kind": "force", "site": "layers.1.mlp", "codes": {"0": [9]}, "mode": "least"}
    assert data["interventions"] == [force | {"positions": "all"}]
    expected = GenerationSettings(max_new_tokens=6, temperature=0.8, top_k=5, samples=3, seed=4)
    assert data["settings"] == expected.to_dict()
    other = json.loads(steer(world, capsys, *options, "--generation.seed", "5"))
    assert other["seeds"] != data["seeds"]


def test_a_concept_steers_with_its_first_codes(world, capsys) -> None:
    options = ["--concept", str(world / "dragons.json"), "--top", "2", "--json"]
    data = json.loads(steer(world, capsys, *options))
    sites = [spec["site"] for spec in data["interventions"]]
    assert sites == ["layers.0.mlp", "layers.1.attn_heads"]
    both = json.loads(steer(world, capsys, *options, "--codes", "layers.1.mlp/0/2"))
    assert [spec["site"] for spec in both["interventions"]] == [*sites, "layers.1.mlp"]


def test_a_concept_is_found_by_name_in_the_concepts_directory(world, capsys) -> None:
    options = ["--top", "2", "--json"]
    by_name = json.loads(
        steer(world, capsys, "--concept", "dragons", "--concepts_dir", str(world), *options)
    )
    by_file = json.loads(steer(world, capsys, "--concept", str(world / "dragons.json"), *options))
    assert by_name == by_file
    assert [spec["site"] for spec in by_name["interventions"]] == [
        "layers.0.mlp",
        "layers.1.attn_heads",
    ]


def test_text_is_side_by_side_when_wide_and_stacked_when_narrow() -> None:
    result = SteeringResult(
        prompt="the cat",
        unsteered=["sees the dog " * 8, ""],
        steered=["finds the dragon", "hears the sea"],
        seeds=[11, 12],
        settings=GenerationSettings(samples=2),
        interventions=[{"kind": "add_activation", "site": "layers.0.mlp", "alpha": 2.0}],
    )
    wide = format_result(result, 100)
    assert "steering: add_activation (site layers.0.mlp, alpha 2.0)" in wide
    assert any(
        line.startswith("unsteered") and line.endswith("| steered") for line in wide.split("\n")
    )
    assert "(nothing)" in wide and all(len(line) <= 100 for line in wide.splitlines())
    assert "sample 2 (seed 12)" in wide
    narrow = format_result(result, 40)
    assert "unsteered:\n  sees the dog" in narrow and "steered:\n  finds the dragon" in narrow
    assert all(len(line) <= 40 for line in narrow.splitlines())


MISTAKES = [
    # (id, options after steer, a piece of the one-line message)
    ("unknown-site", "--codes layers.7.mlp/0/3", "no codebook at site 'layers.7.mlp'"),
    ("code-out-of-range", "--codes layers.0.mlp/0/99", "code 99 is out of range"),
    ("group-out-of-range", "--codes layers.0.attn_heads/9/1", "group (head) 9 is out of range"),
    ("malformed-ref", "--codes layers.0.mlp:3", "does not name a code"),
    ("no-codes", "", "give --codes"),
    ("top-without-concept", "--codes layers.0.mlp/0/3 --top 2", "give --concept too"),
    ("zero-top", "--concept {root}/dragons.json --top 0", "top: input should be greater than"),
    (
        "zero-samples",
        "--codes layers.0.mlp/0/3 --generation.samples 0",
        "generation.samples: input should be greater than or equal to 1, got '0'",
    ),
    (
        "negative-temperature",
        "--codes layers.0.mlp/0/3 --generation.temperature -1",
        "generation.temperature: input should be greater than or equal to 0",
    ),
    (
        "bad-top-p",
        "--codes layers.0.mlp/0/3 --generation.top_p 2",
        "generation.top_p: input should be less than or equal to 1",
    ),
    ("flat-samples", "--codes layers.0.mlp/0/3 --samples 2", "unrecognized arguments: --samples"),
    (
        "bad-mode",
        "--codes layers.0.mlp/0/3 --mode most",
        "mode: input should be 'least', 'all' or 'add', got 'most'",
    ),
    ("too-many-for-k", "--codes layers.0.mlp/0/3 layers.0.mlp/0/4 layers.0.mlp/0/5", "k=2"),
    ("missing-concept", "--concept {root}/nowhere.json", "no concept '"),
    ("unknown-concept-name", "--concept nobody --concepts_dir {root}", "no concept 'nobody'"),
    ("too-long", "--codes layers.0.mlp/0/3 --generation.max_new_tokens 500", "context"),
]


@pytest.mark.parametrize(
    ("options", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_mistake_gets_one_line(world, capsys, options, message) -> None:
    argv = ["steer", "--model", str(world / "model"), "--prompt", "the cat", "--device", "cpu"]
    check(capsys, argv + options.format(root=world).split(), message)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{root}/nowhere", "does not exist"),
        ("{root}/afile.txt", "is a file"),
        ("", "model is required"),
    ],
)
def test_a_wrong_model_gets_one_line(world, capsys, model, message) -> None:
    argv = ["steer", "--prompt", "the cat", "--codes", "layers.0.mlp/0/3"]
    check(capsys, argv + (["--model", model.format(root=world)] if model else []), message)


def check(capsys: pytest.CaptureFixture, argv: list[str], message: str) -> None:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.strip()]
    assert code == 2, (argv, captured.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err[-2000:]
    assert message in lines[0], lines[0]
    assert captured.out == ""

"""Mistaken commands, as a new user types them: each ends in exit status 2 and one line on
stderr, without a traceback, and leaves every file that existed before exactly as it was (and
creates none)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from codebook_features import CodebookError
from codebook_features.cli import main
from codebook_features.persist.files import CODEBOOK_CONFIG
from tests.model_zoo import TINY_NEOX
from tests.text_fixtures import write_corpus, write_tokenizer

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

FSM_SMALL = [
    "--num_states",
    "6",
    "--num_edges",
    "2",
    "--train_sequences",
    "64",
    "--val_sequences",
    "8",
]


def run_ok(argv: list[str]) -> None:
    assert main(argv) == 0, argv


def flip(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def without_checksums(model: Path) -> None:
    manifest = model / CODEBOOK_CONFIG
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "files": {}}))


def damaged_copy(world: Path, name: str, damage, checksums: bool = True) -> None:
    target = world / "damaged" / name
    shutil.copytree(world / "cb" / "final", target)
    if not checksums:
        without_checksums(target)
    damage(target)


DAMAGE = {
    "flipped-weights": lambda m: flip(m / "model.safetensors"),
    "flipped-codebooks": lambda m: flip(m / "codebooks.safetensors"),
    "truncated-codebooks": lambda m: (m / "codebooks.safetensors").write_bytes(
        (m / "codebooks.safetensors").read_bytes()[:50]
    ),
    "empty-codebooks": lambda m: (m / "codebooks.safetensors").write_bytes(b""),
    "random-codebooks": lambda m: (m / "codebooks.safetensors").write_bytes(bytes(range(256))),
    "huge-header": lambda m: (m / "codebooks.safetensors").write_bytes(
        (10**15).to_bytes(8, "little") + b"{}"
    ),
    "garbage-config": lambda m: (m / "config.json").write_text("{garbage"),
    "no-codebook-config": lambda m: (m / CODEBOOK_CONFIG).unlink(),
    "bad-codebook-config": lambda m: (m / CODEBOOK_CONFIG).write_text("[1, 2"),
    "truncated-weights": lambda m: (m / "model.safetensors").write_bytes(
        (m / "model.safetensors").read_bytes()[:100]
    ),
    "empty-config": lambda m: (m / "config.json").write_text(""),
}
UNCHECKED = ("random-codebooks", "huge-header", "truncated-weights", "empty-config")
"""Damage also tried on models saved without checksums (as before checksums existed)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data, trained models, a finished text run, foreign directories and damaged copies."""
    root = tmp_path_factory.mktemp("world")
    run_ok(["fsm", "make", str(root / "data"), *FSM_SMALL])
    run_ok(["fsm", "make", "--output_dir", str(root / "data16"), "--base", "16", *FSM_SMALL])
    data, base = str(root / "data"), str(root / "base")
    run_ok(["fsm", "train", "--data", data, "--output_dir", base, "--steps", "2"])
    cb, start = str(root / "cb"), str(root / "base" / "final")
    cb_args = ["--output_dir", cb, "--start_from", start, "--num_codes", "8", "--steps", "2"]
    run_ok(["fsm", "train", "--data", data, *cb_args])
    text = root / "text"
    text.mkdir()
    corpus = write_corpus(text / "corpus.txt", lines=200)
    write_tokenizer(text / "tokenizer", corpus)
    words = json.loads((text / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(words) > 11  # eval-model-of-other-text: more tokens than TokFSM's, other ones
    (text / "empty.txt").write_text("")
    (text / "binary.txt").write_bytes(bytes(range(256)) * 4)
    config = {
        "model": {"init": TINY_NEOX, "tokenizer": str(text / "tokenizer")},
        "data": {"dataset": str(corpus), "block_size": 16},
        "codebooks": {"num_codes": 8, "k": 1, "sites": ["mlp"]},
        "training": {
            "output_dir": str(root / "run"),
            "steps": 2,
            "batch_size": 4,
            "eval_every": 2,
            "save_every": 2,
            "progress": False,
        },
    }
    (text / "run.yaml").write_text(yaml.safe_dump(config))
    (text / "bad.yaml").write_text("model: [unclosed\n  - x: {")
    (text / "list.yaml").write_text("- 1\n- 2\n")
    (text / "unknown.yaml").write_text(yaml.safe_dump(config | {"trainer": {"steps": 3}}))
    (text / "binary.yaml").write_bytes(bytes(range(256)))
    (text / "badrow.jsonl").write_text('{"text": "a b"}\n{"text": "cut\n{"text": "c d"}\n')
    rows = ['{"text": "a b", "label": "x"}'] * 20  # a later row cut: the reader fails otherwise
    rows[6] = '{"text": "a b", "label": '
    (text / "badrow-late.jsonl").write_text("\n".join(rows) + "\n")
    run_ok(["train", "--config", str(text / "run.yaml")])
    foreign = root / "foreign"
    (foreign / "plots").mkdir(parents=True)
    (foreign / "config.yaml").write_text("my: own settings\n")
    (foreign / "metrics.jsonl").write_text('{"mine": 1}\n')
    (foreign / "plots" / "figure1.png").write_bytes(b"\x89PNG my figure")
    notes = root / "notes"
    notes.mkdir()
    (notes / "results.json").write_text('{"my": "results"}\n')
    (notes / "list.json").write_text("[1, 2, 3]\n")
    (root / "afile.txt").write_text("a file, not a directory\n")
    shutil.copytree(root / "data", root / "data-with-run")
    shutil.copytree(root / "base", root / "data-with-run" / "run1")
    shutil.copytree(root / "run", root / "run-with-figure")
    (root / "run-with-figure" / "plots" / "fig.png").write_bytes(b"\x89PNG my own figure")
    shutil.copytree(root / "data", root / "data-with-notes")
    (root / "data-with-notes" / "my_notes.txt").write_text("keep me\n")
    for name, damage in DAMAGE.items():
        damaged_copy(root, name, damage)
        if name in UNCHECKED:
            damaged_copy(root, f"{name}-unchecked", damage, checksums=False)
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
            p.stat().st_mode,
        )
        for p in sorted(root.rglob("*"))
    }


NEW = "train --config {root}/text/run.yaml --training.output_dir {root}/new"
"""A text run into a new directory."""
CASES: list[tuple[str, str, str]] = [
    # (id, command line with {root}, a piece of the expected message)
    (
        "make-zero-train",
        "fsm make {root}/new --train_sequences 0",
        "train_sequences: input should be greater than or equal to 1",
    ),
    (
        "make-negative-train",
        "fsm make {root}/new --train_sequences -5",
        "greater than or equal to 1",
    ),
    ("make-zero-val", "fsm make {root}/new --val_sequences 0", "val_sequences: input should be"),
    (
        "make-negative-seed",
        "fsm make {root}/new --seed -1",
        "seed: input should be greater than or equal to 0",
    ),
    (
        "make-one-state",
        "fsm make {root}/new --num_states 1",
        "num_states: input should be greater than or equal to 2",
    ),
    ("make-no-edges", "fsm make {root}/new --num_edges 0", "num_edges: input should be greater"),
    (
        "make-short-sequences",
        "fsm make {root}/new --states_per_sequence 1",
        "states_per_sequence: input",
    ),
    (
        "make-not-a-number",
        "fsm make {root}/new --num_states abc",
        "num_states: input should be a valid integer",
    ),
    ("make-too-many-edges", "fsm make {root}/new --num_states 4 --num_edges 9", "edges"),
    ("make-out-is-file", "fsm make {root}/afile.txt", "is a file"),
    ("make-out-foreign", "fsm make {root}/foreign", "not made by codebook-features"),
    ("make-out-ours", "fsm make {root}/data", "--overwrite"),
    ("make-overwrite-foreign", "fsm make {root}/notes --overwrite", "not made by"),
    (
        "make-overwrite-with-notes",
        "fsm make {root}/data-with-notes --overwrite",
        "my_notes.txt",
    ),
    (
        "make-overwrite-with-a-run-inside",
        "fsm make {root}/data-with-run --overwrite",
        "did not make (run1",
    ),
    (
        "cli-train-overwrite-with-my-figure",
        "train --config {root}/text/run.yaml --training.output_dir {root}/run-with-figure "
        "--training.overwrite true",
        "plots/fig.png",
    ),
    ("make-other-kind", "fsm make {root}/base --overwrite", "training run, not a TokFSM"),
    ("make-unknown-option", "fsm make {root}/new --colour red", "unrecognized"),
    ("make-missing-out", "fsm make", "output_dir is required"),
    ("fsm-no-step", "fsm", "required"),
    ("unknown-command", "frobnicate", "invalid choice"),
    (
        "train-zero-steps",
        "fsm train --data {root}/data --output_dir {root}/new --steps 0",
        "steps: input",
    ),
    (
        "train-negative-steps",
        "fsm train --data {root}/data --output_dir {root}/new --steps -3",
        "steps: input should be greater than or equal to 1",
    ),
    ("train-out-foreign", "fsm train --data {root}/data --output_dir {root}/foreign", "not marked"),
    ("train-out-file", "fsm train --data {root}/data --output_dir {root}/afile.txt", "is a file"),
    ("train-out-data", "fsm train --data {root}/data --output_dir {root}/data", "TokFSM data, not"),
    ("train-missing-data", "fsm train --data {root}/nowhere --output_dir {root}/new", "fsm make"),
    ("train-foreign-data", "fsm train --data {root}/foreign --output_dir {root}/new", "fsm make"),
    (
        "train-missing-start",
        "fsm train --data {root}/data --output_dir {root}/new --start_from {root}/nowhere",
        "does not exist",
    ),
    (
        "train-start-not-model",
        "fsm train --data {root}/data --output_dir {root}/new --start_from {root}/text",
        "not a model directory",
    ),
    (
        "train-zero-k",
        "fsm train --data {root}/data --output_dir {root}/new --k 0",
        "k: input should",
    ),
    (
        "train-zero-codes",
        "fsm train --data {root}/data --output_dir {root}/new --num_codes 0",
        "num_codes:",
    ),
    (
        "train-bad-site",
        "fsm train --data {root}/data --output_dir {root}/new --start_from {root}/base/final "
        "--sites heads",
        "unknown site 'heads'",
    ),
    (
        "train-site-glob-matches-nothing",
        "fsm train --data {root}/data --output_dir {root}/new --start_from {root}/base/final "
        "--sites layers.9*.mlp",
        "no site matches",
    ),
    (
        "train-k-above-codes",
        "fsm train --data {root}/data --output_dir {root}/new --start_from {root}/base/final "
        "--k 5 --num_codes 4",
        "num_codes",
    ),
    (
        "eval-zero-samples",
        "fsm evaluate --model {root}/base/final {data} --samples 0",
        "samples: input",
    ),
    ("eval-negative-samples", "fsm evaluate --model {root}/base/final {data} --samples -1", "1"),
    ("eval-missing-model", "fsm evaluate --model {root}/nowhere {data}", "not a directory"),
    ("eval-model-is-file", "fsm evaluate --model {root}/afile.txt {data}", "not a directory"),
    ("eval-not-a-model", "fsm evaluate --model {root}/text {data}", "not a saved model"),
    (
        "eval-out-is-dir",
        "fsm evaluate --model {root}/base/final {data} --output_file {root}/foreign",
        "is a directory",
    ),
    (
        "eval-out-foreign-file",
        "fsm evaluate --model {root}/base/final {data} --output_file {root}/notes/results.json",
        "not a result written by",
    ),
    (
        "eval-missing-data",
        "fsm evaluate --model {root}/base/final --data {root}/nowhere",
        "fsm make",
    ),
    (
        "eval-vocab-mismatch",
        "fsm evaluate --model {root}/base/final --data {root}/data16",
        "trained on another vocabulary than the data in",
    ),
    (
        "eval-model-of-other-text",  # as many tokens or more, other ones
        "fsm evaluate --model {root}/run/final {data}",
        "/run/final was trained on another vocabulary",
    ),
    (
        "analyze-out-is-dir",
        "fsm analyze --model {root}/cb/final {data} --output_file {root}/notes",
        "directory",
    ),
    ("analyze-no-codebooks", "fsm analyze --model {root}/base/final {data}", "no codebooks"),
    (
        "intervene-zero",
        "fsm intervene --model {root}/cb/final {data} --transitions 0",
        "transitions:",
    ),
    ("intervene-no-codebooks", "fsm intervene --model {root}/base/final {data}", "no codebooks"),
    ("demo-out-foreign", "fsm demo --output_dir {root}/notes", "is not marked as one"),
    ("demo-out-file", "fsm demo --output_dir {root}/afile.txt", "is a file"),
    ("demo-out-run", "fsm demo --output_dir {root}/base", "training run, not a TokFSM demo"),
    (
        "demo-negative-seed",
        "fsm demo --output_dir {root}/new --seed -1",
        "seed: input should be greater",
    ),
    ("cli-train-nothing", "train", "no model settings"),
    ("cli-train-missing-config", "train --config {root}/nowhere.yaml", "nowhere.yaml"),
    ("cli-train-bad-yaml", "train --config {root}/text/bad.yaml", "could not parse"),
    ("cli-train-list-yaml", "train --config {root}/text/list.yaml", "mapping"),
    ("cli-train-binary-yaml", "train --config {root}/text/binary.yaml", "not a text file"),
    ("cli-train-unknown-section", "train --config {root}/text/unknown.yaml", "unknown setting"),
    (
        "cli-train-zero-steps",
        "train --config {root}/text/run.yaml --training.steps 0",
        "training.steps:",
    ),
    (
        "cli-train-foreign-dir",
        "train --config {root}/text/run.yaml --training.output_dir {root}/foreign",
        "is not marked as one",
    ),
    (
        "cli-train-foreign-dir-overwrite",
        "train --config {root}/text/run.yaml --training.output_dir {root}/foreign "
        "--training.overwrite true",
        "is not marked as one",
    ),
    (
        "cli-train-out-file",
        "train --config {root}/text/run.yaml --training.output_dir {root}/afile.txt",
        "is a file",
    ),
    (
        "cli-train-missing-model",
        NEW + " --model.init {{}} --model.name_or_path ./nowhere/x",
        "does not exist",
    ),
    (
        "cli-train-dir-not-model",
        NEW + " --model.init {{}} --model.name_or_path {root}/notes",
        "not a model directory",
    ),
    (
        "cli-train-dir-not-tokenizer",
        NEW + " --model.tokenizer {root}/notes",
        "not a tokenizer directory",
    ),
    (
        "cli-train-empty-data",
        NEW + " --data.dataset {root}/text/empty.txt",
        "is empty",
    ),
    (
        "cli-train-binary-data",
        NEW + " --data.dataset {root}/text/binary.txt",
        "not UTF-8 text",
    ),
    (
        "cli-train-vocab-mismatch",
        NEW + " --model.init {{}} --model.name_or_path {root}/base/final --codebooks.sites attn",
        "vocabulary",
    ),
    ("cli-train-existing-run", "train --config {root}/text/run.yaml", "already holds a run"),
    (
        "cli-train-resume-finished",
        "train --config {root}/text/run.yaml --training.resume true",
        "larger --training.steps",
    ),
    (
        "cli-train-resume-nothing",
        NEW + " --training.resume true",
        "no checkpoint",
    ),
    (
        "cli-train-resume-and-overwrite",
        "train --config {root}/text/run.yaml --training.resume true --training.overwrite true",
        "exclude each other",
    ),
    ("cli-train-bad-number", "train --config {root}/text/run.yaml --training.lr abc", "lr"),
    (
        "cli-record-bad-jsonl-row",
        "record --model {root}/run/final --dataset {root}/text/badrow.jsonl "
        "--output_dir {root}/newstore",
        "badrow.jsonl line 2 is not valid JSON",
    ),
    (
        "cli-record-bad-jsonl-later-row",
        "record --model {root}/run/final --dataset {root}/text/badrow-late.jsonl "
        "--output_dir {root}/newstore",
        "badrow-late.jsonl line 7 is not valid JSON (Expecting value, column 26)",
    ),
    (
        "cli-record-plain-model",
        "record --model {root}/base/final --dataset {root}/text/corpus.txt "
        "--output_dir {root}/newstore",
        "has no codebooks (no codebook_config.json): it is a plain model; add codebooks",
    ),
    (
        "cli-record-missing-model",
        "record --model {root}/runs/missing/final --dataset {root}/text/corpus.txt "
        "--output_dir {root}/newstore",
        "missing/final does not exist",
    ),
    (
        "cli-steer-plain-model",
        "steer --model {root}/base/final --prompt 1 --codes layers.0.mlp/0/1",
        "it is a plain model",
    ),
]
for damage in DAMAGE:
    CASES.append(
        (
            f"eval-{damage}",
            f"fsm evaluate --model {{root}}/damaged/{damage} {{data}}",
            "damaged",
        )
    )
UNCHECKED_MESSAGE = {
    "random-codebooks": "codebooks.safetensors in",
    "huge-header": "codebooks.safetensors in",
    "truncated-weights": "could not be loaded",
    "empty-config": "could not be loaded",
}
for damage in UNCHECKED:
    CASES.append(
        (
            f"eval-{damage}-unchecked",
            f"fsm evaluate --model {{root}}/damaged/{damage}-unchecked {{data}}",
            UNCHECKED_MESSAGE[damage],
        )
    )


def test_there_are_many_cases() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize(("line", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_gets_one_line_and_changes_nothing(world, capsys, line, message) -> None:
    before = snapshot(world)
    capsys.readouterr()
    argv = line.format(root=world, data=f"--data {world}/data").split()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own refusals end the program the same way
        code = stop.code
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.strip()]
    assert code == 2, (argv, captured.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err[-2000:]
    assert "Traceback" not in captured.err
    assert message in lines[0], lines[0]
    assert snapshot(world) == before


def test_verbose_is_accepted_after_the_sub_command_and_shows_the_traceback(world, capsys) -> None:
    config = str(world / "text" / "run.yaml")
    assert main(["train", "-v", "--config", config, "--print_config"]) == 0
    assert "output_dir" in capsys.readouterr().out
    with pytest.raises(CodebookError, match="not a directory"):
        main(
            [
                "fsm",
                "evaluate",
                "--verbose",
                "--model",
                str(world / "nowhere"),
                "--data",
                str(world / "data"),
            ]
        )

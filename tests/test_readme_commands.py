"""Every shell command the README shows runs here, in the README's order, as a new user would
type it: as written where it can run offline in seconds, otherwise with the few changes the
table :data:`STAND_INS` names (a local tiny model or file for a hub name, a handful of steps for
thousands). A README command without an entry fails the test, so no command goes untried."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from codebook_features.cli import main
from tests.model_zoo import TINY_NEOX
from tests.steering.planted import document, planted

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def shell_commands() -> list[str]:
    """The README's shell commands, one per command (continued lines joined, comments off)."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def prose_commands() -> list[str]:
    """Commands the README's text shows in backticks, not already in a code block: ``make``,
    ``python`` and ``duckdb`` with their arguments, ``codebook`` with options (a bare
    ``codebook train`` names a command, it does not ask to run one)."""
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    commands = []
    for span in re.findall(r"`([^`]+)`", text):  # a span can go on over a line break
        span = " ".join(span.split())
        words = span.split()
        if len(words) < 2:
            continue
        if words[0] in ("make", "python", "duckdb") or (
            words[0] == "codebook" and any(w.startswith("--") for w in words)
        ):
            commands.append(shlex.join(shlex.split(span)))
    shown = set(shell_commands())
    return [c for c in dict.fromkeys(commands) if c not in shown]


def readme_commands() -> list[str]:
    return shell_commands() + prose_commands()


@dataclass(frozen=True)
class StandIn:
    """How a README command runs here: ``replace`` pairs change its text, ``append`` adds
    options; ``why`` says why it cannot run as written."""

    why: str = ""
    replace: tuple[tuple[str, str], ...] = ()
    append: tuple[str, ...] = ()
    parse_only: bool = False
    """Parsed and its settings checked, not run (it trains for minutes; ``why`` names the tests
    that run its pipeline at a small size)."""


AS_WRITTEN = StandIn()
TINY_SITES = (("layers.3.", "layers.1."),)
"""The stand-in model has 2 layers of 4 heads with 32 codes each."""
TINY_STORE = (*TINY_SITES, ("/2/417", "/2/17"))
STAND_INS: dict[str, StandIn] = {
    # make targets: their recipes are checked with `make -n` (CI runs `make test` itself, and
    # the demos' pipelines run at tiny presets in tests/demos)
    "make demo": AS_WRITTEN,
    "make test": AS_WRITTEN,
    "make demo-lm": AS_WRITTEN,
    "codebook train --config configs/pythia-70m-attention.yaml": StandIn(
        why="Pythia-70M and WikiText-103 come from the hub, and 15,000 steps take hours",
        append=(
            "--model.name_or_path tiny-hf --data.dataset train.jsonl --data.dataset_config none "
            "--data.validation_split none --data.block_size 16 --codebooks.num_codes 8 "
            "--training.steps 2 --training.batch_size 2 --training.grad_accum 1 "
            "--training.eval_every 2 --training.save_every 2 --training.kmeans_init false "
            "--training.progress false",
        ),
    ),
    "codebook train --config my.yaml --training.mode codebooks --training.steps 500": StandIn(
        why="a few steps, stopped half way so that the next command has a run to continue",
        replace=(("--training.steps 500", "--training.steps 4"),),
        append=("--training.stop_at 2",),
    ),
    "codebook train --config my.yaml --training.resume true": AS_WRITTEN,
    "torchrun --nproc_per_node 2 -m codebook_features train --config my.yaml": StandIn(
        why="its own output directory (my.yaml's holds the run above) and a free port",
        replace=(("--nproc_per_node 2", "--nproc_per_node 2 --master_port {port}"),),
        append=("--training.output_dir runs/ddp",),
    ),
    "codebook fsm make runs/fsm/data --num_states 40 --num_edges 4": AS_WRITTEN,
    "codebook fsm train --data runs/fsm/data --output_dir runs/fsm/baseline": StandIn(
        why="3 steps instead of 1,000", append=("--steps 3",)
    ),
    "codebook fsm train --data runs/fsm/data --output_dir runs/fsm/cb --start_from "
    "runs/fsm/baseline/final --sites attn_heads mlp --k 1 --num_codes 512": StandIn(
        why="3 steps instead of 600", append=("--steps 3",)
    ),
    "codebook fsm evaluate --model runs/fsm/cb/final --data runs/fsm/data": AS_WRITTEN,
    "codebook fsm analyze --model runs/fsm/cb/final --data runs/fsm/data --output_file "
    "analysis.json": AS_WRITTEN,
    "codebook fsm intervene --model runs/fsm/cb/final --data runs/fsm/data --transitions "
    "500": StandIn(
        why="20 swapped transitions instead of 500 (a minute and a half here)",
        replace=(("--transitions 500", "--transitions 20"),),
    ),
    "codebook record --model runs/my-run/final --dataset wikitext --dataset_config "
    "wikitext-103-raw-v1 --output_dir runs/store --max_documents 20000 --activation_sites "
    "layers.3.attn_heads": StandIn(
        why="WikiText-103 comes from the hub: labelled local documents instead",
        replace=(
            ("--dataset wikitext --dataset_config wikitext-103-raw-v1", "--dataset valid.jsonl"),
            *TINY_SITES,
        ),
    ),
    "codebook search regex --store runs/store --pattern '\\bdragons?\\b' --top 10": AS_WRITTEN,
    "codebook search token --store runs/store --token dragon": AS_WRITTEN,
    "codebook search topics --store runs/store --min_share 0.5": AS_WRITTEN,
    "codebook search code --store runs/store --code layers.3.attn_heads/2/417 --model "
    "runs/my-run/final": StandIn(why="the tiny model's sites and codes", replace=TINY_STORE),
    "codebook search baselines --store runs/store --site layers.3.attn_heads --patterns "
    "'\\bthe\\b' 'ing\\b'": StandIn(why="the tiny model's sites", replace=TINY_SITES),
    "codebook search text --model runs/my-run/final --text 'The dragon flew over the sea.'": (
        AS_WRITTEN
    ),
    "codebook search describe --store runs/store --query dragon --min_f1 0.3": AS_WRITTEN,
    "codebook concept new --model runs/my-run/final --store runs/store --name dragon-docs "
    "--label_field topic --label dragon --rule.min_support 20 --rule.max_codes 12": StandIn(
        why="the stand-in corpus labels its documents in `label`",
        replace=(("--label_field topic", "--label_field label"),),
    ),
    "codebook concept new --model runs/my-run/final --store runs/store --name dragon --pattern "
    "'\\bdragons?\\b' --rule.max_codes 16": AS_WRITTEN,
    "codebook concept new --model runs/my-run/final --name kjv --examples kjv.txt --contrast "
    "other.txt": AS_WRITTEN,
    "codebook concept show dragon": AS_WRITTEN,
    "codebook steer --model runs/my-run/final --prompt 'Once upon a time,' --concept "
    "concepts/dragon.json --mode all --positions all --generation.samples 3 "
    "--generation.max_new_tokens 60 --generation.seed 0": StandIn(
        why="the tiny model's context is 64 tokens",
        replace=(("--generation.max_new_tokens 60", "--generation.max_new_tokens 16"),),
    ),
    "codebook evaluate-steering --model runs/my-run/final --store runs/store --label_field "
    "topic --concepts 'dragon=\\b(dragons?|fire)\\b' sea --output_dir runs/steering": StandIn(
        why="the stand-in corpus labels its documents in `label`; few samples, short texts",
        replace=(("--label_field topic", "--label_field label"),),
        append=(
            "--prompts the --generation.samples 2 --generation.max_new_tokens 8 "
            "--selection_samples 1 --strengths 2 --alphas 1",
        ),
    ),
    "codebook serve runs/store --model runs/my-run/final": StandIn(
        why="a free port", append=("--port {port}",)
    ),
    "codebook serve runs/demo-lm/store --model runs/demo-lm/attention-codebooks/final "
    "--concepts_dir runs/demo-lm/concepts": StandIn(
        why="the demo's layout, holding the tiny store and model", append=("--port {port}",)
    ),
    # shown in the text
    shlex.join(
        [
            "make",
            "test",
            "TORCH_SPEC=torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128",
        ]
    ): AS_WRITTEN,
    "make test-fast": AS_WRITTEN,
    "make bench": AS_WRITTEN,
    "make lint": AS_WRITTEN,
    "make test-latest": AS_WRITTEN,
    "make lock": AS_WRITTEN,
    "codebook fsm demo --output_dir runs/demo": StandIn(
        why="5 minutes of training; tests/demos/fsm runs its pipeline small", parse_only=True
    ),
    "codebook fsm demo --preset full": StandIn(
        why="hours of training; tests/demos/fsm runs its pipeline small", parse_only=True
    ),
    "python examples/codebook_layer.py": StandIn(
        why="20 steps a run instead of 300", append=("--steps 20",)
    ),
    "codebook lm demo --output_dir runs/demo-lm": StandIn(
        why="30 minutes, and a corpus from the registries; tests/demos/lm runs its pipeline small",
        parse_only=True,
    ),
    "codebook lm methods --output_dir runs/demo-lm": StandIn(
        why="it needs a finished language demo; tests/demos/lm runs it on a small one",
        parse_only=True,
    ),
    "python -m tests.attach.family_matrix": StandIn(
        why="all 200 model types take minutes (tests/attach/test_family_matrix.py checks them): "
        "two here, written into a copy of the README",
        append=("--types gpt2 llama --readme README-copy.md",),
    ),
    "codebook train --help": AS_WRITTEN,
    "codebook COMMAND --help": StandIn(
        why="COMMAND stands for any command (tests/test_cli_help.py asks each): steer here",
        replace=(("COMMAND", "steer"),),
    ),
    "codebook index --store STORE": StandIn(
        why="STORE stands for a store: the README's runs/store", replace=(("STORE", "runs/store"),)
    ),
    shlex.join(
        ["duckdb", "-c", "select count(*) from 'runs/store/shards/tokens-*.parquet'"]
    ): StandIn(
        why="the duckdb command-line tool is not installed with the package: the same query "
        "through duckdb's Python module"
    ),
    "codebook search regex --help": AS_WRITTEN,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words_of(command: str) -> list[str]:
    plan = STAND_INS[command]
    text = command
    for old, new in plan.replace:
        assert old in text, (command, old)
        text = text.replace(old, new)
    text = " ".join([text, *plan.append]).replace("{port}", str(free_port()))
    return shlex.split(text)


def test_every_readme_command_has_a_way_to_run() -> None:
    commands = readme_commands()
    assert len(commands) >= 20
    missing = [c for c in commands if c not in STAND_INS]
    assert not missing, f"README commands this test does not run: {missing}"
    stale = [c for c in STAND_INS if c not in commands]
    assert not stale, f"entries for commands the README no longer shows: {stale}"
    assert all(plan.why for plan in STAND_INS.values() if plan != AS_WRITTEN)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the README's commands expect to find: a model of one's own in runs/my-run, a
    settings file my.yaml, example texts, and (for the stand-ins) a tiny plain model and
    labelled documents."""
    import random

    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    world = planted(tmp_path_factory)
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "configs", root / "configs")
    shutil.copytree(ROOT / "examples", root / "examples")
    shutil.copy(README, root / "README-copy.md")
    shutil.copytree(world.model, root / "runs" / "my-run" / "final")
    for name in ("train.jsonl", "valid.jsonl"):
        shutil.copy(world.store.parent / name, root / name)
    tokenizer = AutoTokenizer.from_pretrained(world.model)
    config = GPTNeoXConfig(**TINY_NEOX, vocab_size=len(tokenizer), eos_token_id=1)
    GPTNeoXForCausalLM(config).save_pretrained(root / "tiny-hf")
    tokenizer.save_pretrained(root / "tiny-hf")
    my = {
        "model": {"init": TINY_NEOX, "tokenizer": "tiny-hf"},
        "data": {"dataset": "train.jsonl", "block_size": 16},
        "codebooks": {"sites": ["attn_heads"], "num_codes": 8, "k": 2},
        "training": {
            "output_dir": "runs/my-yaml-run",
            "mode": "codebooks",
            "steps": 4,
            "batch_size": 2,
            "eval_every": 2,
            "save_every": 2,
            "progress": False,
        },
    }
    (root / "my.yaml").write_text(yaml.safe_dump(my))
    rng = random.Random(0)
    (root / "kjv.txt").write_text("\n".join(document(rng, "dragon") for _ in range(20)) + "\n")
    (root / "other.txt").write_text("\n".join(document(rng, "sea") for _ in range(20)) + "\n")
    return root


def run_make(words: list[str]) -> None:
    """``make -n`` of the command (its target and variables): the recipe is what it should be."""
    target = words[1]
    dry = subprocess.run(
        ["make", "-n", "-C", str(ROOT), *words[1:]], capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    wanted = {
        "demo": "codebook_features fsm demo",
        "test": "pytest",
        "demo-lm": "codebook_features lm demo",
        "test-fast": 'pytest -m "not slow"',
        "bench": "benchmarks/bench_codebook.py",
        "lint": "ruff check",
        "test-latest": ".venv-latest/bin/python -m pytest",
        "lock": ".ci/write-lock requirements-lock.txt",
    }[target]
    assert wanted in dry.stdout, dry.stdout


def run_serve(words: list[str], cwd: Path) -> None:
    port = words[words.index("--port") + 1]
    server = subprocess.Popen(
        [sys.executable, "-m", "codebook_features", *words[1:]],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview") as answer:
                    overview = json.load(answer)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.5)
        assert overview["tokens"] > 0 and overview["model_loaded"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def parse(words: list[str]) -> None:
    """The command as written is accepted, and its settings are valid."""
    from codebook_features.cli import build_parser
    from codebook_features.settings.options import settings_from_args
    from tests.test_cli_help import SETTINGS

    argv = words[1:]
    args = build_parser(argv).parse_args(argv)
    names = [" ".join(argv[:n]) for n in range(len(argv), 0, -1)]
    command = next(name for name in names if name in SETTINGS)
    settings_from_args(SETTINGS[command], args)


def run_python(words: list[str], cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, *words[1:]],
        cwd=cwd,
        env=os.environ | {"PYTHONPATH": str(ROOT)},  # python -m tests....
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{shlex.join(words)}\n{done.stderr[-12000:]}"


def test_the_readme_commands_run(workdir: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workdir)
    for command in readme_commands():
        words = words_of(command)
        if STAND_INS[command].parse_only:
            parse(words)
        elif words[0] == "make":
            run_make(words)
        elif words[0] == "python":
            run_python(words, workdir)
        elif words[0] == "duckdb":
            import duckdb

            assert words[1] == "-c", command
            ((count,),) = duckdb.sql(words[2]).fetchall()
            assert count > 0
        elif words[0] == "torchrun":
            done = subprocess.run(
                [str(Path(sys.executable).parent / "torchrun"), *words[1:]],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{command}\n{done.stderr[-12000:]}"
        elif words[:2] == ["codebook", "serve"]:
            if "runs/demo-lm/store" in words and not (workdir / "runs" / "demo-lm").exists():
                demo = workdir / "runs" / "demo-lm"
                shutil.copytree(workdir / "runs" / "store", demo / "store")
                shutil.copytree(
                    workdir / "runs" / "my-run" / "final", demo / "attention-codebooks" / "final"
                )
            run_serve(words, workdir)
        else:
            assert words[0] == "codebook", command
            try:
                code = main(words[1:])
            except SystemExit as stop:  # --help
                code = stop.code
            out = capsys.readouterr()
            assert code == 0, (command, out.err)
    # what the commands made
    assert (workdir / "runs" / "fsm" / "cb" / "final" / "codebook_config.json").is_file()
    assert (workdir / "analysis.json").is_file()
    assert (workdir / "runs" / "my-yaml-run" / "final").is_dir()  # stopped, then continued
    assert (workdir / "runs" / "ddp" / "final").is_dir()
    # data-parallel for real: each of the two processes saved its own random state
    assert (workdir / "runs" / "ddp" / "checkpoint" / "random_states_1.safetensors").is_file()
    assert (workdir / "concepts" / "dragon.json").is_file()
    by_label = json.loads((workdir / "concepts" / "dragon-docs.json").read_text())
    assert by_label["selection"]["method"] == "texts"  # a label's documents as the examples
    assert by_label["selection"]["label"] == "dragon"
    assert (workdir / "concepts" / "kjv.json").is_file()
    assert (workdir / "runs" / "steering" / "steering.json").is_file()
    assert (workdir / "runs" / "codebook-layer" / "training.png").is_file()
    from tests.attach.family_matrix import readme_block

    table = readme_block((workdir / "README-copy.md").read_text())
    assert "with transformers" in table and table != readme_block(README.read_text())

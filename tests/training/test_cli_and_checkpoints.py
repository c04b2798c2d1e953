"""The ``codebook train`` command: help, one-line errors, refusing damaged or mismatched
checkpoints without touching the run, and a two-process data-parallel run."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from codebook_features.cli import main
from codebook_features.training import train
from codebook_features.training.checkpoint import write_checkpoint_checksums
from codebook_features.training.config import DataConfig, ModelConfig, TrainingConfig

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`


def test_help_documents_every_field(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines (also at hyphens)
    from codebook_features import CodebookModelConfig

    for section, cls in (
        ("model", ModelConfig),
        ("data", DataConfig),
        ("codebooks", CodebookModelConfig),
        ("training", TrainingConfig),
    ):
        for name, field in cls.model_fields.items():
            assert f"--{section}.{name}" in text
            assert field.description, f"{section}.{name} has no description"
            doc = "".join(field.description.replace("``", "").split())
            assert doc in text, f"{section}.{name} undocumented"


def write_config(make_config, tmp_path, **training) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(make_config(**training).to_dict()))
    return str(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--training.mode", "pretrain"], "training.mode: input should be 'finetune'"),
        (["--training.steps", "0"], "training.steps: input should be greater than or equal to 1"),
        (["--data.dataset", "missing/corpus.txt"], "data file missing/corpus.txt does not exist"),
        (["--codebooks.sites", "heads"], "unknown site 'heads'"),
        (["--training.resume", "true"], "no checkpoint to resume from"),
        (["--codebooks.k", "99"], "larger than num_codes"),
        (["--training.log_to", "mlflow"], "training.log_to.0: input should be 'tensorboard'"),
        (["--training.max_grad_norm", "-1"], "training.max_grad_norm: input should be greater"),
        (["--data.max_train_blocks", "0"], "data.max_train_blocks: input should be greater"),
        (["--data.dataset", "a.txt,wikitext"], "cannot be mixed"),
    ],
)
def test_bad_settings_fail_in_one_line(make_config, tmp_path, capsys, extra, message) -> None:
    code = main(["train", "--config", write_config(make_config, tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_keys_and_missing_sections(tmp_path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {init: {model_type: gpt_neox}, tokenizer: x}\ndata: {datset: a.txt}\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "unknown setting data.datset; known: dataset," in capsys.readouterr().err
    assert main(["train", "--training.steps", "3"]) == 2
    assert "no model settings" in capsys.readouterr().err


def test_print_config_resolves_file_and_overrides(make_config, tmp_path, capsys) -> None:
    path = write_config(make_config, tmp_path)
    assert (
        main(
            [
                "train",
                "--config",
                path,
                "--print_config",
                "--codebooks.layers",
                "0",
                "-1",
                "--codebooks.per_site",
                '{"mlp": {"k": 4}}',
                "--training.lr",
                "0.01",
            ]
        )
        == 0
    )
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["codebooks"]["layers"] == [0, -1]
    assert resolved["codebooks"]["per_site"] == {"mlp": {"k": 4}}
    assert resolved["training"]["lr"] == 0.01 and resolved["training"]["steps"] == 40


def test_existing_run_is_not_overwritten(make_config, tmp_path, capsys) -> None:
    path = write_config(make_config, tmp_path, steps=4, eval_every=2, save_every=2)
    assert main(["train", "--config", path]) == 0
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert main(["train", "--config", path]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics


def test_damaged_or_mismatched_checkpoints_are_refused(make_config, tmp_path, capsys) -> None:
    config = make_config(steps=6, eval_every=3, save_every=3, stop_at=3)
    train(config)
    run_dir = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    path = write_config(make_config, tmp_path, steps=6, eval_every=3, save_every=3)
    assert (
        main(["train", "--config", path, "--training.resume", "true", "--training.lr", "0.1"]) == 2
    )
    assert "made with other settings (training.lr: 0.003 -> 0.1)" in capsys.readouterr().err

    (run_dir / "checkpoint" / "optimizer.safetensors").write_bytes(b"garbage")
    before["optimizer.safetensors"] = b"garbage"
    assert main(["train", "--config", path, "--training.resume", "true"]) == 2
    assert "optimizer.safetensors in the checkpoint" in capsys.readouterr().err
    # checksums that match: the garbage is still refused
    write_checkpoint_checksums(run_dir / "checkpoint")
    before["manifest.json"] = (run_dir / "checkpoint" / "manifest.json").read_bytes()
    assert main(["train", "--config", path, "--training.resume", "true"]) == 2
    assert "could not be loaded" in capsys.readouterr().err

    state = run_dir / "checkpoint" / "trainer_state.json"
    state.write_text("{")
    before["trainer_state.json"] = b"{"
    assert main(["train", "--config", path, "--training.resume", "true"]) == 2
    assert "is damaged" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


def test_two_process_run_keeps_replicas_identical(make_config, tmp_path) -> None:
    config = make_config(
        steps=12, eval_every=6, save_every=6, batch_size=8, kmeans_init=True, kmeans_tokens=500
    )
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29517",
            "-m",
            "codebook_features",
            "train",
            "--config",
            str(path),
            "--training.device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 12
    rank0 = json.loads((run_dir / "replicas" / "rank0.json").read_text())
    rank1 = json.loads((run_dir / "replicas" / "rank1.json").read_text())
    assert rank0 == rank1 and any(k.startswith("codebooks.") for k in rank0)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["split"] == "val" and rows[-1]["loss"] < rows[0]["loss"]


def test_shipped_example_configs_resolve(capsys) -> None:
    from pathlib import Path

    for path in sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")):
        assert main(["train", "--config", str(path), "--print_config"]) == 0, path
        assert yaml.safe_load(capsys.readouterr().out)["model"]


def test_values_from_files_are_checked_and_converted(make_config, tmp_path, capsys) -> None:
    data = make_config().to_dict()
    data["training"].update(lr="1e-3", warmup_steps=1e1, resume="false", log_to="none")
    data["codebooks"]["layers"] = 0
    path = tmp_path / "typed.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(path), "--print_config"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["training"]["lr"] == 0.001 and resolved["training"]["warmup_steps"] == 10
    assert resolved["training"]["resume"] is False and resolved["codebooks"]["layers"] == [0]
    data["training"]["steps"] = 1.5
    path.write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(path)]) == 2
    assert "training.steps: input should be a valid integer" in capsys.readouterr().err


def test_overwrite_replaces_the_whole_run(make_config, tmp_path) -> None:
    train(make_config("baseline", steps=4, eval_every=2, save_every=2))
    result = train(make_config(steps=4, eval_every=2, save_every=2, overwrite=True))
    assert (result.model_dir / "codebook_config.json").exists()  # not the baseline's final/


def test_checkpoint_recovery_and_refusals(make_config, tmp_path, capsys) -> None:
    import shutil

    train(make_config(steps=6, eval_every=3, save_every=3, stop_at=3))
    run_dir = tmp_path / "run"
    path = write_config(make_config, tmp_path, steps=6, eval_every=3, save_every=3)
    # a crash between the two renames of a checkpoint swap leaves only the old copy
    (run_dir / "checkpoint").rename(run_dir / ".checkpoint.old")
    state = run_dir / "checkpoint" / "trainer_state.json"
    saved = json.loads((run_dir / ".checkpoint.old" / "trainer_state.json").read_text())
    saved["world_size"] = 2
    (run_dir / ".checkpoint.old" / "trainer_state.json").write_text(json.dumps(saved))
    aside = run_dir / ".checkpoint.old"
    for name in ("random_states_{}.safetensors", "random_states_{}.json"):  # a second process's
        shutil.copy(aside / name.format(0), aside / name.format(1))
    write_checkpoint_checksums(run_dir / ".checkpoint.old")
    assert main(["train", "--config", path, "--training.resume", "true"]) == 2
    assert "made with 2 processes" in capsys.readouterr().err
    assert state.exists()  # the old checkpoint was brought back
    saved["world_size"] = 1
    state.write_text(json.dumps(saved))
    write_checkpoint_checksums(run_dir / "checkpoint")
    backup = tmp_path / "backup"
    shutil.copytree(run_dir, backup)
    (run_dir / "checkpoint" / "random_states_0.safetensors").unlink()
    assert main(["train", "--config", path, "--training.resume", "true"]) == 2
    assert "is missing random_states_0.safetensors" in capsys.readouterr().err
    shutil.rmtree(run_dir)
    shutil.copytree(backup, run_dir)
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"split": "tra')  # a line cut short by a crash
    assert main(["train", "--config", path, "--training.resume", "true"]) == 0
    assert main(["train", "--config", path, "--training.resume", "true"]) == 2
    assert "is finished (6 steps); to train longer, resume with a larger --training.steps" in (
        capsys.readouterr().err
    )

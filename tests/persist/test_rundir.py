"""Reading a run directory: what each accessor returns, what a crash leaves behind, and that the
reader needs neither accelerate nor the training loop."""

import json
import subprocess
import sys

import pytest
import yaml

from codebook_features import CodebookError
from codebook_features.persist.rundir import RunDir, read_metrics

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`


def make_run(root, steps=4, summary_steps=4, final=True):
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"training": {"steps": steps}}))
    rows = [
        {"split": "val", "step": 0, "loss": 3.0},
        {"split": "train", "step": 2, "lm_loss": 2.5},
        {"split": "val", "step": 4, "loss": 2.0},
    ]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (root / "metrics.jsonl").write_text(lines + '{"split": "tra')  # cut short by a crash
    (root / "checkpoint").mkdir()
    (root / "checkpoint" / "trainer_state.json").write_text(json.dumps({"step": steps}))
    (root / "plots").mkdir()
    for name in ("loss.png", "code_usage.png", "notes.txt"):
        (root / "plots" / name).write_bytes(b"")
    if final:
        (root / "final").mkdir()
    (root / "summary.json").write_text(json.dumps({"steps": summary_steps}))
    return RunDir(root)


def test_a_run_directory_is_read(tmp_path) -> None:
    run = make_run(tmp_path / "run")
    assert run.exists()
    assert run.config() == {"training": {"steps": 4}}
    assert [r["step"] for r in run.metrics()] == [0, 2, 4]
    assert [r["loss"] for r in run.val_rows()] == [3.0, 2.0]
    assert [r["lm_loss"] for r in run.train_rows()] == [2.5]
    assert run.summary() == {"steps": 4}
    assert [p.name for p in run.plots()] == ["code_usage.png", "loss.png"]
    assert run.final_model() == tmp_path / "run" / "final"
    assert run.checkpoint_step() == 4
    assert run.finished()
    assert read_metrics(tmp_path / "run" / "metrics.jsonl") == run.metrics()


def test_a_run_killed_before_its_model_is_not_finished(tmp_path) -> None:
    assert not make_run(tmp_path / "a", final=False).finished()
    # final/ and summary from before the run was extended to 8 steps
    assert not make_run(tmp_path / "b", steps=8, summary_steps=4).finished()


def test_an_empty_directory(tmp_path) -> None:
    run = RunDir(tmp_path)
    assert not run.exists() and not run.finished()
    assert run.metrics() == [] and run.plots() == []
    assert run.summary() is None and run.final_model() is None and run.checkpoint_step() is None
    with pytest.raises(CodebookError, match=r"holds no config\.yaml: it is not a training run"):
        run.config()


def test_damaged_files(tmp_path) -> None:
    run = make_run(tmp_path / "run")
    (run.path / "config.yaml").write_text("- a list\n")
    with pytest.raises(CodebookError, match="is damaged"):
        run.config()
    (run.path / "summary.json").write_text("{")
    (run.path / "checkpoint" / "trainer_state.json").write_text('{"step": "4"}')
    assert run.summary() is None and run.checkpoint_step() is None and not run.finished()


@pytest.mark.parametrize(
    "module", ["codebook_features.persist.rundir", "codebook_features.demos.fsm.report"]
)
def test_reading_a_run_needs_neither_accelerate_nor_the_trainer(module: str) -> None:
    code = (
        f"import {module}, sys; "
        "assert 'accelerate' not in sys.modules, 'accelerate'; "
        "assert 'codebook_features.training.loop' not in sys.modules, 'loop'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

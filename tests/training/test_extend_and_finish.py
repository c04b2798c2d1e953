"""Training a finished run longer, finishing a run killed before it wrote its model, and the
timing and throughput that runs record."""

import json
import logging
import shutil

import pytest
import torch

from codebook_features import CodebookError
from codebook_features.persist.rundir import RunDir
from codebook_features.training import train

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

SHORT = {"steps": 6, "eval_every": 3, "save_every": 3}


def test_a_finished_run_trains_longer_with_more_steps(make_config) -> None:
    first = train(make_config(**SHORT))
    before = RunDir(first.run_dir)
    assert before.finished() and before.checkpoint_step() == 6
    with pytest.raises(CodebookError, match=r"is finished \(6 steps\); to train longer"):
        train(make_config(**SHORT | {"resume": True}))

    longer = train(make_config(**SHORT | {"steps": 9, "resume": True}))
    assert longer.step == 9 and longer.model_dir is not None
    run = RunDir(longer.run_dir)
    assert [r["step"] for r in run.val_rows()] == [0, 3, 6, 9]
    assert [r["step"] for r in run.train_rows()] == [3, 6, 9]
    assert run.finished() and run.checkpoint_step() == 9 and run.summary()["steps"] == 9
    assert run.config()["training"]["steps"] == 9
    assert longer.metrics.loss == run.val_rows()[-1]["loss"]


def test_fewer_steps_than_the_checkpoint_are_refused(make_config) -> None:
    train(make_config(**SHORT))
    with pytest.raises(CodebookError, match=r"at step 6, past --training.steps 4: resume with"):
        train(make_config(**SHORT | {"steps": 4, "resume": True}))


def test_starting_over_a_finished_run_says_how_to_extend_it(make_config) -> None:
    train(make_config(**SHORT))
    with pytest.raises(CodebookError, match=r"finished .* larger --training\.steps"):
        train(make_config(**SHORT))


def cosine_lrs(steps: int) -> dict[int, float]:
    """The learning rate after each step of a cosine schedule (2 warm-up steps) from the start."""
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=steps)
    lrs = {0: optimizer.param_groups[0]["lr"]}
    for step in range(1, steps + 1):
        optimizer.step()
        schedule.step()
        lrs[step] = schedule.get_last_lr()[0]
    return lrs


def test_extended_schedule_continues_from_the_longer_schedule(make_config, caplog) -> None:
    from codebook_features.training.loop import Trainer

    settings = SHORT | {"schedule": "cosine", "warmup_steps": 2}
    train(make_config(**settings))
    short, long = cosine_lrs(6), cosine_lrs(12)
    extended = make_config(**settings | {"steps": 12, "resume": True})

    trainer = Trainer(extended)
    with caplog.at_level(logging.WARNING, logger="codebook_features.training.loop"):
        trainer._resume()
    assert "cosine learning-rate schedule is rebuilt for 12 steps instead of 6" in caplog.text
    # step 7 uses the 12-step schedule's rate at step 6, not the finished schedule's (zero)
    assert short[6] == 0.0
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == pytest.approx(long[6], rel=1e-12)
    del trainer

    train(extended)
    logged = {r["step"]: r["lr"] for r in RunDir(extended.training.output_dir).train_rows()}
    assert logged[3] == pytest.approx(short[3], rel=1e-12)
    assert logged[6] == pytest.approx(short[6], abs=1e-15)
    for step in (9, 12):  # after the extension: the longer schedule's values
        assert logged[step] == pytest.approx(long[step], rel=1e-12)


def test_a_run_killed_before_final_is_finished_on_resume(make_config) -> None:
    first = train(make_config(**SHORT))
    rows = (first.run_dir / "metrics.jsonl").read_text()
    shutil.rmtree(first.run_dir / "final")  # killed after the last checkpoint, before final/
    (first.run_dir / "summary.json").unlink()
    assert not RunDir(first.run_dir).finished()

    again = train(make_config(**SHORT | {"resume": True}))
    assert again.step == 6 and again.model_dir == first.run_dir / "final"
    assert (again.model_dir / "codebooks.safetensors").exists()
    assert (first.run_dir / "metrics.jsonl").read_text() == rows  # nothing logged twice
    summary = json.loads((first.run_dir / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["final"]["loss"] == again.metrics.loss
    assert again.metrics.loss == pytest.approx(json.loads(rows.splitlines()[-1])["loss"])


def test_a_stale_model_from_before_an_extension_does_not_count_as_finished(make_config) -> None:
    train(make_config(**SHORT))
    longer = make_config(**SHORT | {"steps": 9, "resume": True})
    train(longer)
    run_dir = longer.training.output_dir
    # as if killed after the step-9 checkpoint: final/ and summary.json are the 6-step ones
    summary = json.loads((RunDir(run_dir).path / "summary.json").read_text())
    summary["steps"] = 6
    (RunDir(run_dir).path / "summary.json").write_text(json.dumps(summary))
    assert not RunDir(run_dir).finished()
    result = train(longer)
    assert result.step == 9 and RunDir(run_dir).summary()["steps"] == 9


def test_rows_and_summary_record_time_and_throughput(make_config) -> None:
    config = make_config(steps=6, eval_every=2, save_every=2, stop_at=4)
    train(config)
    run = RunDir(config.training.output_dir)
    before = run.train_rows()
    train(make_config(steps=6, eval_every=2, save_every=2, resume=True))
    rows = run.train_rows()
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert list(rows[0]) == [
        *("split", "step", "lm_loss", "codebook_loss", "lr"),
        *("time", "elapsed_s", "tokens_per_s"),
    ]
    assert list(run.val_rows()[0]) == [
        *("split", "step", "loss", "accuracy", "perplexity", "sites"),
        *("without_codebooks_loss", "without_codebooks_accuracy", "without_codebooks_perplexity"),
    ]
    assert list(run.val_rows()[0]["sites"]["layers.0.mlp"]) == [
        *("mse", "fvu", "active_codes", "dead_fraction", "entropy"),
    ]
    assert rows[:2] == before
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["elapsed_s"] > 0 and row["time"] > 1.6e9
    elapsed = [r["elapsed_s"] for r in rows]
    assert elapsed == sorted(elapsed)  # continues across the resume
    assert all("time" not in r for r in run.val_rows())

    summary = run.summary()
    tokens_per_step = 16 * 32  # batch size x block size, one process
    assert summary["tokens"] == 6 * tokens_per_step
    assert summary["elapsed_s"] >= elapsed[-1] > 0
    assert summary["tokens_per_s"] == pytest.approx(summary["tokens"] / summary["elapsed_s"], 0.01)
    blocks = summary["train_blocks"] + summary["val_blocks"]
    assert summary["val_blocks"] == max(1, round(blocks * 0.05))  # validation_fraction
    assert summary["started"] <= summary["finished"]  # ISO 8601 in UTC
    assert summary["started"].endswith("+00:00") and summary["finished"].endswith("+00:00")

"""Directory ownership: what a command may continue, replace or must refuse, at any depth."""

import json
from pathlib import Path

import pytest

from codebook_features import CodebookError
from codebook_features.persist.files import OWNER_FILE
from codebook_features.persist.ownership import (
    FSM_DATA,
    FSM_DEMO,
    RUN,
    check_output_dir,
    check_output_file,
    clear_own,
    mark,
)


def a_run(path: Path) -> Path:
    mark(path, RUN)
    (path / "config.yaml").write_text("training: {}\n")
    (path / "metrics.jsonl").write_text("")
    (path / "plots").mkdir()
    (path / "plots" / "loss.png").write_bytes(b"png")
    (path / "checkpoint").mkdir()
    (path / "checkpoint" / "model.safetensors").write_bytes(b"weights")
    manifest = {"files": {"model.safetensors": "x"}}
    (path / "checkpoint" / "manifest.json").write_text(json.dumps(manifest))
    (path / "codebook-features").mkdir()  # TensorBoard's logs
    (path / "codebook-features" / "events.out").write_bytes(b"events")
    return path


def test_new_ours_and_marker(tmp_path) -> None:
    assert check_output_dir(tmp_path / "missing", RUN) == "new"
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", RUN) == "new"
    run = a_run(tmp_path / "run")
    assert json.loads((run / OWNER_FILE).read_text())["kind"] == "run"
    assert check_output_dir(run, RUN) == "ours"
    assert check_output_dir(run, RUN, overwrite=True) == "ours"  # tracker logs are its own


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        ("notes.txt", "notes.txt"),
        ("plots/fig.png", "plots/fig.png"),
        ("checkpoint/custom_checkpoint_0.pkl", "checkpoint/custom_checkpoint_0.pkl"),
    ],
)
def test_overwrite_refuses_a_run_holding_someone_elses_files(tmp_path, extra, shown) -> None:
    run = a_run(tmp_path / "run")
    (run / extra).write_text("mine")
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    with pytest.raises(CodebookError, match=f"also holds files it did not make \\({shown}\\)"):
        check_output_dir(run, RUN, overwrite=True)
    assert check_output_dir(run, RUN) == "ours"  # continuing it is fine
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before


def test_clear_own_keeps_the_marker_only(tmp_path) -> None:
    run = a_run(tmp_path / "run")
    clear_own(run, RUN)
    assert [p.name for p in run.iterdir()] == [OWNER_FILE]


def test_runs_nest_in_a_demo_but_not_in_data(tmp_path) -> None:
    data = tmp_path / "data"
    mark(data, FSM_DATA)
    (data / "fsm.json").write_text("{}")
    a_run(data / "run1")
    with pytest.raises(CodebookError, match=r"did not make \(run1\)"):
        check_output_dir(data, FSM_DATA, overwrite=True)  # it would be replaced whole
    demo = tmp_path / "demo"
    mark(demo, FSM_DEMO)
    a_run(demo / "baseline")
    (demo / "results.json").write_text("{}")
    assert check_output_dir(demo, FSM_DEMO, overwrite=True) == "ours"


def test_refusals_say_what_the_directory_is(tmp_path) -> None:
    run = a_run(tmp_path / "run")
    with pytest.raises(CodebookError, match="holds a training run, not a TokFSM data"):
        check_output_dir(run, FSM_DATA)
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("x: 1\n")
    with pytest.raises(CodebookError, match="looks like a training run but is not marked"):
        check_output_dir(old, RUN)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CodebookError, match="is a file"):
        check_output_dir(tmp_path / "file", RUN)


def test_output_files(tmp_path) -> None:
    assert check_output_file(tmp_path / "new.json") == tmp_path / "new.json"
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"codebook_features_result": "fsm evaluate", "loss": 1}))
    assert check_output_file(ours) == ours
    for name, text in [("a.json", '{"codebook_features_version": "0.1"}'), ("b.txt", "notes")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(CodebookError, match="not a result written by codebook-features"):
            check_output_file(tmp_path / name)
    with pytest.raises(CodebookError, match="is a directory"):
        check_output_file(tmp_path)


def test_temporary_files_left_by_a_kill_are_its_own(tmp_path) -> None:
    from codebook_features.persist.ownership import STORE

    run = a_run(tmp_path / "run")
    (run / ".metrics.jsonl.k2j3x.tmp").write_text("half")
    assert check_output_dir(run, RUN, overwrite=True) == "ours"
    (run / ".notes.txt.k2j3x.tmp").write_text("not ours: no such entry")
    with pytest.raises(CodebookError, match=r"\.notes\.txt\.k2j3x\.tmp"):
        check_output_dir(run, RUN, overwrite=True)
    store = tmp_path / "store"
    mark(store, STORE)
    (store / ".index.abc123.tmp").mkdir()
    (store / ".index.abc123.tmp" / "x.npy").write_bytes(b"")
    (store / ".manifest.json.q1w2.tmp").write_text("{")
    assert check_output_dir(store, STORE, overwrite=True) == "ours"

"""Checkpoints are data: safetensors and JSON with a sha256 per file, never pickle. A planted
pickle payload is never loaded, a bit flip anywhere is refused without touching the run, the
earlier (pickle) format is refused, files follow the umask, and resuming stays exact."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from codebook_features import CodebookError, CodebookModelConfig
from codebook_features.persist.checksums import file_sha256
from codebook_features.persist.files import CHECKPOINT_FILES
from codebook_features.training import DataConfig, ModelConfig, RunConfig, TrainingConfig, train
from tests.model_zoo import TINY_NEOX

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

SHORT = {"steps": 6, "eval_every": 3, "save_every": 3}
TIMING = ("time", "elapsed_s", "tokens_per_s")


class Payload:
    """Unpickling this creates ``marker``: what a pickle in a checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload(marker: Path, probe: Path) -> bytes:
    """A pickle that creates ``marker``, after checking on ``probe`` that it works."""
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()
    return pickle.dumps({"random_state": Payload(marker)})


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()
    }


def rows(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in r.items() if k not in TIMING}
        for r in map(json.loads, lines)
        if r["split"] == split
    ]


@pytest.fixture(scope="module")
def pristine(text_data, tmp_path_factory) -> Path:
    """A run stopped at step 3 of 6, as ``make_config(**SHORT, stop_at=3)`` makes it."""
    corpus, tokenizer = text_data
    output_dir = tmp_path_factory.mktemp("pristine") / "run"
    config = RunConfig(
        model=ModelConfig(init=dict(TINY_NEOX), tokenizer=str(tokenizer)),
        data=DataConfig(dataset=str(corpus), block_size=32),
        codebooks=CodebookModelConfig(
            num_codes=32, k=2, sites=["attn_heads", "mlp"], dead_code_window=5
        ),
        training=TrainingConfig(
            output_dir=str(output_dir),
            mode="finetune",
            batch_size=16,
            lr=3e-3,
            progress=False,
            stop_at=3,
            **SHORT,
        ),
    )
    return train(config).run_dir


@pytest.fixture
def stopped(make_config, pristine) -> Path:
    """A copy of the stopped run where ``make_config`` puts it (``output_dir`` may change on
    resume), with a checkpoint to resume."""
    run_dir = Path(make_config().training.output_dir)
    shutil.copytree(pristine, run_dir)
    return run_dir


def test_a_checkpoint_is_safetensors_and_json_with_a_manifest(stopped) -> None:
    checkpoint = stopped / "checkpoint"
    names = {p.name for p in checkpoint.iterdir()}
    assert set(CHECKPOINT_FILES) <= names
    assert names == set(CHECKPOINT_FILES) | {
        "random_states_0.safetensors",
        "random_states_0.json",
        "upkeep.safetensors",
    }
    manifest = json.loads((checkpoint / "manifest.json").read_text())["files"]
    assert set(manifest) == names - {"manifest.json"}
    for name, digest in manifest.items():
        assert file_sha256(checkpoint / name) == digest
    for name in names:
        path = checkpoint / name
        if name.endswith(".json"):
            json.loads(path.read_text())
        else:
            assert name.endswith(".safetensors")
            with safe_open(path, "pt") as f:
                assert list(f.keys())
    optimizer = json.loads((checkpoint / "optimizer.json").read_text())
    first = optimizer["param_groups"][0]["params"]
    assert first == list(range(len(first)))
    with safe_open(checkpoint / "optimizer.safetensors", "pt") as f:
        assert {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step"} <= set(f.keys())
    assert "lr_lambdas" not in json.loads((checkpoint / "scheduler.json").read_text())


@pytest.mark.parametrize("planted", ["random_states_0.pkl", "custom_checkpoint_0.pkl"])
def test_a_planted_pickle_is_never_loaded(make_config, stopped, tmp_path, planted) -> None:
    marker = tmp_path / "payload-ran"
    (stopped / "checkpoint" / planted).write_bytes(payload(marker, tmp_path / "probe"))
    before = snapshot(stopped)
    with pytest.raises(CodebookError, match=f"holds {planted}, which its manifest does not list"):
        train(make_config(**SHORT, resume=True))
    assert not marker.exists()
    assert snapshot(stopped) == before


def test_an_old_format_checkpoint_is_refused_unread(make_config, stopped, tmp_path) -> None:
    checkpoint = stopped / "checkpoint"
    marker = tmp_path / "payload-ran"
    for name in json.loads((checkpoint / "manifest.json").read_text())["files"]:
        if name not in ("model.safetensors", "trainer_state.json"):
            (checkpoint / name).unlink()
    (checkpoint / "manifest.json").unlink()
    planted = payload(marker, tmp_path / "probe")
    for name in ("optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"):
        (checkpoint / name).write_bytes(planted)
    before = snapshot(stopped)
    with pytest.raises(CodebookError, match=r"written by an older version .* cannot be resumed"):
        train(make_config(**SHORT, resume=True))
    assert not marker.exists()
    assert snapshot(stopped) == before


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    if path.name == "manifest.json":  # inside a recorded checksum
        offset = data.index(b'": "') + 10
    elif path.suffix == ".safetensors":  # in the tensors, not the header
        offset = len(data) - 7
    else:
        offset = len(data) // 2
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_bit_flip_in_any_checkpoint_file_is_refused(make_config, stopped, tmp_path) -> None:
    pristine = tmp_path / "pristine"
    shutil.copytree(stopped, pristine)
    names = sorted(p.name for p in (stopped / "checkpoint").iterdir())
    assert len(names) == 9
    for name in names:
        shutil.rmtree(stopped)
        shutil.copytree(pristine, stopped)
        flip_a_bit(stopped / "checkpoint" / name)
        before = snapshot(stopped)
        with pytest.raises(CodebookError, match=r"is damaged.*; nothing was changed") as refused:
            train(make_config(**SHORT, resume=True))
        named = "model.safetensors" if name == "manifest.json" else name  # its first checksum
        assert f"{named} in the checkpoint" in str(refused.value), name
        assert snapshot(stopped) == before, name
    shutil.rmtree(stopped)
    shutil.copytree(pristine, stopped)
    assert train(make_config(**SHORT, resume=True)).step == 6  # the pristine copy resumes


@pytest.mark.parametrize(("mode", "umask"), [("finetune", 0o002), ("baseline", 0o022)])
def test_written_files_follow_the_umask(make_config, mode, umask) -> None:
    previous = os.umask(umask)
    try:
        run_dir = train(make_config(mode, steps=2, eval_every=2, save_every=1)).run_dir
    finally:
        os.umask(previous)
    checked = 0
    for folder in ("checkpoint", "final"):
        assert (run_dir / folder).stat().st_mode & 0o777 == 0o777 & ~umask
        for path in (run_dir / folder).rglob("*"):
            expected = (0o777 if path.is_dir() else 0o666) & ~umask
            assert path.stat().st_mode & 0o777 == expected, (path, oct(path.stat().st_mode))
            checked += 1
    assert checked > 10


@pytest.mark.parametrize("mode", ["finetune", "baseline"])
def test_resume_restores_every_state_exactly(make_config, mode) -> None:
    settings = {
        "steps": 8,
        "eval_every": 8,
        "save_every": 4,
        "schedule": "cosine",
        "warmup_steps": 2,
        "grad_accum": 2,
        "batch_size": 8,
    }
    whole = train(make_config(mode, name="whole", **settings)).run_dir
    assert train(make_config(mode, name="split", stop_at=4, **settings)).step == 4
    split = train(make_config(mode, name="split", resume=True, **settings)).run_dir
    for split_name in ("train", "val"):
        assert rows(whole, split_name) == rows(split, split_name)
    # the last checkpoints hold the same bytes: weights, optimizer, schedule, random generators
    a, b = snapshot(whole / "checkpoint"), snapshot(split / "checkpoint")
    assert set(a) == set(b)
    for name in set(a) - {"trainer_state.json", "manifest.json"}:
        assert a[name] == b[name], name
    for name in ("model.safetensors", "codebooks.safetensors"):
        if (whole / "final" / name).exists():
            assert (whole / "final" / name).read_bytes() == (split / "final" / name).read_bytes()


def torchrun(config_path: Path, port: int, *extra: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={port}",
            "-m",
            "codebook_features",
            "train",
            "--config",
            str(config_path),
            "--training.device",
            "cpu",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_process_resume_equals_an_uninterrupted_run(make_config, tmp_path) -> None:
    settings = {"steps": 4, "eval_every": 4, "save_every": 2, "batch_size": 8, "kmeans_init": True}
    runs = {}
    for port, name in ((29527, "whole"), (29528, "split")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(make_config(name=name, **settings).to_dict()))
        runs[name] = (path, port)
    torchrun(*runs["whole"])
    torchrun(*runs["split"], "--training.stop_at", "2")
    split = tmp_path / "split"
    names = {p.name for p in (split / "checkpoint").iterdir()}
    assert {"random_states_0.safetensors", "random_states_1.safetensors"} <= names
    assert {"random_states_0.json", "random_states_1.json"} <= names
    torchrun(runs["split"][0], 29529, "--training.resume", "true")
    whole = tmp_path / "whole"
    for split_name in ("train", "val"):
        assert rows(whole, split_name) == rows(split, split_name)
    for name in ("model.safetensors", "codebooks.safetensors"):
        assert (whole / "final" / name).read_bytes() == (split / "final" / name).read_bytes()
    a, b = snapshot(whole / "checkpoint"), snapshot(split / "checkpoint")
    for name in set(a) - {"trainer_state.json", "manifest.json"}:
        assert a[name] == b[name], name

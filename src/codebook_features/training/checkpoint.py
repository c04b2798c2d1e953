"""Checkpoints of a training run: data only, written atomically, checked before resuming.

A checkpoint holds tensors in safetensors files and everything else in JSON, never pickle, so
loading one cannot run code: the model's weights, the optimizer's state, the learning-rate
schedule's position, each process's random generators, the codebooks' upkeep state (dead-code
bookkeeping), the trainer's position and the run's resolved configuration. ``manifest.json``,
written last, records the sha256 of every other file. A checkpoint that is damaged, holds a file
its manifest does not list, was written in the earlier (pickle) format, or belongs to a
differently configured run, is refused before anything is loaded or changed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from codebook_features.attach.model import CodebookModel
from codebook_features.codebook.distributed import all_reduce_
from codebook_features.errors import CodebookError
from codebook_features.persist.checksums import directory_checksums, verify_checksums
from codebook_features.persist.files import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILES,
    CHECKPOINT_MODEL,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_OPTIMIZER_STATE,
    CHECKPOINT_RANDOM,
    CHECKPOINT_RANDOM_STATE,
    CHECKPOINT_SCALER,
    CHECKPOINT_SCHEDULER,
    CHECKPOINT_UPKEEP,
    MANIFEST,
    OLD_CHECKPOINT_FILES,
    TRAINER_STATE,
    atomic_file,
    recover_directory,
    write_json,
)
from codebook_features.settings.base import (
    NonNegativeInt,
    NonNegativeNumber,
    PositiveInt,
    Record,
    stamp,
)
from codebook_features.settings.options import flatten
from codebook_features.training.config import RESUME_FREE, RunConfig


class TrainerState(Record):
    """``trainer_state.json``: where a checkpoint is in its run, and the run's settings."""

    step: NonNegativeInt
    """Optimizer steps done."""
    micro_batches: NonNegativeInt
    """Micro-batches done (``step * grad_accum`` at a checkpoint)."""
    world_size: PositiveInt
    """Processes of the run."""
    elapsed_s: NonNegativeNumber = 0.0
    """Wall seconds spent, over all sessions."""
    started: float | None = None
    """When the run started (unix seconds)."""
    config: RunConfig
    """The run's settings."""


def load_errors() -> tuple[type[BaseException], ...]:
    """What loading a checkpoint's (verified) files raises when they do not fit this run."""
    from safetensors import SafetensorError

    return (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, SafetensorError)


# ------------------------------------------------------------------ what a checkpoint holds
class CodebookUpkeep:
    """The codebooks' dead-code bookkeeping, which is not part of their weights, as flat
    tensors (``<site>.training_calls``, ``<site>.last_used``, ``<site>.recent_inputs``)."""

    FIELDS = ("training_calls", "last_used", "recent_inputs")

    def __init__(self, cbm: CodebookModel) -> None:
        self.cbm = cbm

    def synchronize(self) -> None:
        """Combine usage over processes (all of them must call this before a checkpoint):
        a refresh would take the maximum anyway, so saving it changes nothing."""
        for name in self.cbm.sites:
            all_reduce_(self.cbm.codebook(name).last_used, "max")

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {}
        for name in self.cbm.sites:
            codebook = self.cbm.codebook(name)
            state[f"{name}.training_calls"] = torch.tensor(codebook.training_calls)
            state[f"{name}.last_used"] = codebook.last_used.detach().cpu().contiguous()
            state[f"{name}.recent_inputs"] = codebook.recent_inputs.detach().cpu().contiguous()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = {f"{name}.{field}" for name in self.cbm.sites for field in self.FIELDS}
        if set(state) != expected:
            raise ValueError(f"{CHECKPOINT_UPKEEP} does not hold these codebooks' upkeep state")
        for name in self.cbm.sites:
            codebook = self.cbm.codebook(name)
            last_used, recent = state[f"{name}.last_used"], state[f"{name}.recent_inputs"]
            if last_used.shape != codebook.last_used.shape:
                raise ValueError(f"{CHECKPOINT_UPKEEP}: {name}.last_used has another shape")
            if recent.shape != codebook.recent_inputs.shape:
                raise ValueError(f"{CHECKPOINT_UPKEEP}: {name}.recent_inputs has another shape")
        for name in self.cbm.sites:
            codebook = self.cbm.codebook(name)
            codebook.training_calls = int(state[f"{name}.training_calls"])
            codebook.last_used.copy_(state[f"{name}.last_used"])
            codebook.recent_inputs.copy_(state[f"{name}.recent_inputs"])


@dataclass
class Checkpointed:
    """The training state a checkpoint saves besides the trainer's position."""

    module: nn.Module
    """The trained module, unwrapped (its ``state_dict`` is the same on every process)."""
    optimizer: Any
    """The optimizer (``torch.optim.Optimizer`` or accelerate's wrapper of one)."""
    scheduler: Any
    """The learning-rate schedule (``LambdaLR``)."""
    upkeep: CodebookUpkeep | None = None
    """The codebooks' upkeep state (``None`` without codebooks)."""
    scaler: Any = None
    """The fp16 gradient scaler (``None`` without fp16)."""


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_shared(directory: Path, parts: Checkpointed) -> None:
    """What is the same on every process (written by the main process): the model's weights,
    the optimizer, the schedule, the gradient scaler and the codebooks' upkeep state."""
    from safetensors.torch import save_model

    with atomic_file(directory / CHECKPOINT_MODEL) as tmp:
        save_model(parts.module, str(tmp), metadata={"format": "pt"}, force_contiguous=True)
    state = parts.optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    numbers: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                numbers.setdefault(str(index), {})[name] = value
    _save_tensors(directory / CHECKPOINT_OPTIMIZER, tensors)
    write_json(
        directory / CHECKPOINT_OPTIMIZER_STATE,
        {"param_groups": state["param_groups"], "state": numbers},
    )
    schedule = parts.scheduler.state_dict()
    schedule.pop("lr_lambdas", None)  # functions: rebuilt from the settings, not saved
    write_json(directory / CHECKPOINT_SCHEDULER, schedule)
    if parts.scaler is not None and parts.scaler.is_enabled():
        write_json(directory / CHECKPOINT_SCALER, parts.scaler.state_dict())
    if parts.upkeep is not None:
        _save_tensors(directory / CHECKPOINT_UPKEEP, parts.upkeep.state_dict())


def write_random_states(directory: Path, rank: int) -> None:
    """This process's random generators: torch's (CPU and every CUDA device) as uint8 tensors,
    Python's and NumPy's as JSON lists (each process writes its own)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for device, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{device}"] = state
    _save_tensors(directory / CHECKPOINT_RANDOM.format(rank=rank), tensors)
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    write_json(
        directory / CHECKPOINT_RANDOM_STATE.format(rank=rank),
        {
            "python": [version, list(internal), gauss_next],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
        },
    )


def write_checkpoint_checksums(directory: Path) -> None:
    """Record the sha256 of every file of the checkpoint in ``manifest.json`` (written last,
    once every process has written its files)."""
    files = directory_checksums(directory, exclude=[MANIFEST])
    write_json(directory / MANIFEST, {"files": files})


def load_checkpoint(directory: Path, parts: Checkpointed, rank: int) -> None:
    """Load a checkpoint that :func:`read_state` verified into ``parts`` and this process's
    random generators, with safetensors and JSON only. Raises one of :func:`load_errors` when
    the files do not fit this run."""
    from safetensors.torch import load_model

    missing, unexpected = load_model(parts.module, directory / CHECKPOINT_MODEL, strict=False)
    if missing or unexpected:
        shown = ", ".join([*sorted(missing)[:3], *sorted(unexpected)[:3]])
        raise ValueError(f"{CHECKPOINT_MODEL} does not hold this model's weights ({shown})")

    saved = _read_json(directory / CHECKPOINT_OPTIMIZER_STATE)
    state: dict[int, dict[str, Any]] = {}
    for key, value in _load_tensors(directory / CHECKPOINT_OPTIMIZER).items():
        kind, index, name = key.split(".", 2)
        if kind != "state":
            raise ValueError(f"{CHECKPOINT_OPTIMIZER} holds an unknown tensor {key!r}")
        state.setdefault(int(index), {})[name] = value
    for index, values in saved["state"].items():
        state.setdefault(int(index), {}).update(values)
    groups = saved["param_groups"]
    current = parts.optimizer.param_groups
    if not isinstance(groups, list) or len(groups) != len(current):
        raise ValueError(f"{CHECKPOINT_OPTIMIZER_STATE} holds other parameter groups")
    for group, mine in zip(groups, current, strict=True):
        for key, value in group.items():  # JSON has no tuples (``betas``)
            if isinstance(mine.get(key), tuple) and isinstance(value, list):
                group[key] = tuple(value)
    parts.optimizer.load_state_dict({"state": state, "param_groups": groups})

    schedule = _read_json(directory / CHECKPOINT_SCHEDULER)
    known = set(parts.scheduler.state_dict()) - {"lr_lambdas"}
    if not isinstance(schedule, dict) or set(schedule) != known:
        raise ValueError(f"{CHECKPOINT_SCHEDULER} does not hold this schedule's state")
    if hasattr(parts.scheduler, "lr_lambdas"):
        schedule["lr_lambdas"] = [None] * len(parts.scheduler.lr_lambdas)
    parts.scheduler.load_state_dict(schedule)

    if parts.scaler is not None and parts.scaler.is_enabled():
        parts.scaler.load_state_dict(_read_json(directory / CHECKPOINT_SCALER))
    if parts.upkeep is not None:
        parts.upkeep.load_state_dict(_load_tensors(directory / CHECKPOINT_UPKEEP))
    _load_random_states(directory, rank)


def _load_random_states(directory: Path, rank: int) -> None:
    tensors = _load_tensors(directory / CHECKPOINT_RANDOM.format(rank=rank))
    saved = _read_json(directory / CHECKPOINT_RANDOM_STATE.format(rank=rank))
    version, internal, gauss_next = saved["python"]
    python_state = (
        int(version),
        tuple(int(x) for x in internal),
        None if gauss_next is None else float(gauss_next),
    )
    name, keys, pos, has_gauss, cached_gaussian = saved["numpy"]
    numpy_state = (
        str(name),
        np.asarray(keys, dtype=np.uint32),
        int(pos),
        int(has_gauss),
        float(cached_gaussian),
    )
    torch_state = tensors["torch"]
    if torch_state.dtype != torch.uint8:
        raise ValueError("a random generator state is not a uint8 tensor")
    # everything is read and checked before any generator changes
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    if torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            if f"cuda.{device}" in tensors:
                torch.cuda.set_rng_state(tensors[f"cuda.{device}"], device)


# ------------------------------------------------------------------ checking before resuming
def recover(run_dir: Path) -> None:
    """Bring back the previous checkpoint if a crash interrupted the swap to a new one."""
    recover_directory(run_dir / CHECKPOINT_DIR)


def changed_settings(
    saved: dict[str, Any], config: RunConfig, free: Iterable[str] = RESUME_FREE
) -> list[str]:
    """``"key: old -> new"`` for each setting (outside ``free``) in which ``config`` differs
    from the ``saved`` one, sorted by key."""
    mine, theirs, free = flatten(config.to_dict()), flatten(saved), set(free)
    return [
        f"{key}: {theirs.get(key)!r} -> {mine.get(key)!r}"
        for key in sorted(set(mine) | set(theirs))
        if key not in free and mine.get(key) != theirs.get(key)
    ]


def check_compatible(state: dict[str, Any], config: RunConfig, processes: int, where: Path) -> None:
    """Refuse to resume with settings that change what the run computes. ``training.steps``
    may grow (the run is extended), but not fall below the checkpoint's step."""
    if int(state.get("world_size", processes)) != processes:
        raise CodebookError(
            f"the checkpoint in {where} was made with {state['world_size']} processes; resume "
            f"with the same number (not {processes}): the batches depend on it"
        )
    step, steps = int(state["step"]), config.training.steps
    if steps < step:
        raise CodebookError(
            f"the checkpoint in {where} is at step {step}, past --training.steps {steps}: "
            f"resume with --training.steps {step} or more, or start a new run in another "
            "output_dir"
        )
    changes = changed_settings(state["config"], config, RESUME_FREE | {"training.steps"})
    if changes:
        shown = "; ".join(changes[:5])
        raise CodebookError(
            f"the checkpoint in {where} was made with other settings ({shown}); resume with the "
            "same configuration, or start a new run in another output_dir"
        )


def required_files(state: dict[str, Any]) -> list[str]:
    """The files a checkpoint with trainer state ``state`` must hold."""
    names = [name for name in CHECKPOINT_FILES if name != MANIFEST]
    for rank in range(int(state["world_size"])):
        names += [CHECKPOINT_RANDOM.format(rank=rank), CHECKPOINT_RANDOM_STATE.format(rank=rank)]
    if state["config"].get("training", {}).get("mode") != "baseline":
        names.append(CHECKPOINT_UPKEEP)
    return names


def _verify(checkpoint: Path) -> None:
    """Refuse a checkpoint that is not in this format, holds files its manifest does not list,
    or whose files differ from the checksums recorded when it was written."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        old = sorted(p.name for pattern in OLD_CHECKPOINT_FILES for p in checkpoint.glob(pattern))
        if old:
            raise CodebookError(
                f"the checkpoint in {checkpoint} was written by an older version of "
                f"codebook-features ({', '.join(old[:3])}: pickle files, which could run code "
                "when loaded) and cannot be resumed safely; it is not loaded and nothing was "
                "changed: start a new run in another output_dir, or rerun this one with "
                "--training.overwrite true"
            )
        raise CodebookError(
            f"the checkpoint in {checkpoint} is damaged ({MANIFEST} missing); nothing was changed"
        )
    try:
        files = json.loads(manifest.read_text())["files"]
        if not isinstance(files, dict) or not all(
            isinstance(name, str) and isinstance(digest, str) for name, digest in files.items()
        ):
            raise ValueError("bad manifest")
    except (ValueError, KeyError, TypeError) as error:
        raise CodebookError(
            f"the checkpoint in {checkpoint} is damaged (its {MANIFEST} cannot be "
            "read); nothing was changed"
        ) from error
    for name in files:  # a checkpoint is flat: nothing outside it is ever read
        if name != Path(name).name or name.startswith(".") or name == MANIFEST:
            raise CodebookError(
                f"the checkpoint in {checkpoint} is damaged (its manifest lists {name!r}); "
                "nothing was changed"
            )
    present = {
        p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if not p.is_dir()
    }
    foreign = sorted(present - set(files) - {MANIFEST})
    if foreign:
        raise CodebookError(
            f"the checkpoint in {checkpoint} holds {', '.join(foreign[:3])}, which its manifest "
            "does not list: a checkpoint holds only what the trainer wrote, and this one is "
            "refused unread; nothing was changed"
        )
    verify_checksums(
        files,
        lambda name: checkpoint / name,
        f"the checkpoint {checkpoint}",
        "it cannot be resumed; nothing was changed",
    )


def read_state(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint directory and its trainer state, validated: every file is checked
    against the checksum in the manifest before anything is read."""
    recover(run_dir)
    checkpoint = run_dir / CHECKPOINT_DIR
    state_file = checkpoint / TRAINER_STATE
    old = checkpoint.is_dir() and any(
        True for pattern in OLD_CHECKPOINT_FILES for _ in checkpoint.glob(pattern)
    )
    if not state_file.is_file() and not (checkpoint / MANIFEST).is_file() and not old:
        raise CodebookError(
            f"no checkpoint to resume from in {run_dir}: start the run without --resume"
        )
    _verify(checkpoint)
    try:
        state = TrainerState.from_saved(json.loads(state_file.read_text()), str(state_file))
        state = state.to_dict()
        listed = json.loads((checkpoint / MANIFEST).read_text())["files"]
        missing = [f for f in required_files(state) if f not in listed]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing")
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # CodebookError too
        raise CodebookError(
            f"the checkpoint in {checkpoint} is damaged ({error}); nothing was changed"
        ) from error
    return checkpoint, state


def write_state(
    directory: Path,
    step: int,
    micro_batches: int,
    config: RunConfig,
    world_size: int,
    elapsed_s: float = 0.0,
    started: float | None = None,
) -> None:
    """The trainer's position: steps and micro-batches done, wall seconds spent (over all
    sessions) and when the run started (unix seconds), with the run's settings."""
    state = {
        "step": step,
        "micro_batches": micro_batches,
        "world_size": world_size,
        "elapsed_s": elapsed_s,
        "started": started,
    }
    write_json(directory / TRAINER_STATE, stamp(state) | {"config": config.to_dict()})

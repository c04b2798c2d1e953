"""Checkpoints of a training run: written atomically, checked before resuming.

A checkpoint is accelerate's saved state (model, optimizer, random generators) plus the
codebooks' upkeep state (dead-code bookkeeping), the trainer's position and the run's resolved
configuration. A checkpoint that is damaged, or belongs to a differently configured run, is
refused before anything in the run directory changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from codebook_features.configs import flatten, to_dict
from codebook_features.distributed import all_reduce_
from codebook_features.errors import CodebookError
from codebook_features.files import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILES,
    TRAINER_STATE,
    recover_directory,
    write_json,
)
from codebook_features.model import CodebookModel
from codebook_features.saved import VERSION_KEY, read_saved, stamp
from codebook_features.training.config import RESUME_FREE, RunConfig

STATE_SCHEMA = {
    "step": None,
    "micro_batches": None,
    "world_size": None,
    "elapsed_s": None,
    "started": None,
    VERSION_KEY: None,
    "config": RunConfig,
}
"""What ``trainer_state.json`` holds; other keys (from a newer version) are dropped on load."""


class CodebookUpkeep:
    """The codebooks' dead-code bookkeeping, which is not part of their weights, as a
    checkpointable object (``state_dict``/``load_state_dict``)."""

    def __init__(self, cbm: CodebookModel) -> None:
        self.cbm = cbm

    def synchronize(self) -> None:
        """Combine usage over processes (all of them must call this before a checkpoint):
        a refresh would take the maximum anyway, so saving it changes nothing."""
        for name in self.cbm.sites:
            all_reduce_(self.cbm.codebook(name).last_used, "max")

    def state_dict(self) -> dict[str, Any]:
        state = {}
        for name in self.cbm.sites:
            codebook = self.cbm.codebook(name)
            state[name] = {
                "training_calls": torch.tensor(codebook.training_calls),
                "last_used": codebook.last_used.detach().cpu().clone(),
                "recent_inputs": codebook.recent_inputs.detach().cpu().clone(),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, values in state.items():
            codebook = self.cbm.codebook(name)
            codebook.training_calls = int(values["training_calls"])
            codebook.last_used.copy_(values["last_used"])
            codebook.recent_inputs.copy_(values["recent_inputs"])


def recover(run_dir: Path) -> None:
    """Bring back the previous checkpoint if a crash interrupted the swap to a new one."""
    recover_directory(run_dir / CHECKPOINT_DIR)


def changed_settings(
    saved: dict[str, Any], config: RunConfig, free: Iterable[str] = RESUME_FREE
) -> list[str]:
    """``"key: old -> new"`` for each setting (outside ``free``) in which ``config`` differs
    from the ``saved`` one, sorted by key."""
    mine, theirs, free = flatten(to_dict(config)), flatten(saved), set(free)
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


def read_state(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint directory and its trainer state, validated."""
    recover(run_dir)
    checkpoint = run_dir / CHECKPOINT_DIR
    state_file = checkpoint / TRAINER_STATE
    if not state_file.is_file():
        raise CodebookError(
            f"no checkpoint to resume from in {run_dir}: start the run without --resume"
        )
    try:
        state = json.loads(state_file.read_text())
        if not isinstance(state, dict) or not isinstance(state["config"], dict):
            raise ValueError("bad trainer state")
        state = read_saved(state, STATE_SCHEMA, str(state_file))
        if int(state["step"]) < 0:
            raise ValueError("bad trainer state")
        state["micro_batches"] = int(state["micro_batches"])
        state["elapsed_s"] = float(state.get("elapsed_s", 0.0))
        missing = [f for f in CHECKPOINT_FILES if not (checkpoint / f).exists()]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing")
    except (ValueError, KeyError, TypeError) as error:
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
    write_json(directory / TRAINER_STATE, stamp(state) | {"config": to_dict(config)})

"""The training loop, on accelerate: devices, data parallelism, mixed precision, checkpoints.

One loop serves the three modes, so they see the same data in the same order for the same
number of steps. The objective is the LM loss plus the codebooks' own losses, both logged.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codebook_features.attach.model import CodebookModel
from codebook_features.codebook.distributed import is_distributed
from codebook_features.errors import CodebookError
from codebook_features.persist.checksums import write_model_checksums
from codebook_features.persist.files import (
    CHECKPOINT_DIR,
    CHECKPOINT_TMP,
    CODE_USAGE_PLOT,
    FINAL_DIR,
    LOSS_PLOT,
    METRICS_FILE,
    PLOTS_DIR,
    REPLICA_FILE,
    REPLICAS_DIR,
    RUN_CONFIG,
    SUMMARY_FILE,
    TRACKER_DIR,
    atomic_directory,
    swap_directory,
    write_json,
    write_text,
)
from codebook_features.persist.model_files import verify_model_dir
from codebook_features.persist.ownership import RUN, check_output_dir, clear_own, mark
from codebook_features.persist.rundir import RunDir
from codebook_features.persist.sources import MODEL_FILES, check_source
from codebook_features.settings.options import flatten
from codebook_features.training import checkpoint as ckpt
from codebook_features.training.config import RunConfig, check_loggers
from codebook_features.training.data import (
    BatchPlan,
    build_blocks,
    check_vocabulary,
    load_run_tokenizer,
)
from codebook_features.training.evaluation import EvalMetrics, code_counts, evaluate
from codebook_features.training.plots import plot_code_usage, plot_losses

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    """The run directory."""
    model_dir: Path | None
    """The trained model (``None`` when the session stopped early at ``stop_at``)."""
    metrics: EvalMetrics | None
    """The last evaluation of this session (``None`` if it made none)."""
    step: int
    """Steps done."""


def train(config: RunConfig) -> TrainResult:
    """Run (or continue) a training run; see :class:`RunConfig`."""
    try:
        trainer = Trainer(config)
    except BaseException:  # refused while setting up: the process group still ends here
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    return trainer.run()


def write_run_config(run_dir: Path, config: RunConfig) -> None:
    """Write the run's resolved settings as YAML (atomically), as a person would write them."""
    import yaml

    write_text(run_dir / RUN_CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))


def build_base_model(config: RunConfig, tokenizer: Any) -> nn.Module:
    """The base model a run starts from: ``model.name_or_path`` loaded (checked), or a new one
    built from ``model.init`` to fit ``tokenizer``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = config.model
    kwargs = {"attn_implementation": spec.attn_implementation} if spec.attn_implementation else {}
    if spec.name_or_path:
        check_source(spec.name_or_path, "model", MODEL_FILES)
        verify_model_dir(spec.name_or_path)
        try:
            return AutoModelForCausalLM.from_pretrained(spec.name_or_path, **kwargs)
        except OSError as error:
            raise CodebookError(f"could not load model {spec.name_or_path!r}: {error}") from error
    init = dict(spec.init)
    init.setdefault("vocab_size", len(tokenizer))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        init.setdefault(name, getattr(tokenizer, name, None))
    try:
        model_config = AutoConfig.for_model(**init)
    except (ValueError, TypeError) as error:
        raise CodebookError(f"model.init is not a valid model config: {error}") from error
    return AutoModelForCausalLM.from_config(model_config, **kwargs)


class Trainer:
    def __init__(self, config: RunConfig) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from accelerate.utils import set_seed

        self.config = config
        t = config.training
        check_loggers(t)
        self.run_dir = Path(t.output_dir)
        self.accelerator = Accelerator(
            # "auto" under torchrun without a GPU is the CPU: said outright, or accelerate sets
            # up no data parallelism (each process would train alone, as rank 0)
            cpu=t.device == "cpu"
            or (
                t.device == "auto"
                and not torch.cuda.is_available()
                and int(os.environ.get("WORLD_SIZE", "1")) > 1
            ),
            mixed_precision=t.mixed_precision,
            log_with=t.log_to or None,
            project_dir=str(self.run_dir),
            # buffers hold per-process statistics: DDP must not overwrite them with rank 0's
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        )
        self.main = self.accelerator.is_main_process
        self._check_run_dir()
        set_seed(t.seed)
        self.tokenizer = load_run_tokenizer(config.model)
        model = build_base_model(config, self.tokenizer)
        self.cbm = CodebookModel(model, config.codebooks) if t.mode != "baseline" else None
        self.module: nn.Module = self.cbm if self.cbm is not None else model
        if t.mode == "codebooks":
            model.requires_grad_(False)
        train_blocks, val_blocks = build_blocks(config.data, self.tokenizer, t.seed)
        check_vocabulary(model, [train_blocks, val_blocks], config.data.dataset)
        self.block_counts = (
            len(train_blocks) if isinstance(train_blocks, torch.Tensor) else None,
            len(val_blocks),
        )
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self.tokens_per_step = t.batch_size * t.grad_accum * world * config.data.block_size
        self.plan = BatchPlan(train_blocks, t.batch_size, rank, world, t.seed)
        self.val_blocks = val_blocks[rank::world]
        self.optimizer = torch.optim.AdamW(self._param_groups(model), lr=t.lr)
        self.scheduler = _scheduler(config, self.optimizer)
        self.module, self.optimizer = self.accelerator.prepare(self.module, self.optimizer)
        self.upkeep = ckpt.CodebookUpkeep(self.cbm) if self.cbm is not None else None
        self.device = self.accelerator.device
        self.step = 0
        self.micro_batches = 0
        self.started = time.time()
        """When the run started (unix seconds; kept across resumes)."""
        self.elapsed_before = 0.0
        """Wall seconds spent by earlier sessions, up to the checkpoint this one resumed."""
        self.session_start = time.monotonic()
        self.last_row = (self.session_start, 0)
        """When, and at which step, the previous training row was logged."""

    # -------------------------------------------------------------------- set-up
    def _check_run_dir(self) -> None:
        t = self.config.training
        owned = check_output_dir(
            self.run_dir, RUN, overwrite=t.overwrite, option="--training.output_dir"
        )
        if owned == "ours":
            ckpt.recover(self.run_dir)
        run = RunDir(self.run_dir)
        has_checkpoint = (self.run_dir / CHECKPOINT_DIR).exists()
        if t.resume:
            self._checkpoint = ckpt.read_state(self.run_dir)  # verified once, used by _resume
            state = self._checkpoint[1]
            ckpt.check_compatible(state, self.config, self.accelerator.num_processes, self.run_dir)
            if int(state["step"]) == t.steps and run.finished():
                raise CodebookError(
                    f"the run in {self.run_dir} is finished ({state['step']} steps); to train "
                    "longer, resume with a larger --training.steps"
                )
        elif owned == "ours" and not t.overwrite:
            if has_checkpoint and run.finished():
                hint = (
                    f"it is finished ({run.checkpoint_step()} steps); to train longer, resume "
                    "it with --training.resume true and a larger --training.steps"
                )
            elif has_checkpoint:
                hint = "continue it with --training.resume true"
            else:
                hint = (
                    "it stopped before its first checkpoint, so start it again with "
                    "--training.overwrite true"
                )
            raise CodebookError(
                f"{self.run_dir} already holds a run: {hint}, or choose another output_dir"
            )
        self.accelerator.wait_for_everyone()

    def _param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        t = self.config.training
        if self.cbm is None:
            return [
                {
                    "params": [p for p in model.parameters() if p.requires_grad],
                    "weight_decay": t.weight_decay,
                }
            ]
        groups = [{"params": list(self.cbm.codebooks.parameters()), "weight_decay": 0.0}]
        if t.mode == "finetune":
            groups.append(
                {
                    "params": [p for p in model.parameters() if p.requires_grad],
                    "lr": t.lr * t.model_lr_factor,
                    "weight_decay": t.weight_decay,
                }
            )
        return groups

    # -------------------------------------------------------------------- the run
    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            self._close()

    def _close(self) -> None:
        """Release the wrapped model, then end the trackers and the process group. A DDP
        replica that outlives its group is torn down during interpreter exit, when gloo's
        threads can abort the process (SIGABRT) after a run that succeeded."""
        self.module = self.accelerator.unwrap_model(self.module)
        self.accelerator.free_memory()
        gc.collect()
        self.accelerator.end_training()

    def _run(self) -> TrainResult:
        t = self.config.training
        self.session_start = time.monotonic()
        if t.resume:
            self._resume()
        else:
            self._start()
        if t.log_to:
            self.accelerator.init_trackers(
                TRACKER_DIR, config=flatten(self.config.to_dict(), sep="/")
            )
        last_eval: EvalMetrics | None = None
        if self.step == 0:
            last_eval = self._evaluate()  # where training starts from
        elif self.step == t.steps:  # stopped after its last checkpoint, before final/
            logged = any(r["step"] == self.step for r in RunDir(self.run_dir).val_rows())
            last_eval = self._evaluate(log=not logged)
        end = t.stop_at or t.steps
        progress = self._progress(end)
        self.module.train()
        self.last_row = (time.monotonic(), self.step)
        while self.step < end:
            lm_loss, cb_loss = self._train_step()
            self.step += 1
            progress.update(1)
            progress.set_postfix(lm=f"{lm_loss:.3f}", cb=f"{cb_loss:.3f}", refresh=False)
            if self.step % max(1, min(t.eval_every, 10)) == 0 or self.step == t.steps:
                self._log_train(lm_loss, cb_loss)
            if self.step % t.eval_every == 0 or self.step == t.steps:
                last_eval = self._evaluate()
            if self.step % t.save_every == 0 or self.step in (t.steps, t.stop_at):
                self._save_checkpoint()
        progress.close()
        if self.step < t.steps:
            logger.info(
                "stopped at step %d of %d; continue with --training.resume true", self.step, t.steps
            )
            return TrainResult(self.run_dir, None, last_eval, self.step)
        assert last_eval is not None  # the last step is always evaluated
        model_dir = self._finish(last_eval)
        return TrainResult(self.run_dir, model_dir, last_eval, self.step)

    def _start(self) -> None:
        t = self.config.training
        if self.main:
            if t.overwrite:  # everything the previous run wrote (and it holds nothing else)
                clear_own(self.run_dir, RUN)
            mark(self.run_dir, RUN)
            write_run_config(self.run_dir, self.config)
            write_text(self.run_dir / METRICS_FILE, "")
        if t.kmeans_init and self.cbm is not None:
            per_batch = t.batch_size * self.config.data.block_size
            batches = [
                self.plan.peek(i).to(self.device)
                for i in range(max(1, math.ceil(t.kmeans_tokens / per_batch)))
            ]
            self.cbm.init_kmeans(batches, seed=t.seed)
        self.accelerator.wait_for_everyone()

    def _resume(self) -> None:
        checkpoint, state = self._checkpoint  # verified in _check_run_dir
        try:
            ckpt.load_checkpoint(checkpoint, self._checkpointed(), self.accelerator.process_index)
        except ckpt.load_errors() as error:
            raise CodebookError(
                f"the checkpoint in {checkpoint} could not be loaded ({str(error).splitlines()[0]})"
                "; nothing was changed"
            ) from error
        self.step, self.micro_batches = int(state["step"]), int(state["micro_batches"])
        self.elapsed_before = state["elapsed_s"]
        self.started = state.get("started") or self.started
        self._extend_schedule(int(state["config"]["training"]["steps"]))
        if self.main:  # drop what the interrupted session logged after its checkpoint
            rows = RunDir(self.run_dir).metrics()
            kept = [r for r in rows if r["step"] <= self.step]
            write_text(self.run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))
            write_run_config(self.run_dir, self.config)
        self.accelerator.wait_for_everyone()

    def _extend_schedule(self, saved_steps: int) -> None:
        """A run resumed with more steps than it was saved with: the rebuilt schedule (for the
        new total) sets the learning rate from this step on."""
        t = self.config.training
        if saved_steps == t.steps:
            return
        scheduler = self.scheduler
        for group, base, factor in zip(
            self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(scheduler.last_epoch)
        if t.schedule != "constant":
            logger.warning(
                "the %s learning-rate schedule is rebuilt for %d steps instead of %d: it "
                "continues from its value at step %d of the longer schedule",
                t.schedule,
                t.steps,
                saved_steps,
                self.step,
            )

    def _train_step(self) -> tuple[float, float]:
        t = self.config.training
        totals = torch.zeros(2, device=self.device)
        for micro in range(t.grad_accum):
            batch = self.plan(self.micro_batches).to(self.device)
            self.micro_batches += 1
            last = micro == t.grad_accum - 1
            with self.accelerator.no_sync(self.module) if not last else contextlib.nullcontext():
                out = self.module(input_ids=batch, labels=batch, use_cache=False)
                cb_loss = (
                    self.cbm.codebook_loss() if self.cbm is not None else out.loss.new_zeros(())
                )
                self.accelerator.backward((out.loss + cb_loss) / t.grad_accum)
            totals += torch.stack([out.loss.detach(), cb_loss.detach()]) / t.grad_accum
        if t.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.module.parameters(), t.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals = self.accelerator.reduce(totals, "mean")
        return float(totals[0]), float(totals[1])

    def _evaluate(self, log: bool = True) -> EvalMetrics:
        t = self.config.training
        module = self.accelerator.unwrap_model(self.module)
        metrics = evaluate(module, self.cbm, self.val_blocks, t.batch_size, self.device)
        if log:
            self._log({"split": "val", "step": self.step, **metrics.to_dict()})
        return metrics

    def _elapsed(self) -> float:
        """Wall seconds of the whole run: earlier sessions plus this one."""
        return self.elapsed_before + time.monotonic() - self.session_start

    def _log_train(self, lm_loss: float, cb_loss: float) -> None:
        now = time.monotonic()
        since, step = self.last_row
        tokens = (self.step - step) * self.tokens_per_step
        self.last_row = (now, self.step)
        self._log(
            {
                "split": "train",
                "step": self.step,
                "lm_loss": lm_loss,
                "codebook_loss": cb_loss,
                "lr": self.scheduler.get_last_lr()[0],
                "time": round(time.time(), 3),
                "elapsed_s": round(self._elapsed(), 3),
                "tokens_per_s": round(tokens / max(now - since, 1e-9), 1),
            }
        )

    def _log(self, row: dict[str, Any]) -> None:
        if self.main:
            with open(self.run_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.config.training.log_to:
            self.accelerator.log(flatten(row, sep="/"), step=self.step)

    def _save_checkpoint(self) -> None:
        tmp = self.run_dir / CHECKPOINT_TMP
        if self.upkeep is not None:
            self.upkeep.synchronize()
        if self.main and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        tmp.mkdir(parents=True, exist_ok=True)
        ckpt.write_random_states(tmp, self.accelerator.process_index)  # one file per process
        if self.main:
            ckpt.write_shared(tmp, self._checkpointed())
            ckpt.write_state(
                tmp,
                self.step,
                self.micro_batches,
                self.config,
                self.accelerator.num_processes,
                elapsed_s=round(self._elapsed(), 3),
                started=self.started,
            )
        self.accelerator.wait_for_everyone()
        if self.main:  # the manifest is written last, when every process has written its files
            ckpt.write_checkpoint_checksums(tmp)
            swap_directory(tmp, self.run_dir / CHECKPOINT_DIR)
        self.accelerator.wait_for_everyone()

    def _checkpointed(self) -> ckpt.Checkpointed:
        """What a checkpoint saves and restores besides the trainer's position."""
        return ckpt.Checkpointed(
            module=self.accelerator.unwrap_model(self.module),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            upkeep=self.upkeep,
            scaler=self.accelerator.scaler,
        )

    def _finish(self, metrics: EvalMetrics) -> Path:
        module = self.accelerator.unwrap_model(self.module)
        model_dir = self.run_dir / FINAL_DIR
        if is_distributed():
            self._write_replica_checksums(module)
        counts = None
        if self.cbm is not None:
            counts = code_counts(
                self.cbm, self.val_blocks, self.config.training.batch_size, self.device
            )
        if self.main:
            if self.cbm is not None:
                self.cbm.save(model_dir, tokenizer=self.tokenizer)
            else:
                with atomic_directory(model_dir) as tmp:
                    module.save_pretrained(tmp)
                    self.tokenizer.save_pretrained(tmp)
                    write_model_checksums(tmp)
            plot_losses(RunDir(self.run_dir).metrics(), self.run_dir / PLOTS_DIR / LOSS_PLOT)
            if counts:
                plot_code_usage(counts, self.run_dir / PLOTS_DIR / CODE_USAGE_PLOT)
            write_json(self.run_dir / SUMMARY_FILE, self._summary(metrics))
        self.accelerator.wait_for_everyone()
        return model_dir

    def _summary(self, metrics: EvalMetrics) -> dict[str, Any]:
        """``summary.json``: the final evaluation, wall time and throughput of the run."""
        elapsed, tokens = self._elapsed(), self.step * self.tokens_per_step
        return {
            "mode": self.config.training.mode,
            "steps": self.step,
            "processes": self.accelerator.num_processes,
            "final": metrics.to_dict(),
            "elapsed_s": round(elapsed, 3),
            "tokens": tokens,
            "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1),
            "train_blocks": self.block_counts[0],
            "val_blocks": self.block_counts[1],
            "started": _timestamp(self.started),
            "finished": _timestamp(time.time()),
        }

    def _write_replica_checksums(self, module: nn.Module) -> None:
        """Each process records a digest of every parameter, so replicas can be compared."""
        digests = {
            name: hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for name, p in module.state_dict().items()
            if p.is_floating_point()
        }
        rank = self.accelerator.process_index
        write_json(self.run_dir / REPLICAS_DIR / REPLICA_FILE.format(rank=rank), digests)

    def _progress(self, end: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=end,
            initial=self.step,
            desc="training",
            unit="step",
            # None: shown only when stderr is a terminal
            disable=None if self.main and self.config.training.progress else True,
        )


def _scheduler(config: RunConfig, optimizer: torch.optim.Optimizer) -> Any:
    from transformers import get_scheduler

    t = config.training
    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[t.schedule]
    return get_scheduler(
        name, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.steps
    )


def _timestamp(unix_seconds: float) -> str:
    """ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(unix_seconds, timezone.utc).isoformat(timespec="seconds")

"""The training loop, on accelerate: devices, data parallelism, mixed precision, checkpoints.

One loop serves the three modes, so they see the same data in the same order for the same
number of steps. The objective is the LM loss plus the codebooks' own losses, both logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from codebook_features.configs import flatten, save_yaml, to_dict
from codebook_features.distributed import is_distributed
from codebook_features.errors import CodebookError
from codebook_features.files import swap_directory, write_json, write_text
from codebook_features.model import CodebookModel
from codebook_features.training import checkpoint as ckpt
from codebook_features.training.config import RunConfig
from codebook_features.training.data import BatchPlan, build_blocks, load_tokenizer
from codebook_features.training.evaluation import code_counts, evaluate
from codebook_features.training.plots import plot_code_usage, plot_losses

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
FINAL_DIR = "final"
PLOTS_DIR = "plots"
REPLICAS_DIR = "replicas"
RUN_FILES = (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    FINAL_DIR,
    PLOTS_DIR,
    REPLICAS_DIR,
    ckpt.CHECKPOINT,
    f".{ckpt.CHECKPOINT}.tmp",
    f".{ckpt.CHECKPOINT}.old",
)
"""What a run writes into its directory."""


@dataclass
class TrainResult:
    run_dir: Path
    """The run directory."""
    model_dir: Path | None
    """The trained model (``None`` when the session stopped early at ``stop_at``)."""
    metrics: dict[str, Any]
    """The last evaluation."""
    step: int
    """Steps done."""


def train(config: RunConfig) -> TrainResult:
    """Run (or continue) a training run; see :class:`RunConfig`."""
    return Trainer(config).run()


def load_model(config: RunConfig, tokenizer: Any) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = config.model
    kwargs = {"attn_implementation": spec.attn_implementation} if spec.attn_implementation else {}
    if spec.name_or_path:
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
        self.run_dir = Path(t.output_dir)
        self.accelerator = Accelerator(
            cpu=t.device == "cpu",
            mixed_precision=t.mixed_precision,
            log_with=t.log_to or None,
            project_dir=str(self.run_dir),
            # buffers hold per-process statistics: DDP must not overwrite them with rank 0's
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        )
        self.main = self.accelerator.is_main_process
        self._check_run_dir()
        set_seed(t.seed)
        self.tokenizer = load_tokenizer(config.model)
        model = load_model(config, self.tokenizer)
        self.cbm = CodebookModel(model, config.codebooks) if t.mode != "baseline" else None
        self.module: nn.Module = self.cbm if self.cbm is not None else model
        if t.mode == "codebooks":
            model.requires_grad_(False)
        train_blocks, val_blocks = build_blocks(config.data, self.tokenizer, t.seed)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self.plan = BatchPlan(train_blocks, t.batch_size, rank, world, t.seed)
        self.val_blocks = val_blocks[rank::world]
        self.optimizer = torch.optim.AdamW(self._param_groups(model), lr=t.lr)
        self.scheduler = _scheduler(config, self.optimizer)
        self.module, self.optimizer = self.accelerator.prepare(self.module, self.optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.upkeep = ckpt.CodebookUpkeep(self.cbm) if self.cbm is not None else None
        if self.upkeep is not None:
            self.accelerator.register_for_checkpointing(self.upkeep)
        self.device = self.accelerator.device
        self.step = 0
        self.micro_batches = 0

    # -------------------------------------------------------------------- set-up
    def _check_run_dir(self) -> None:
        t = self.config.training
        ckpt.recover(self.run_dir)
        has_checkpoint = (self.run_dir / ckpt.CHECKPOINT).exists()
        has_run = (self.run_dir / CONFIG_FILE).exists() or has_checkpoint
        if t.resume:
            _, state = ckpt.read_state(self.run_dir)
            ckpt.check_compatible(state, self.config, self.accelerator.num_processes, self.run_dir)
            if int(state["step"]) >= t.steps:
                raise CodebookError(
                    f"the run in {self.run_dir} is already finished ({state['step']} steps); "
                    "its model is in final/"
                )
        elif has_run and not t.overwrite:
            hint = (
                "continue it with --training.resume true"
                if has_checkpoint
                else "it stopped before its first checkpoint, so start it again with "
                "--training.overwrite true"
            )
            raise CodebookError(
                f"{self.run_dir} already holds a run: {hint}, or choose another output_dir"
            )
        elif self.run_dir.exists() and any(self.run_dir.iterdir()) and not has_run:
            raise CodebookError(
                f"{self.run_dir} is not empty and holds no run: choose another output_dir"
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
        t = self.config.training
        if t.resume:
            self._resume()
        else:
            self._start()
        if t.log_to:
            self.accelerator.init_trackers(
                "codebook-features", config=flatten(to_dict(self.config), sep="/")
            )
        last_eval: dict[str, Any] = {}
        if self.step == 0:
            last_eval = self._evaluate()  # where training starts from
        end = t.stop_at or t.steps
        progress = self._progress(end)
        self.module.train()
        while self.step < end:
            lm_loss, cb_loss = self._train_step()
            self.step += 1
            progress.update(1)
            progress.set_postfix(lm=f"{lm_loss:.3f}", cb=f"{cb_loss:.3f}", refresh=False)
            if self.step % max(1, min(t.eval_every, 10)) == 0 or self.step == t.steps:
                lr = self.scheduler.get_last_lr()[0]
                self._log(
                    {
                        "split": "train",
                        "step": self.step,
                        "lm_loss": lm_loss,
                        "codebook_loss": cb_loss,
                        "lr": lr,
                    }
                )
            if self.step % t.eval_every == 0 or self.step == t.steps:
                last_eval = self._evaluate()
            if self.step % t.save_every == 0 or self.step in (t.steps, t.stop_at):
                self._save_checkpoint()
        progress.close()
        if self.step < t.steps:
            logger.info(
                "stopped at step %d of %d; continue with --training.resume true", self.step, t.steps
            )
            self.accelerator.end_training()
            return TrainResult(self.run_dir, None, last_eval, self.step)
        model_dir = self._finish(last_eval)
        self.accelerator.end_training()
        return TrainResult(self.run_dir, model_dir, last_eval, self.step)

    def _start(self) -> None:
        t = self.config.training
        if self.main:
            if t.overwrite:  # everything the previous run wrote, and nothing else
                for name in RUN_FILES:
                    path = self.run_dir / name
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(self.config, self.run_dir / CONFIG_FILE)
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
        checkpoint, state = ckpt.read_state(self.run_dir)
        try:
            self.accelerator.load_state(str(checkpoint))
        except (
            OSError,
            RuntimeError,
            KeyError,
            ValueError,
            EOFError,
            pickle.UnpicklingError,
            SafetensorError,
        ) as error:
            raise CodebookError(
                f"the checkpoint in {checkpoint} could not be loaded ({str(error).splitlines()[0]})"
                "; nothing was changed"
            ) from error
        self.step, self.micro_batches = int(state["step"]), int(state["micro_batches"])
        if self.main:  # drop what the interrupted session logged after its checkpoint
            rows = read_metrics(self.run_dir / METRICS_FILE)
            kept = [r for r in rows if r["step"] <= self.step]
            write_text(self.run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))
            save_yaml(self.config, self.run_dir / CONFIG_FILE)
        self.accelerator.wait_for_everyone()

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

    def _evaluate(self) -> dict[str, Any]:
        t = self.config.training
        module = self.accelerator.unwrap_model(self.module)
        metrics = evaluate(module, self.cbm, self.val_blocks, t.batch_size, self.device)
        self._log({"split": "val", "step": self.step, **metrics})
        return metrics

    def _log(self, row: dict[str, Any]) -> None:
        if self.main:
            with open(self.run_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.config.training.log_to:
            self.accelerator.log(flatten(row, sep="/"), step=self.step)

    def _save_checkpoint(self) -> None:
        tmp = self.run_dir / f".{ckpt.CHECKPOINT}.tmp"
        if self.upkeep is not None:
            self.upkeep.synchronize()
        if self.main and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp), safe_serialization=True)
        if self.main:
            ckpt.write_state(
                tmp, self.step, self.micro_batches, self.config, self.accelerator.num_processes
            )
            swap_directory(tmp, self.run_dir / ckpt.CHECKPOINT)
        self.accelerator.wait_for_everyone()

    def _finish(self, metrics: dict[str, Any]) -> Path:
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
                from codebook_features.files import atomic_directory

                with atomic_directory(model_dir) as tmp:
                    module.save_pretrained(tmp)
                    self.tokenizer.save_pretrained(tmp)
            rows = read_metrics(self.run_dir / METRICS_FILE)
            plot_losses(rows, self.run_dir / PLOTS_DIR / "loss.png")
            if counts:
                plot_code_usage(counts, self.run_dir / PLOTS_DIR / "code_usage.png")
            write_json(
                self.run_dir / SUMMARY_FILE,
                {
                    "mode": self.config.training.mode,
                    "steps": self.step,
                    "processes": self.accelerator.num_processes,
                    "final": metrics,
                },
            )
        self.accelerator.wait_for_everyone()
        return model_dir

    def _write_replica_checksums(self, module: nn.Module) -> None:
        """Each process records a digest of every parameter, so replicas can be compared."""
        digests = {
            name: hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for name, p in module.state_dict().items()
            if p.is_floating_point()
        }
        rank = self.accelerator.process_index
        write_json(self.run_dir / REPLICAS_DIR / f"rank{rank}.json", digests)

    def _progress(self, end: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=end,
            initial=self.step,
            desc="training",
            unit="step",
            disable=not (self.main and self.config.training.progress),
        )


def _scheduler(config: RunConfig, optimizer: torch.optim.Optimizer) -> Any:
    from transformers import get_scheduler

    t = config.training
    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[t.schedule]
    return get_scheduler(
        name, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.steps
    )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics file; a line cut short by a crash is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows

"""Text generation with and without steering, reproducible sample by sample.

Every sample has its own seed, derived from the settings' seed, the prompt's index and the
sample's index (:func:`sample_seed`). Sampling draws from a random generator of that seed alone
(Gumbel-max over the same filtered distribution HF's sampling uses), so

- the unsteered and the steered run of a sample use the same random numbers (common random
  numbers: differences come from the steering, not from the dice),
- a rerun gives the same text, and the text of a sample does not depend on the batch size or on
  how many other samples or prompts are generated.

To keep HF's generation loop (KV cache, stopping, logits processors from the model's generation
config) the draw happens in a logits processor that leaves only the drawn token, and HF then
decodes greedily. Temperature 0 is plain greedy decoding.

Each prompt is generated on its own, its samples batched (``batch_size`` rows per call), so
there is never padding: positions ``new`` of interventions (the tokens after the prompt) are the
same for every row. Generation stops at the tokenizer's EOS token when it has one (the EOS then
ends ``token_ids``); a tokenizer without one always gives ``max_new_tokens`` tokens, even when the
model's own config names an EOS. The model should be in eval mode (dropout off).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ConfigDict, Field
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from codebook_features.attach.interventions import Ablate, Force, applied
from codebook_features.errors import CodebookError
from codebook_features.settings.base import NonNegativeInt, Record
from codebook_features.steering.batches import check_batch_size
from codebook_features.steering.config import GenerationSettings

__all__ = [
    "Generation",
    "GenerationSettings",
    "SeededSampler",
    "Steering",
    "SteeringResult",
    "describe",
    "generate_texts",
    "sample_seed",
    "steer",
]

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel

Steering = Force | Ablate | AbstractContextManager
"""An intervention spec, or a context manager that steers while entered (e.g.
:class:`~codebook_features.steering.actadd.AddActivation`)."""


class Generation(Record):
    """One sampled continuation of one prompt (a line of the evaluation's generation files)."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    prompt_index: NonNegativeInt
    sample: NonNegativeInt
    seed: NonNegativeInt
    """This sample's own seed (see :func:`sample_seed`)."""
    text: str
    """The continuation alone, decoded without special tokens."""
    token_ids: tuple[NonNegativeInt, ...] = Field(repr=False)
    """The continuation's tokens (ending with the EOS token when generation stopped there)."""


@dataclass(frozen=True)
class SteeringResult:
    """The same samples of one prompt, without and with steering."""

    prompt: str
    unsteered: list[str]
    steered: list[str]
    seeds: list[int]
    settings: GenerationSettings
    interventions: list[dict[str, Any]]
    """What steered, as JSON-ready descriptions (a spec's ``to_dict()``)."""
    unsteered_generations: list[Generation] = field(default_factory=list, repr=False)
    steered_generations: list[Generation] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "settings": self.settings.to_dict(),
            "interventions": self.interventions,
            "seeds": self.seeds,
            "unsteered": self.unsteered,
            "steered": self.steered,
        }


def sample_seed(seed: int, prompt_index: int, sample: int) -> int:
    """The seed of one sample: a hash of the three numbers, so samples are independent."""
    digest = hashlib.sha256(f"{seed}/{prompt_index}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def describe(steering: Iterable[Steering]) -> list[dict[str, Any]]:
    """JSON-ready descriptions of specs and steering context managers: their ``to_dict()``,
    or that of the specs they apply (``cbm.force_codes(...)``, ``cbm.intervene(...)``)."""
    found: list[dict[str, Any]] = []
    for item in steering:
        if callable(getattr(item, "to_dict", None)):
            found.append(item.to_dict())  # type: ignore[union-attr]
        elif hasattr(item, "spec"):
            found.append(item.spec.to_dict())
        elif hasattr(item, "specs"):
            found += [spec.to_dict() for spec in item.specs]
        else:
            found.append({"kind": type(item).__name__})
    return found


class SeededSampler(LogitsProcessor):
    """Draws each row's next token with that row's own random generator and leaves only it.

    Temperature, top-k and top-p filter the logits as in HF's sampling; the draw is Gumbel-max
    (argmax of logits plus Gumbel noise), an exact sample of the softmax. The noise is drawn on
    the CPU, so a seed gives the same numbers on every device.
    """

    def __init__(self, seeds: Sequence[int], settings: GenerationSettings) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = settings.temperature
        self.warpers: list[LogitsProcessor] = []
        if settings.top_k:
            self.warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(settings.top_p))

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if scores.shape[0] != len(self.generators):
            raise CodebookError(
                f"the sampler has {len(self.generators)} seeds for {scores.shape[0]} rows"
            )
        logits, scores = scores, scores.double()
        if self.temperature != 1.0:  # from the best logit down: a tiny temperature cannot overflow
            scores = (scores - scores.amax(-1, keepdim=True)) / self.temperature
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        uniform = torch.stack(
            [
                torch.rand(scores.shape[-1], generator=g, dtype=torch.float64)
                for g in self.generators
            ]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
        chosen = (scores + gumbel.to(scores.device)).argmax(-1, keepdim=True)
        only = torch.full_like(logits, -math.inf)
        return only.scatter_(-1, chosen, 0.0)


def generate_texts(
    cbm: CodebookModel,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    interventions: Iterable[Steering] = (),
    batch_size: int = 8,
    time_limit: float | None = None,
) -> list[Generation]:
    """``settings.samples`` continuations of every prompt, prompt by prompt, each sample from
    its own seed, with ``interventions`` (specs or context managers) entered, in order, around
    every generate call (so ``new`` positions start after each prompt); a context manager must
    therefore be one that can be entered again (as the ones of this library can). With
    ``time_limit`` (seconds), generation stops when it has run that long in all (every batch
    after that makes one token), so texts may come back shorter (see
    :attr:`Generation.token_ids`)."""
    if isinstance(prompts, str):
        raise CodebookError("prompts must be a list of strings, not one string")
    check_batch_size(batch_size)
    steering = [applied(cbm, s) if isinstance(s, (Force, Ablate)) else s for s in interventions]
    for item in steering:
        if not (hasattr(item, "__enter__") and hasattr(item, "__exit__")):
            raise CodebookError(f"not a spec or a context manager: {item!r}")
    device = next(cbm.parameters()).device
    eos = tokenizer.eos_token_id
    pad = next((t for t in (tokenizer.pad_token_id, eos) if t is not None), 0)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    results = []
    for p, prompt in enumerate(prompts):
        ids = _encode(tokenizer, prompt, cbm, settings).to(device)
        seeds = [sample_seed(settings.seed, p, s) for s in range(settings.samples)]
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start : start + batch_size]
            rows = ids.expand(len(chunk), -1)
            processors = LogitsProcessorList(
                [] if settings.greedy else [SeededSampler(chunk, settings)]
            )
            with torch.no_grad(), ExitStack() as stack:
                for item in steering:
                    stack.enter_context(item)
                out = cbm.generate(
                    input_ids=rows,
                    attention_mask=torch.ones_like(rows),
                    max_new_tokens=settings.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    logits_processor=processors,
                    eos_token_id=eos,
                    pad_token_id=pad,
                    use_cache=True,
                    max_time=None if deadline is None else max(deadline - time.monotonic(), 0.0),
                )
            for i, row in enumerate(out[:, ids.shape[1] :].tolist()):
                if eos is not None and eos in row:
                    row = row[: row.index(eos) + 1]
                text = tokenizer.decode(row, skip_special_tokens=True)
                results.append(
                    Generation(
                        prompt=prompt,
                        prompt_index=p,
                        sample=start + i,
                        seed=chunk[i],
                        text=text,
                        token_ids=tuple(row),
                    )
                )
    return results


def steer(
    cbm: CodebookModel,
    tokenizer: Any,
    prompt: str,
    interventions: Sequence[Steering],
    settings: GenerationSettings,
    *,
    batch_size: int = 8,
    time_limit: float | None = None,
) -> SteeringResult:
    """The same samples of ``prompt`` without and with ``interventions``, seed for seed (with
    ``time_limit``, half of it for each; see :func:`generate_texts`)."""
    if isinstance(interventions, (Force, Ablate)) or hasattr(interventions, "__enter__"):
        interventions = [interventions]  # type: ignore[list-item]
    interventions = list(interventions)
    if not interventions:
        raise CodebookError("steer: nothing to steer with; give at least one intervention")
    each = None if time_limit is None else time_limit / 2
    steered = generate_texts(
        cbm,
        tokenizer,
        [prompt],
        settings,
        interventions=interventions,
        batch_size=batch_size,
        time_limit=each,
    )  # first, so a spec that does not fit the model is refused before any generation
    plain = generate_texts(
        cbm, tokenizer, [prompt], settings, batch_size=batch_size, time_limit=each
    )
    return SteeringResult(
        prompt=prompt,
        unsteered=[g.text for g in plain],
        steered=[g.text for g in steered],
        seeds=[g.seed for g in plain],
        settings=settings,
        interventions=describe(interventions),
        unsteered_generations=plain,
        steered_generations=steered,
    )


def _encode(
    tokenizer: Any, prompt: str, cbm: CodebookModel, settings: GenerationSettings
) -> Tensor:
    """The prompt's token ids ``(1, T)``, refused when empty or too long for the model."""
    from codebook_features.store.model_loading import context_length

    if not isinstance(prompt, str):
        raise CodebookError(f"a prompt must be a string, got {prompt!r}")
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise CodebookError(f"the prompt {prompt!r} has no tokens: give some text to continue")
    context = context_length(cbm.model.config)
    if context is not None and ids.shape[1] + settings.max_new_tokens > context:
        raise CodebookError(
            f"a prompt of {ids.shape[1]} tokens plus max_new_tokens {settings.max_new_tokens} "
            f"is longer than the model's context ({context} tokens): shorten one of them"
        )
    return ids

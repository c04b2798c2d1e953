"""How well a model has learned its FSM.

- state accuracy: the share of valid transitions in sequences sampled from BOS at temperature 1
  (a malformed state makes both its transitions invalid),
- first-transition accuracy: for every state s, the overlap between the model's num_edges most
  likely next states after ``BOS s`` and the true out-neighbours of s, averaged over states,
- LM loss and token accuracy on the fixed validation set.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from codebook_features.demos.fsm.machine import FSM
from codebook_features.demos.fsm.results import FSMMetrics
from codebook_features.training.evaluation import lm_sums

ROWS_PER_PASS = 2048
"""Rows per forward pass of the probability helpers (bounds memory)."""


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample_sequences(
    model: Any, fsm: FSM, num_samples: int, num_states: int, seed: int, batch_size: int = 256
) -> np.ndarray:
    """``(num_samples, 1 + digits * num_states)`` sequences sampled from BOS (seeded)."""
    device = _device(model)
    length = fsm.digits * num_states
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            prompt = torch.full((count, 1), fsm.bos, dtype=torch.long, device=device)
            generated = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=length,
                min_new_tokens=length,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                pad_token_id=fsm.bos,
                eos_token_id=None,
            )
            out.append(generated.cpu().numpy())
    return np.concatenate(out)


def state_accuracy(fsm: FSM, sequences: np.ndarray) -> float:
    """Share of valid transitions between consecutive states of the sequences."""
    valid = total = 0
    for tokens in sequences:
        states = fsm.parse(tokens)
        for a, b in itertools.pairwise(states):
            total += 1
            valid += a is not None and b is not None and fsm.is_edge(a, b)
    return valid / max(total, 1)


@torch.no_grad()
def next_token_probs(model: Any, sequences: Tensor, chunk: int = ROWS_PER_PASS) -> Tensor:
    """``(rows, vocab)`` next-token distribution after each sequence, in chunks of rows."""
    parts = []
    for start in range(0, len(sequences), chunk):
        logits = model(input_ids=sequences[start : start + chunk], use_cache=False).logits
        parts.append(logits[:, -1].double().softmax(-1))
    return torch.cat(parts)


@torch.no_grad()
def next_state_probs(
    model: Any,
    fsm: FSM,
    prefixes: Tensor,
    first: Tensor | None = None,
    chunk: int = ROWS_PER_PASS,
) -> Tensor:
    """``(B, num_states)`` probability of each next state after each prefix: the product of the
    chained next-digit distributions, each taken given that a digit comes (BOS excluded).
    ``first`` may give the prefixes' next-token distribution, already computed."""
    batch = prefixes.shape[0]
    seqs, probs = prefixes, torch.ones(batch, 1, device=prefixes.device, dtype=torch.float64)
    digits = torch.arange(fsm.base, device=prefixes.device)
    for depth in range(fsm.digits):
        step = first if depth == 0 and first is not None else next_token_probs(model, seqs, chunk)
        step = step[:, : fsm.base]
        step = step / step.sum(-1, keepdim=True).clamp_min(1e-300)
        probs = (probs.reshape(-1, 1) * step.to(probs.device)).reshape(batch, -1)
        if depth + 1 < fsm.digits:
            seqs = torch.cat(
                [seqs.repeat_interleave(fsm.base, 0), digits.repeat(len(seqs)).unsqueeze(1)], dim=1
            )
    return probs[:, : fsm.num_states]


def first_transition_accuracy(model: Any, fsm: FSM) -> float:
    device = _device(model)
    prefixes = torch.tensor(fsm.to_tokens(np.arange(fsm.num_states)[:, None]), device=device)
    probs = next_state_probs(model, fsm, prefixes)
    top = probs.topk(fsm.num_edges, dim=-1).indices.cpu().numpy()
    overlap = [len(set(top[s]) & set(fsm.edges[s])) / fsm.num_edges for s in range(fsm.num_states)]
    return float(np.mean(overlap))


def evaluate_model(
    model: Any,
    fsm: FSM,
    validation: np.ndarray,
    num_samples: int = 256,
    seed: int = 0,
    batch_size: int = 64,
) -> FSMMetrics:
    """Loss and token accuracy on ``validation``, state accuracy of ``num_samples`` sampled
    sequences (seeded) and first-transition accuracy."""
    was_training = model.training
    model.eval()
    try:
        device = _device(model)
        sums = lm_sums(model, torch.as_tensor(validation), batch_size, device)
        states_per_sequence = (validation.shape[1] - 1) // fsm.digits
        sequences = sample_sequences(model, fsm, num_samples, states_per_sequence, seed)
        return FSMMetrics(
            loss=float(sums[0] / sums[1]),
            token_accuracy=float(sums[2] / sums[1]),
            state_accuracy=state_accuracy(fsm, sequences),
            first_transition_accuracy=first_transition_accuracy(model, fsm),
        )
    finally:
        model.train(was_training)

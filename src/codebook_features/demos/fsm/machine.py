"""The finite state machine of the TokFSM experiment, and its rollouts as token sequences.

Each of ``num_states`` states has ``num_edges`` distinct out-neighbours (self-loops allowed),
each taken with equal probability. A rollout is written digit by digit: every state is
``digits`` base-``base`` digits (most significant first), after one beginning-of-sequence token.
Token ``d`` (for ``d < base``) is the digit ``d``; token ``base`` is the BOS token.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codebook_features.errors import CodebookError
from codebook_features.persist.files import write_json


@dataclass(frozen=True)
class FSM:
    num_states: int
    num_edges: int
    base: int
    seed: int
    edges: np.ndarray
    """``(num_states, num_edges)`` out-neighbours of every state, sorted."""

    @classmethod
    def generate(cls, num_states: int, num_edges: int, base: int = 10, seed: int = 0) -> FSM:
        if num_states < 2 or num_edges < 1 or base < 2:
            raise CodebookError("an FSM needs >= 2 states, >= 1 edge per state and base >= 2")
        if num_edges > num_states:
            raise CodebookError(f"num_edges={num_edges} exceeds num_states={num_states}")
        rng = np.random.default_rng(seed)
        edges = np.stack(
            [
                np.sort(rng.choice(num_states, size=num_edges, replace=False))
                for _ in range(num_states)
            ]
        )
        return cls(num_states, num_edges, base, seed, edges)

    @property
    def digits(self) -> int:
        """Digits per state."""
        return max(1, math.ceil(math.log(self.num_states, self.base) - 1e-12))

    @property
    def bos(self) -> int:
        return self.base

    @property
    def vocab_size(self) -> int:
        return self.base + 1

    def transition_matrix(self) -> np.ndarray:
        """``(N, N)``: probability of moving from row state to column state."""
        matrix = np.zeros((self.num_states, self.num_states))
        for state, outs in enumerate(self.edges):
            matrix[state, outs] += 1.0 / self.num_edges
        return matrix

    def is_edge(self, a: int, b: int) -> bool:
        return 0 <= a < self.num_states and 0 <= b < self.num_states and b in self.edges[a]

    def state_digits(self, states: np.ndarray) -> np.ndarray:
        """``(..., digits)`` digit tokens of ``states``."""
        powers = self.base ** np.arange(self.digits - 1, -1, -1)
        return (np.asarray(states)[..., None] // powers) % self.base

    def rollouts(self, count: int, num_states: int, seed: int) -> np.ndarray:
        """``(count, num_states)`` random walks from uniformly random start states."""
        rng = np.random.default_rng(seed)
        walk = np.empty((count, num_states), dtype=np.int64)
        walk[:, 0] = rng.integers(self.num_states, size=count)
        for t in range(1, num_states):
            walk[:, t] = self.edges[walk[:, t - 1], rng.integers(self.num_edges, size=count)]
        return walk

    def to_tokens(self, walks: np.ndarray) -> np.ndarray:
        """``(count, 1 + digits * states)`` token ids: BOS, then every state's digits."""
        body = self.state_digits(walks).reshape(len(walks), -1)
        return np.concatenate([np.full((len(walks), 1), self.bos), body], axis=1)

    def parse(self, tokens: np.ndarray | list[int]) -> list[int | None]:
        """States of a token sequence after its BOS; ``None`` for a malformed state (a BOS
        inside, or a number >= num_states). A trailing incomplete state is dropped."""
        body = list(tokens)
        if body and body[0] == self.bos:
            body = body[1:]
        states: list[int | None] = []
        for i in range(0, len(body) - self.digits + 1, self.digits):
            chunk = body[i : i + self.digits]
            value = 0
            for d in chunk:
                value = value * self.base + int(d) if 0 <= d < self.base else -1_000_000
            states.append(value if 0 <= value < self.num_states else None)
        return states

    def save(self, path: str | os.PathLike) -> None:
        write_json(
            path,
            {
                "num_states": self.num_states,
                "num_edges": self.num_edges,
                "base": self.base,
                "seed": self.seed,
                "digits": self.digits,
                "edges": {str(s): self.edges[s].tolist() for s in range(self.num_states)},
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> FSM:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            edges = np.array([data["edges"][str(s)] for s in range(data["num_states"])])
            fsm = cls(
                int(data["num_states"]),
                int(data["num_edges"]),
                int(data["base"]),
                int(data["seed"]),
                edges,
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CodebookError(f"could not read the FSM in {path}: {error}") from error
        if (
            edges.shape != (fsm.num_states, fsm.num_edges)
            or edges.min() < 0
            or (edges.max() >= fsm.num_states)
        ):
            raise CodebookError(f"the FSM in {path} has malformed edges")
        return fsm

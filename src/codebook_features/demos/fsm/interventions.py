"""State interventions: make the network act as if it were in another state.

For random transitions of the validation sequences (a prefix ending on state a), the codes of
chosen sites at the prefix's last token are replaced by the codes of a target state b. The
model's next-token distribution (over the whole vocabulary: the first digit of the next state)
is then compared with b's true one by the Jensen-Shannon divergence, averaged over transitions
and divided by the same average without intervention: 1 means no effect, 0 means the model
now behaves exactly as in state b. (Dividing per transition instead is unstable: a and b often
have similar next digits.) The same is reported for the whole next state (all its digits,
chained; the intervention stays at the prefix's last token), which is harder to move: the model
also reads state a from the earlier digit(s).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from codebook_features.attach.interventions import Force
from codebook_features.attach.model import CodebookModel
from codebook_features.demos.fsm.evaluation import ROWS_PER_PASS, next_state_probs, next_token_probs
from codebook_features.demos.fsm.machine import FSM
from codebook_features.demos.fsm.results import SwapResults, SwapScores
from codebook_features.errors import CodebookError


def jensen_shannon(p: Tensor, q: Tensor) -> Tensor:
    """Row-wise JSD in bits (between 0 and 1) of two ``(..., n)`` distributions."""
    m = 0.5 * (p + q)

    def kl(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(
            a > 0, a * (a.clamp_min(1e-300) / b.clamp_min(1e-300)).log2(), torch.zeros_like(a)
        ).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def state_codes_force(site: str, codes: Tensor, position: int) -> Force:
    """At token ``position``, give row ``i`` of a batch the codes ``codes[i]``
    (``(rows, groups, slots)``, ``-1`` where a group has none: it keeps its own) in every slot;
    a batch may repeat each row, as in chained next-state probabilities. Mode ``all`` repeats a
    group's codes over its slots: the same as slot-by-slot replacement when every slot has a
    code (the state codes are the k codes seen most, so they do unless a state was rare)."""
    rows = [
        {g: [c for c in slots if c >= 0] for g, slots in enumerate(row) if max(slots) >= 0}
        for row in codes.tolist()
    ]
    return Force(site, rows=rows, mode="all", positions=[position])


def components(cbm: CodebookModel) -> dict[str, list[str]]:
    """The groups of sites whose state codes are swapped together."""
    mlp = [n for n in cbm.sites if n.endswith(".mlp")]
    attention = [n for n in cbm.sites if n.endswith(".attn_heads") or n.endswith(".attn")]
    result: dict[str, list[str]] = {}
    for name in mlp:
        result[f"MLP layer {cbm.sites[name].layer}"] = [name]
    if attention:
        result["all attention"] = attention
    if mlp:
        result["all MLP"] = mlp
    result["all"] = list(cbm.sites)
    return result


@torch.no_grad()
def state_swaps(
    cbm: CodebookModel,
    fsm: FSM,
    tokens: Tensor,
    codes_by_state: dict[str, Tensor],
    num_transitions: int = 500,
    seed: int = 0,
) -> SwapResults:
    """Per component: normalised JSD of the next token and of the next state, and the share of
    the model's top next states that are the target's out-neighbours."""
    rng = np.random.default_rng(seed)
    true = torch.tensor(fsm.transition_matrix())
    seqs = tokens.tolist()
    states = [fsm.parse(s) for s in seqs]
    if min(len(s) for s in states) < 3:
        raise CodebookError("state swaps need sequences of at least 3 states")
    picks = []
    for _ in range(100 * num_transitions):  # bounded: some machines have few valid swaps
        if len(picks) == num_transitions:
            break
        i = int(rng.integers(len(seqs)))
        j = int(rng.integers(1, len(states[i]) - 1))
        a, b = states[i][j], int(rng.integers(fsm.num_states))
        if a is None or b == a or np.array_equal(fsm.edges[a], fsm.edges[b]):
            continue
        if any((codes[b] < 0).all() for codes in codes_by_state.values()):
            continue  # no codes seen for b
        picks.append((i, j, a, b))
    if not picks:
        raise CodebookError(
            "no transition can be swapped: every state has the same out-edges, or no codes "
            "were seen for the other states"
        )
    by_length: dict[int, list[tuple[int, int, int, int]]] = {}
    for pick in picks:
        by_length.setdefault((pick[1] + 1) * fsm.digits + 1, []).append(pick)

    cbm.eval()
    device = next(cbm.parameters()).device
    plans = {"none": [], **components(cbm)}
    scores: dict[str, dict[str, list[float]]] = {
        name: {"jsd": [], "state_jsd": [], "overlap": []} for name in plans
    }
    # b's true next-token distribution over the whole vocabulary (no mass on BOS)
    first_digit = torch.zeros(fsm.num_states, fsm.vocab_size, dtype=torch.float64)
    first_digit[
        torch.arange(fsm.num_states),
        torch.as_tensor(fsm.state_digits(np.arange(fsm.num_states))[:, 0]),
    ] = 1.0
    true_token = true @ first_digit  # (N, vocab)
    # per-row codes must meet their own rows: keep each forward pass (the chained next-state
    # passes multiply the rows by base per digit) within one chunk of the probability helpers
    rows = max(1, ROWS_PER_PASS // fsm.base ** (fsm.digits - 1))
    chunk = rows * fsm.base ** (fsm.digits - 1)
    batches = [
        (length, group[start : start + rows])
        for length, group in sorted(by_length.items())
        for start in range(0, len(group), rows)
    ]
    for length, group in batches:
        prefixes = torch.tensor([seqs[i][:length] for i, _, _, _ in group], device=device)
        targets = torch.tensor([b for *_, b in group])
        q, q_token = true[targets], true_token[targets]
        for name, sites in plans.items():
            swaps = [
                state_codes_force(site, codes_by_state[site][targets], length - 1) for site in sites
            ]
            with cbm.intervene(swaps):
                p_token = next_token_probs(cbm, prefixes, chunk)[:, : fsm.vocab_size]
                p = next_state_probs(cbm, fsm, prefixes, first=p_token, chunk=chunk).cpu()
            p_token = p_token.cpu()
            p = p / p.sum(-1, keepdim=True).clamp_min(1e-300)
            scores[name]["jsd"] += jensen_shannon(p_token, q_token).tolist()
            scores[name]["state_jsd"] += jensen_shannon(p, q).tolist()
            top = p.topk(fsm.num_edges, dim=-1).indices.numpy()
            scores[name]["overlap"] += [
                len(set(top[r]) & set(fsm.edges[b])) / fsm.num_edges
                for r, (*_, b) in enumerate(group)
            ]
    none_token, none_state = np.mean(scores["none"]["jsd"]), np.mean(scores["none"]["state_jsd"])
    return SwapResults(
        components={
            name: SwapScores(
                normalized_jsd=float(np.mean(s["jsd"]) / none_token),
                next_state_normalized_jsd=float(np.mean(s["state_jsd"]) / none_state),
                jsd_bits=float(np.mean(s["jsd"])),
                target_edge_overlap=float(np.mean(s["overlap"])),
                sites=plans[name],
            )
            for name, s in scores.items()
        },
        transitions=len(picks),
    )

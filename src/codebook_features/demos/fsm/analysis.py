"""Codes vs states: which codes stand for the FSM's states, and how well neurons do instead.

The feature "the current state is s" holds on the token that completes state s (its last digit).
Every code of every site is scored as a classifier of every state feature; the best code per
state is the one with the highest F1. The neuron baseline thresholds the single best neuron of
any site at that code's recall. Purity: the share of a site's firings (at state tokens) that
fall on the state its code fires most for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from codebook_features.attach.model import CodebookModel
from codebook_features.demos.fsm.machine import FSM
from codebook_features.demos.fsm.results import (
    AnalysisSummary,
    SiteScores,
    StateAnalysis,
    StatePick,
)
from codebook_features.search.features import CodeFeatureCounts, code_feature_counts
from codebook_features.search.neurons import best_neurons
from codebook_features.search.records import CodeRecord, record_codes
from codebook_features.search.scores import f1


def state_labels(fsm: FSM, tokens: Tensor) -> Tensor:
    """``(sequences, length)``: the state completed at each token, ``-1`` elsewhere."""
    labels = torch.full(tokens.shape, -1, dtype=torch.long)
    for row, sequence in enumerate(tokens.tolist()):
        for j, state in enumerate(fsm.parse(sequence)):
            if state is not None:
                labels[row, (j + 1) * fsm.digits] = state
    return labels


def _purity(counts: CodeFeatureCounts) -> float:
    joint = counts.joint  # (G, C, F)
    total = float(joint.sum())
    return float(joint.max(-1).values.sum()) / total if total else float("nan")


def state_codes(counts: CodeFeatureCounts, slots: int) -> Tensor:
    """``(states, groups, slots)``: per state and group, the codes firing most often on that
    state's tokens (``-1`` where a state was never seen)."""
    joint = counts.joint.permute(2, 0, 1)  # (F, G, C)
    top = joint.topk(slots, dim=-1)
    return torch.where(top.values > 0, top.indices, torch.full_like(top.indices, -1))


def analyze(cbm: CodebookModel, fsm: FSM, tokens: Tensor, batch_size: int = 64) -> StateAnalysis:
    """Per-site and overall code-vs-state statistics, and the neuron baseline."""
    record = record_codes(cbm, tokens, batch_size=batch_size, activations=True)
    labels = state_labels(fsm, record.tokens).reshape(-1)
    sites: dict[str, SiteScores] = {}
    per_site_best = {}
    all_counts = {}
    for name in cbm.sites:
        counts = code_feature_counts(
            record.flat_ids(name), labels, cbm.codebook(name).config.num_codes, fsm.num_states
        )
        all_counts[name] = counts
        group, code, precision, recall = counts.best_codes()
        per_site_best[name] = (group, code, precision, recall)
        seen = counts.positives > 0
        sites[name] = SiteScores(
            mean_precision=float(precision[seen].mean()),
            mean_recall=float(recall[seen].mean()),
            purity=_purity(counts),
            states_with_a_precise_code=int(((precision > 0.9) & (recall > 0.5) & seen).sum()),
        )
    overall = _best_over_sites(per_site_best, all_counts, fsm, prefer="mlp")
    neuron_precision, neurons = best_neurons(
        _neurons(record), labels, torch.as_tensor(overall["recall"])
    )
    seen = np.array(overall["seen"])
    summary = AnalysisSummary(
        states=fsm.num_states,
        tokens=int(labels.numel()),
        state_tokens=int((labels >= 0).sum()),
        code_sites=overall["kind"],
        mean_code_precision=float(np.mean(np.array(overall["precision"])[seen])),
        mean_code_recall=float(np.mean(np.array(overall["recall"])[seen])),
        mean_neuron_precision=float(neuron_precision.numpy()[seen].mean()),
        per_state=[
            StatePick(
                state=s,
                site=overall["site"][s],
                group=overall["group"][s],
                id=overall["id"][s],
                precision=overall["precision"][s],
                recall=overall["recall"][s],
                neuron_precision=float(neuron_precision[s]),
                neuron=int(neurons[s]),
            )
            for s in range(fsm.num_states)
            if seen[s]
        ],
    )
    return StateAnalysis(
        summary=summary,
        sites=sites,
        state_codes={
            name: state_codes(counts, cbm.codebook(name).config.k)
            for name, counts in all_counts.items()
        },
    )


def _best_over_sites(
    best: dict[str, tuple], counts: dict[str, CodeFeatureCounts], fsm: FSM, prefer: str
) -> dict[str, Any]:
    """For every state, the best code over the sites of kind ``prefer`` (all sites when the
    model has none of that kind), by F1."""
    names = [n for n in best if n.endswith(f".{prefer}")] or list(best)
    result: dict[str, list] = {
        k: [] for k in ("site", "group", "id", "precision", "recall", "seen")
    }
    for state in range(fsm.num_states):

        def site_f1(name: str, state: int = state) -> float:
            return f1(float(best[name][2][state]), float(best[name][3][state]))

        site = max(names, key=site_f1)
        group, id_, precision, recall = (t[state] for t in best[site])
        result["site"].append(site)
        result["group"].append(int(group))
        result["id"].append(int(id_))
        result["precision"].append(float(precision))
        result["recall"].append(float(recall))
        result["seen"].append(bool(counts[site].positives[state] > 0))
    result["kind"] = prefer if any(n.endswith(f".{prefer}") for n in best) else "all"
    return result


def _neurons(record: CodeRecord) -> Tensor:
    """``(tokens, neurons)``: every site's input activations side by side."""
    parts = [acts.reshape(-1, acts.shape[-1]) for acts in record.activations.values()]
    return torch.cat(parts, dim=1)

"""What the TokFSM experiment measures, as typed records.

Evaluation, analysis and interventions return these; the pipeline stores them in
``results.json`` (``to_dict``) and reads them back (``from_dict``); the report and the command
line read their attributes. Field names are the JSON keys, in the order they are written.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, model_serializer, model_validator

from codebook_features.attach.code_ref import CodeRef
from codebook_features.settings.base import Record


class FSMMetrics(Record):
    """How well a model has learned its machine (see ``fsm.evaluation``)."""

    loss: float
    """LM loss on the validation sequences (nats per token)."""
    token_accuracy: float
    """Share of next tokens predicted right."""
    state_accuracy: float
    """Share of valid transitions in sequences sampled from BOS."""
    first_transition_accuracy: float
    """Overlap of the model's likeliest next states after ``BOS s`` with s's out-edges."""


class TrainedModel(FSMMetrics):
    """A model of the comparison: its metrics and its run directory."""

    run: str
    """The run directory, relative to the pipeline's output directory."""

    @classmethod
    def of(cls, metrics: FSMMetrics, run: str) -> TrainedModel:
        return cls(**dict(metrics), run=run)


class SiteScores(Record):
    """How well one site's best codes classify the current state."""

    mean_precision: float
    """Mean over seen states of the best code's precision."""
    mean_recall: float
    """... and of its recall."""
    purity: float
    """Share of the site's firings on state tokens that fall on each code's main state."""
    states_with_a_precise_code: int
    """States with a code of precision > 0.9 and recall > 0.5."""


class StatePick(Record):
    """The best code for one state, and the best neuron at that code's recall."""

    state: int
    site: str
    group: int
    id: int = Field(validation_alias=AliasChoices("id", "code"))
    """The code's id in its group's codebook (``code``, its earlier name, in older files)."""
    precision: float
    recall: float
    neuron_precision: float
    neuron: int

    @property
    def ref(self) -> CodeRef:
        """The code, by its one name (``SITE/GROUP/ID``)."""
        return CodeRef(self.site, self.group, self.id)


class AnalysisSummary(Record):
    """Codes vs neurons over all sites of the preferred kind."""

    states: int
    """States of the machine."""
    tokens: int
    """Tokens looked at."""
    state_tokens: int
    """Tokens that complete a state."""
    code_sites: str
    """The site kind the best codes were taken from (``mlp``, or ``all``)."""
    mean_code_precision: float
    mean_code_recall: float
    mean_neuron_precision: float
    per_state: list[StatePick] = Field(default_factory=list)
    """One row per state that occurs."""


class StateAnalysis(Record):
    """The result of ``fsm.analysis.analyze``."""

    summary: AnalysisSummary
    sites: dict[str, SiteScores]
    state_codes: dict[str, Any] = Field(default_factory=dict, exclude=True)
    """Per site, ``(states, groups, k)`` tensors of the codes firing most on each state (``-1``:
    none); what the interventions swap in. Not written to JSON."""


class ModelAnalysis(Record):
    """The analysis of one model, as the pipeline stores it."""

    model: str
    """The analysed model (a name of the comparison)."""
    summary: AnalysisSummary
    sites: dict[str, SiteScores]


class SwapScores(Record):
    """The effect of swapping state codes at one component (group of sites)."""

    normalized_jsd: float
    """Next-token JSD to the target state's distribution, over the same without swapping."""
    next_state_normalized_jsd: float
    """The same for the whole next state."""
    jsd_bits: float
    """The next-token JSD itself (bits)."""
    target_edge_overlap: float
    """Share of the model's top next states that are the target's out-neighbours."""
    sites: list[str]
    """The sites swapped."""


class SwapResults(Record):
    """``fsm.interventions.state_swaps``: scores per component. As JSON, one entry per
    component plus ``transitions``."""

    components: dict[str, SwapScores]
    """By component name; ``none`` is the reference without swapping."""
    transitions: int
    """Transitions swapped."""

    @model_validator(mode="before")
    @classmethod
    def _from_rows(cls, data: Any) -> Any:
        """Read the JSON layout: the components' rows beside ``transitions``."""
        if isinstance(data, dict) and "components" not in data:
            rows = {k: v for k, v in data.items() if isinstance(v, dict)}
            rest = {k: v for k, v in data.items() if not isinstance(v, dict)}
            return {**rest, "components": rows}
        return data

    @model_serializer(mode="wrap")
    def _as_rows(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {**data["components"], "transitions": data["transitions"]}

"""The TokFSM pipeline on a small machine: the baseline learns it, codes come to stand for its
states, and swapping state codes moves the model toward the target state."""

import json
import warnings

import pytest

from codebook_features.demos.fsm.config import MachineSettings, Preset
from codebook_features.demos.fsm.pipeline import PipelineResults, run_pipeline
from codebook_features.demos.runner import Variant
from codebook_features.settings.base import SavedFileWarning

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

SMALL = Preset(
    machine=MachineSettings(
        num_states=12,
        num_edges=3,
        states_per_sequence=16,
        train_sequences=8000,
        val_sequences=128,
    ),
    baseline_steps=250,
    baseline_lr=3e-3,
    batch_size=32,
    warmup_steps=20,
    variants=[
        Variant(
            name="Attn+MLP, k=1, C=32",
            sites=["attn_heads", "mlp"],
            k=1,
            num_codes=32,
            steps=120,
            lr=3e-3,
        )
    ],
    analysed="Attn+MLP, k=1, C=32",
    eval_samples=128,
    transitions=100,
    model={
        "model_type": "gpt_neox",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 64,
    },
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsm")
    return out, run_pipeline(out, SMALL, seed=0, progress=False)


def test_small_fsm_is_learned(experiment) -> None:
    _, results = experiment
    baseline = results.models["Baseline (no codebooks)"]
    assert baseline.state_accuracy >= 0.9
    assert baseline.first_transition_accuracy >= 0.9
    assert results.models["Attn+MLP, k=1, C=32"].state_accuracy >= 0.6


def test_codes_stand_for_states(experiment) -> None:
    _, results = experiment
    summary = results.analysis.summary
    # chance is 1/12; the best code of each state is far above it
    assert summary.mean_code_precision > 0.6 and summary.mean_code_recall > 0.6
    assert 0 < summary.mean_neuron_precision <= 1
    assert summary.state_tokens == 128 * 16  # one per state


def test_swapping_state_codes_moves_the_model_toward_the_target(experiment) -> None:
    _, results = experiment
    swaps = results.interventions.components
    assert swaps["none"].normalized_jsd == 1.0
    assert swaps["all"].normalized_jsd < 0.5
    assert swaps["all"].target_edge_overlap > swaps["none"].target_edge_overlap + 0.2


def test_report_and_resuming_the_pipeline(experiment) -> None:
    out, results = experiment
    report = (out / "report.md").read_text()
    assert "| Baseline (no codebooks) |" in report and "codes vs neurons" in report
    for name in ("training", "codes_vs_neurons", "interventions"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["models"] == results.to_dict()["models"]
    assert saved["models"]["Baseline (no codebooks)"]["run"] == "baseline"
    again = run_pipeline(out, SMALL, seed=0, progress=False)  # every stage is already done
    assert again.models == results.models and again.seconds == results.seconds
    assert again == results


def test_interrupted_interventions_are_run_again(experiment) -> None:
    out, results = experiment
    saved = json.loads((out / "results.json").read_text())
    del saved["interventions"]
    (out / "results.json").write_text(json.dumps(saved))
    again = run_pipeline(out, SMALL, seed=0, progress=False)
    assert again.interventions == results.interventions


def test_a_changed_preset_is_refused(experiment) -> None:

    from codebook_features import CodebookError

    out, _ = experiment
    with pytest.raises(CodebookError, match="other settings"):
        run_pipeline(
            out, SMALL.replace(machine=SMALL.machine.replace(num_states=9)), seed=0, progress=False
        )


def measures(results: PipelineResults) -> PipelineResults:
    """Everything but the stage timings (a stage run again takes another time)."""
    return results.replace(seconds={})


def test_results_file_keeps_its_layout(experiment) -> None:
    out, results = experiment
    text = (out / "results.json").read_text()
    saved = json.loads(text)
    assert list(saved) == [
        "preset",
        "seed",
        "settings",
        "seconds",
        "models",
        "analysis",
        "interventions",
        "codebook_features_version",
    ]
    assert list(saved["models"]["Baseline (no codebooks)"]) == [
        "loss",
        "token_accuracy",
        "state_accuracy",
        "first_transition_accuracy",
        "run",
    ]
    assert list(saved["analysis"]) == ["model", "summary", "sites"]
    assert list(saved["analysis"]["summary"]["per_state"][0]) == [
        "state",
        "site",
        "group",
        "id",
        "precision",
        "recall",
        "neuron_precision",
        "neuron",
    ]
    assert list(saved["interventions"])[-1] == "transitions"
    assert set(saved["interventions"]["all"]) == {
        "normalized_jsd",
        "next_state_normalized_jsd",
        "jsd_bits",
        "target_edge_overlap",
        "sites",
    }
    loaded = PipelineResults.load(out / "results.json")
    assert measures(loaded) == measures(results)
    assert json.dumps(loaded.to_dict(), indent=2) + "\n" == text


def test_results_without_a_version_stamp_resume(experiment) -> None:
    out, results = experiment
    saved = json.loads((out / "results.json").read_text())
    del saved["codebook_features_version"]  # as written before files were stamped
    (out / "results.json").write_text(json.dumps(saved, indent=2) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = run_pipeline(out, SMALL, seed=0, progress=False)
    assert measures(again) == measures(results)


def test_results_naming_the_code_id_code_still_load(experiment) -> None:
    out, results = experiment
    saved = json.loads((out / "results.json").read_text())
    for pick in saved["analysis"]["summary"]["per_state"]:  # as written before the id's rename
        pick["code"] = pick.pop("id")
    path = out / "before-id.json"
    path.write_text(json.dumps(saved))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = PipelineResults.load(path)
    assert measures(loaded) == measures(results)
    assert "code" not in loaded.to_dict()["analysis"]["summary"]["per_state"][0]


def test_results_from_a_newer_version_load_with_a_warning(experiment) -> None:
    out, results = experiment
    saved = json.loads((out / "results.json").read_text())
    saved["codebook_features_version"] = "99.0.0"
    saved["new_stage"] = {"x": 1}
    saved["models"]["Baseline (no codebooks)"]["calibration"] = 0.5
    saved["interventions"]["all"]["new_score"] = 0.1
    path = out / "newer.json"
    path.write_text(json.dumps(saved))
    with pytest.warns(SavedFileWarning, match="99.0.0") as caught:
        loaded = PipelineResults.load(path)
    message = str(caught[0].message)
    for dropped in (
        "new_stage",
        "models.Baseline (no codebooks).calibration",
        "interventions.all.new_score",
    ):
        assert dropped in message
    assert measures(loaded) == measures(results)


def test_swaps_split_into_small_passes_give_the_same_numbers(experiment, monkeypatch) -> None:
    """Per-row codes stay with their own rows however the transitions are split into passes."""
    import torch

    from codebook_features.demos.fsm import interventions
    from codebook_features.demos.fsm.analysis import analyze
    from codebook_features.demos.fsm.data import FSMData
    from codebook_features.demos.fsm.pipeline import load_for_eval

    out, results = experiment
    data = FSMData(out / "data")
    fsm, tokens = data.fsm(), torch.as_tensor(data.validation_tokens())
    cbm = load_for_eval(out / results.models[SMALL.analysed].run / "final")
    codes = analyze(cbm, fsm, tokens).state_codes
    whole = interventions.state_swaps(cbm, fsm, tokens, codes, 40, seed=3)
    monkeypatch.setattr(interventions, "ROWS_PER_PASS", 1)  # one transition per pass
    split = interventions.state_swaps(cbm, fsm, tokens, codes, 40, seed=3)
    for name, scores in whole.components.items():
        assert split.components[name].normalized_jsd == pytest.approx(scores.normalized_jsd)
        assert split.components[name].target_edge_overlap == scores.target_edge_overlap

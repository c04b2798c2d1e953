"""Every command's options come from its settings type: each field (nested ones as dotted
options) is an option of the command, documented in ``--help`` by the field's own docstring."""

from __future__ import annotations

import pytest

from codebook_features.app.config import ServeConfig
from codebook_features.cli import COMMANDS, main
from codebook_features.demos.fsm.config import (
    AnalyzeStep,
    DemoSettings,
    EvaluateStep,
    InterveneStep,
    MakeData,
    TrainStep,
)
from codebook_features.demos.lm.config import LmCorpusConfig, LmDemoSettings
from codebook_features.demos.lm.methods import LmMethodsSettings
from codebook_features.search.config import (
    BaselinesSearch,
    CodePageQuery,
    DescribeSearch,
    RegexSearch,
    TextQuery,
    TokenSearch,
    TopicSearch,
)
from codebook_features.settings.options import flat_fields
from codebook_features.steering.concept_cli import ListConcepts, NewConcept, ShowConcept
from codebook_features.steering.eval_config import SteeringEvalConfig
from codebook_features.steering.steer_cli import SteerConfig
from codebook_features.store.config import IndexConfig, RecordConfig
from codebook_features.training.config import RunConfig

SETTINGS = {
    "train": RunConfig,
    "record": RecordConfig,
    "index": IndexConfig,
    "search regex": RegexSearch,
    "search token": TokenSearch,
    "search topics": TopicSearch,
    "search code": CodePageQuery,
    "search describe": DescribeSearch,
    "search text": TextQuery,
    "search baselines": BaselinesSearch,
    "concept new": NewConcept,
    "concept show": ShowConcept,
    "concept list": ListConcepts,
    "steer": SteerConfig,
    "evaluate-steering": SteeringEvalConfig,
    "serve": ServeConfig,
    "fsm make": MakeData,
    "fsm train": TrainStep,
    "fsm evaluate": EvaluateStep,
    "fsm analyze": AnalyzeStep,
    "fsm intervene": InterveneStep,
    "fsm demo": DemoSettings,
    "lm data": LmCorpusConfig,
    "lm demo": LmDemoSettings,
    "lm methods": LmMethodsSettings,
}


def test_every_command_is_listed() -> None:
    assert {name.split()[0] for name in SETTINGS} == set(COMMANDS)


@pytest.mark.parametrize("command", SETTINGS)
def test_help_documents_every_field(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*command.split(), "--help"])
    assert stop.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines (also at hyphens)
    cls = SETTINGS[command]
    for name in flat_fields(cls):
        assert f"--{name}" in text, f"{command}: --{name} is not an option"
    for name, field in _leaf_fields(cls):
        assert field.description, f"{command}: {name} has no docstring"
        doc = "".join(field.description.replace("``", "").split())
        assert doc in text, f"{command}: {name} is not documented"


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, object]]:
    from codebook_features.settings.options import nested_settings

    found = []
    for name, field in cls.model_fields.items():
        nested = nested_settings(field.annotation)
        if nested is None:
            found.append((prefix + name, field))
        else:
            found += _leaf_fields(nested, f"{prefix}{name}.")
    return found

"""Sites named by kind, full name or glob, in natural order, wherever sites are named."""

import pytest
import torch

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.attach.site_names import SITE_KINDS, match_sites
from tests.model_zoo import neox_model

NAMES = [f"layers.{i}.{kind}" for i in range(16) for kind in ("attn_heads", "mlp")]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("layers.*.attn_heads", [f"layers.{i}.attn_heads" for i in range(16)]),
        ("layers.1[0-5].mlp", [f"layers.{i}.mlp" for i in range(10, 16)]),
        ("mlp", [f"layers.{i}.mlp" for i in range(16)]),
        ("layers.3.mlp", ["layers.3.mlp"]),
        (
            ["layers.9.*", "layers.1?.mlp", "layers.9.mlp"],
            ["layers.9.attn_heads", "layers.9.mlp", *[f"layers.{i}.mlp" for i in range(10, 16)]],
        ),
    ],
)
def test_globs_kinds_and_names(pattern: str | list[str], expected: list[str]) -> None:
    assert match_sites(pattern, NAMES[::-1]) == expected  # natural order whatever the input's


def test_a_pattern_matching_nothing_lists_the_sites() -> None:
    with pytest.raises(CodebookError) as error:
        match_sites(["layers.*.mlp", "layers.2[0-9].mlp"], NAMES)
    message = str(error.value)
    assert "no site matches 'layers.2[0-9].mlp'" in message
    assert "layers.0.attn_heads, layers.0.mlp, layers.1.attn_heads" in message
    assert message.index("layers.9.mlp") < message.index("layers.10.attn_heads")


def twelve_layers() -> torch.nn.Module:
    return neox_model(
        hidden_size=16,
        num_hidden_layers=12,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )


def test_configs_and_yaml_accept_patterns() -> None:
    config = CodebookModelConfig.from_dict(
        {
            "num_codes": 8,
            "sites": ["attn_heads", "layers.1[0-1].mlp", "layers.2.block"],
            "layers": [0, 10],
            "per_site": {"mlp": {"k": 2}},
        },
    )
    cbm = CodebookModel(twelve_layers(), config)
    assert list(cbm.sites) == [
        "layers.0.attn_heads",
        "layers.2.block",
        "layers.10.attn_heads",
        "layers.10.mlp",
        "layers.11.mlp",
    ]
    assert cbm.codebook("layers.11.mlp").config.k == 2
    assert cbm.codebook("layers.10.attn_heads").config.groups == 2
    assert cbm.select_sites("layers.1*") == [
        "layers.10.attn_heads",
        "layers.10.mlp",
        "layers.11.mlp",
    ]
    with cbm.disabled("layers.1?.*"):
        assert cbm.enabled == {"layers.0.attn_heads", "layers.2.block"}


def test_config_patterns_that_match_nothing_are_refused() -> None:
    config = CodebookModelConfig(num_codes=8, sites=["layers.1[2-5].mlp"])
    with pytest.raises(
        CodebookError, match=r"no site matches 'layers.1\[2-5\].mlp'.*layers.11.mlp"
    ):
        CodebookModel(twelve_layers(), config)
    with pytest.raises(CodebookError, match="unknown site 'mlpp'"):
        CodebookModelConfig(num_codes=8, sites=["mlpp"])
    assert set(SITE_KINDS) >= {"mlp", "attn_heads"}

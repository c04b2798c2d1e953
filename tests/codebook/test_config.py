"""Every bad configuration or input gets our error, with what to fix."""

import pytest
import torch

from codebook_features import Codebook, CodebookConfig, CodebookError

BAD = [
    ({"k": 5, "num_codes": 4}, "larger than num_codes"),
    ({"dim": 10, "groups": 3}, "not divisible by groups"),
    ({"similarity": "dot"}, "unknown codebook similarity"),
    ({"aggregate": "max"}, "unknown codebook aggregate"),
    ({"loss": "l1"}, "unknown codebook loss"),
    ({"num_codes": 0}, "positive integer"),
    ({"k": 1.5}, "positive integer"),
    ({"groups": True}, "positive integer"),
    ({"recon_weight": -1.0}, ">= 0"),
    ({"recon_weight": float("nan")}, "finite number"),
    ({"commitment": float("inf")}, "finite number"),
    ({"chunk_size": True}, "positive integer"),
    ({"dead_code_window": True}, "dead_code_window"),
    ({"commitment": "high"}, ">= 0"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"dead_code_window": -2}, "dead_code_window"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_configuration_raises_our_error(change: dict, message: str) -> None:
    settings = {"dim": 8, "num_codes": 16} | change
    with pytest.raises(CodebookError, match=message):
        CodebookConfig(**settings)


@pytest.mark.parametrize("shape", [(3, 7), (3, 2, 5), (4,)])
def test_wrong_input_shape_says_what_is_expected(shape: tuple[int, ...]) -> None:
    codebook = Codebook(CodebookConfig(dim=8, num_codes=16, groups=2))
    with pytest.raises(CodebookError, match=r"expects input of shape \(\.\.\., 8\) or"):
        codebook(torch.randn(*shape))


def test_integer_input_is_refused() -> None:
    with pytest.raises(CodebookError, match="floating-point"):
        Codebook(CodebookConfig(dim=8, num_codes=16))(torch.ones(2, 8, dtype=torch.long))


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    config = CodebookConfig(dim=8, num_codes=16, k=2, groups=4, similarity="euclidean")
    assert CodebookConfig.from_dict(config.to_dict()) == config
    with pytest.raises(CodebookError, match="unknown codebook setting"):
        CodebookConfig.from_dict({**config.to_dict(), "topk": 3})

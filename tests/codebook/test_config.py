"""Every bad configuration or input gets our error, with what to fix."""

import pytest
import torch

from codebook_features import Codebook, CodebookConfig, CodebookError

BAD = [
    ({"k": 5, "num_codes": 4}, "larger than num_codes"),
    ({"dim": 10, "groups": 3}, "not divisible by groups"),
    ({"similarity": "dot"}, "similarity: input should be 'inner_product', 'cosine' or 'euclidean'"),
    ({"aggregate": "max"}, "aggregate: input should be 'mean' or 'sum'"),
    ({"loss": "l1"}, "loss: input should be 'base', 'aeloss', 'fullaeloss' or 'vqvae'"),
    ({"num_codes": 0}, "num_codes: input should be greater than or equal to 1"),
    ({"k": 1.5}, "k: input should be a valid integer"),
    ({"groups": True}, "groups: expected a whole number, not true or false"),
    ({"recon_weight": -1.0}, "recon_weight: input should be greater than or equal to 0"),
    ({"recon_weight": float("nan")}, "recon_weight: input should be a finite number"),
    ({"commitment": float("inf")}, "commitment: input should be a finite number"),
    ({"chunk_size": True}, "chunk_size: expected a whole number"),
    ({"dead_code_window": True}, "dead_code_window: expected a whole number"),
    ({"commitment": "high"}, "commitment: input should be a valid number"),
    ({"chunk_size": 0}, "chunk_size: input should be greater than or equal to 1"),
    ({"dead_code_window": -2}, "dead_code_window: input should be greater than or equal to 0"),
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
    with pytest.raises(CodebookError, match="unknown setting topk; known: num_codes, k"):
        CodebookConfig.from_dict({**config.to_dict(), "topk": 3})

"""Shared fixtures: deterministic seeds and few threads, so results repeat on any machine."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

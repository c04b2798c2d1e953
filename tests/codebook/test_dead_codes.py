"""Dead-code refresh re-seeds exactly the codes that went unused, from recent inputs."""

import torch

from tests.codebook.helpers import make_codebook


def test_refresh_touches_only_dead_codes() -> None:
    codebook = make_codebook(num_codes=40, k=2, dead_code_window=3, dead_code_noise=0.0)
    codebook.train()
    x = torch.randn(20, 16)
    used = set()
    for _ in range(3):
        out = codebook(x)
        used |= {(g, c) for g in range(2) for c in out.ids[:, g].flatten().tolist()}
    before = codebook.vectors.detach().clone()
    codebook(x)  # the 4th call starts with a refresh
    after = codebook.vectors.detach()
    every = {(g, c) for g in range(2) for c in range(40)}
    changed = {(g, c) for g, c in every if not torch.equal(before[g, c], after[g, c])}
    dead = every - used
    assert changed == dead and dead
    # re-seeded codes are copies of recent (normalised) inputs
    inputs = codebook.normalize(x.view(20, 2, 8)).detach()
    for g, c in dead:
        assert torch.isclose(after[g, c], inputs[:, g]).all(-1).any()


def test_refresh_counts_training_calls_only() -> None:
    codebook = make_codebook(dead_code_window=2)
    codebook.eval()
    for _ in range(5):
        codebook(torch.randn(4, 16))
    assert codebook.training_calls == 0 and codebook.refresh_dead_codes() == 0


def test_refreshed_codes_get_a_new_window() -> None:
    codebook = make_codebook(num_codes=40, k=1, dead_code_window=2)
    codebook.train()
    x = torch.randn(5, 16)
    codebook(x), codebook(x)
    first = codebook.refresh_dead_codes()
    assert first > 0
    assert codebook.refresh_dead_codes() == 0  # nothing is dead again right away

"""Usage statistics against a hand count."""

import math

import torch

from tests.codebook.helpers import make_codebook


def test_statistics_match_a_hand_count() -> None:
    codebook = make_codebook(num_codes=10, k=2)
    batches = [torch.randn(7, 16), torch.randn(5, 16)]
    counts = torch.zeros(2, 10)
    sq_err = in_norm = out_norm = 0.0
    inputs_all = []
    with torch.no_grad():
        for x in batches:
            out = codebook(x)
            xn = codebook.normalize(x.view(-1, 2, 8))
            y = out.output.view(-1, 2, 8)
            for t in range(x.shape[0]):
                for g in range(2):
                    for c in out.ids[t, g].tolist():
                        counts[g, c] += 1
                    sq_err += float((y[t, g] - xn[t, g]).pow(2).sum())
                    in_norm += float(xn[t, g].norm())
                    out_norm += float(y[t, g].norm())
            inputs_all.append(xn)
    xs = torch.cat(inputs_all).double()
    variance = float(((xs - xs.mean(0)) ** 2).sum())
    n = 12
    summary = codebook.stats.summary()
    assert torch.equal(codebook.stats.counts, counts.long())
    assert summary["tokens"] == n
    assert summary["active_codes"] == float((counts > 0).sum())
    assert math.isclose(summary["dead_fraction"], float((counts == 0).sum()) / 20)
    assert math.isclose(summary["mse"], sq_err / (n * 2), rel_tol=1e-5)
    assert math.isclose(summary["fvu"], sq_err / variance, rel_tol=1e-5)
    assert math.isclose(summary["input_norm"], in_norm / (n * 2), rel_tol=1e-5)
    assert math.isclose(summary["output_norm"], out_norm / (n * 2), rel_tol=1e-5)
    p = counts / counts.sum(-1, keepdim=True)
    entropy = float(-(p * torch.where(p > 0, p.log(), 0)).sum(-1).mean())
    assert math.isclose(summary["entropy"], entropy, rel_tol=1e-5)


def test_empty_slots_are_not_counted_and_reset_clears() -> None:
    codebook = make_codebook(num_codes=10, k=2)
    codebook.hook_codes.register_forward_hook(lambda m, a, ids: torch.full_like(ids, -1))
    codebook(torch.randn(4, 16))
    assert codebook.stats.counts.sum() == 0 and codebook.stats.summary()["tokens"] == 4
    codebook.reset_stats()
    assert codebook.stats.summary()["tokens"] == 0


def test_statistics_stay_in_double_precision_after_a_cast() -> None:
    codebook = make_codebook().to(torch.bfloat16)
    assert codebook.vectors.dtype == torch.bfloat16
    assert codebook.stats.sq_error.dtype == torch.float64
    codebook(torch.randn(3, 16, dtype=torch.bfloat16))
    assert codebook.stats.summary()["tokens"] == 3


def test_tracking_can_be_turned_off() -> None:
    codebook = make_codebook()
    codebook.track_stats = False
    codebook(torch.randn(3, 16))
    assert codebook.stats.summary()["tokens"] == 0


def test_half_precision_statistics_do_not_overflow() -> None:
    codebook = make_codebook(dim=1024, groups=1, num_codes=16).to(torch.float16)
    codebook(torch.randn(8, 256, 1024, dtype=torch.float16) * 30)
    summary = codebook.stats.summary()
    assert all(math.isfinite(summary[k]) for k in ("mse", "fvu", "input_norm", "output_norm"))

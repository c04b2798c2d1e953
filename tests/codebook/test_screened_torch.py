"""The screened search in torch operations (CUDA's) selects as the compiled kernel does, and on
CUDA chooses the codes of an exact search. The cases of ``test_screened`` run through both."""

import pytest
import torch

from codebook_features.codebook import native, screened
from codebook_features.codebook.search import search_codes
from tests.codebook.test_screened import (
    SIMILARITIES,
    cheap_scores,
    errors_and_bounds,
    exact_ids,
    near_ties,
)


@pytest.mark.skipif(not native.available(), reason="needs the compiled kernel")
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_torch_operations_select_as_the_kernel_does(
    similarity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same ids and the same rows left for the full search, crowded rows and left-out codes
    included (candidates rescored a few rows at a time)."""
    monkeypatch.setattr(screened, "RESCORED", 5 * 64 * 32)
    x, codes = near_ties(2, 120, 512, 32, 1e-5)
    codes[1, 100:300] = codes[1, 7]  # rows with more candidates than they may keep
    x[1, :40] = codes[1, 7]
    tile, cheap_x, cheap = cheap_scores(x, codes, similarity)
    cheap[0, :, :5] = float("-inf")  # left out
    args = (cheap, x, cheap_x, tile.matrix, tile.offset, tile.bound, tile.relative, 6, 64)
    ids, fallback = native.screened_topk_bf16(*args)
    torch_ids, torch_fallback = screened.screened_topk(*args)
    assert fallback.any() and not fallback.all()
    assert torch.equal(torch_fallback, fallback)
    assert torch.equal(torch_ids[~fallback], ids[~fallback])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_on_cuda(similarity: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(screened.CUDA_ENV, "1")
    x, codes = near_ties(3, 256, 2048, 64, 1e-5)
    assert screened.enabled(x.cuda(), 2048, 8)
    ids = search_codes(x.cuda(), codes.cuda(), 8, similarity).cpu()
    assert torch.equal(ids, exact_ids(x, codes, 8, similarity))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_the_bound_holds_on_cuda(similarity: str) -> None:
    """The premise of the proof on this GPU's bfloat16 matmul, summed as the search sums it."""
    x, codes = torch.randn(2, 200, 64).cuda() * 7, torch.randn(2, 700, 64).cuda() * 0.3
    error, bound = errors_and_bounds(x, codes, similarity)
    assert (error <= bound).all()

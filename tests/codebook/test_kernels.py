"""The compiled kernels for the codes' gradient and the statistics against torch: the gradient
bit for bit (the same sums in the same order as ``index_add_``), the statistics against float64
sums."""

import pytest
import torch

from codebook_features.codebook import native, ops
from codebook_features.codebook.ops import combine_codes
from tests.codebook.helpers import make_codebook

pytestmark = pytest.mark.skipif(not native.available(), reason="needs the compiled kernels")


def index_add_per_slot(table_shape, index, source, valid):
    table = torch.zeros(table_shape)
    for slot in range(index.shape[0]):
        part = source if valid is None else source * valid[:, slot : slot + 1]
        table.index_add_(0, index[slot], part)
    return table


@pytest.mark.parametrize("with_valid", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_add_rows_makes_the_sums_of_index_add(with_valid: bool, threads: int) -> None:
    torch.manual_seed(0)
    rows, slots, table_rows, dim = 5000, 4, 300, 37  # many repeats per table row
    index = torch.randint(0, table_rows, (slots, rows))
    source = torch.randn(rows, dim) * torch.logspace(-3, 3, rows).unsqueeze(1)
    source[7, 3] = float("nan")
    valid = torch.rand(rows, slots) > 0.3 if with_valid else None
    expected = index_add_per_slot((table_rows, dim), index, source, valid)
    table = torch.zeros(table_rows, dim)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        native.add_rows(table, index, source, valid)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(table.nan_to_num(nan=1234.5), expected.nan_to_num(nan=1234.5))
    assert table.isnan().any()  # the NaN reached its row, as with index_add_


@pytest.mark.parametrize("threads", [1, 4])
def test_add_rows_refuses_rows_outside_the_table(threads: int) -> None:
    """Each entry outside is counted once, also with more threads than table rows."""
    index = torch.tensor([[0, 5], [1, -1]])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(IndexError, match=r"^2 row indices lie outside the table's 2 rows"):
            native.add_rows(torch.zeros(2, 3), index, torch.ones(2, 3), None)
    finally:
        torch.set_num_threads(before)


def test_a_float_mask_goes_through_index_add() -> None:
    table = torch.randn(50, 4, requires_grad=True)
    bags, mask = torch.randint(0, 50, (30, 3)), (torch.rand(30, 3) > 0.5).float()
    combine_codes(table, bags, mask, 0.5).sum().backward()
    expected = index_add_per_slot((50, 4), bags.t().contiguous(), torch.full((30, 4), 0.5), mask)
    assert torch.allclose(table.grad, expected)


@pytest.mark.parametrize("with_valid", [False, True])
def test_combine_codes_gradient_is_the_same_either_way(
    with_valid: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(1)
    table = torch.randn(4 * 256, 16, requires_grad=True)
    bags = torch.randint(0, 4 * 256, (3000, 8))
    valid = torch.rand(3000, 8) > 0.2 if with_valid else None
    upstream = torch.randn(3000, 16)
    grads = []
    for compiled in (True, False):
        monkeypatch.setattr(ops, "_compiled_add", lambda *args, on=compiled: on)
        table.grad = None
        (combine_codes(table, bags, valid, 0.125) * upstream).sum().backward()
        grads.append(table.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_stats_sums_against_float64() -> None:
    torch.manual_seed(2)
    x, y = torch.randn(500, 3, 24) * 10, torch.randn(500, 3, 24)
    sums = native.stats_sums(x, y)
    xd, yd = x.double(), y.double()
    assert torch.allclose(sums[:, 0], (yd - xd).pow(2).sum(-1).sum(0), rtol=1e-12)
    assert torch.allclose(sums[:, 1], xd.pow(2).sum(-1).sum(0), rtol=1e-12)
    assert torch.allclose(sums[:, 2], xd.norm(dim=-1).sum(0), rtol=1e-12)
    assert torch.allclose(sums[:, 3], yd.norm(dim=-1).sum(0), rtol=1e-12)
    assert torch.allclose(sums[:, 4:], xd.sum(0), rtol=1e-9, atol=1e-9)


def test_statistics_are_the_same_with_and_without_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from codebook_features.codebook import stats

    summaries = []
    for compiled in (True, False):
        monkeypatch.setattr(stats, "_compiled_sums", lambda *args, on=compiled: on)
        torch.manual_seed(3)
        codebook = make_codebook(num_codes=10, k=2)
        with torch.no_grad():
            for _ in range(3):
                codebook(torch.randn(40, 16))
        summaries.append(codebook.stats.summary())
    assert summaries[0].keys() == summaries[1].keys()
    for key in summaries[0]:
        assert summaries[0][key] == pytest.approx(summaries[1][key], rel=1e-5), key

"""The search through cheap bfloat16 scores chooses exactly the codes of an exact search.

An exact search here scores in float64 against the codes as the search prepares them
(normalised in float32) and breaks exact ties by the lower index. The cases are built to
defeat cheap scores: near ties far below bfloat16's resolution, large and tiny norms, groups of
different scales, codes left out, and rows whose ties leave too many candidates (searched in
full). On a CPU without native bfloat16 the screened search is forced on: slower, equally
exact. Every case runs twice: selected and rescored by the compiled kernel, and by the torch
operations that CUDA uses.
"""

import pytest
import torch

from codebook_features.codebook import native, screened
from codebook_features.codebook.search import search_codes, search_matrix

SIMILARITIES = ["inner_product", "cosine", "euclidean"]

pytestmark = pytest.mark.skipif(not native.available(), reason="needs the compiled kernel")


@pytest.fixture(autouse=True, params=["kernel", "torch"])
def screening_on(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv(screened.DISABLE_ENV, raising=False)
    monkeypatch.setattr(screened, "native_bfloat16", lambda: True)
    if request.param == "torch":
        monkeypatch.setattr(screened, "uses_kernel", lambda x: False)
    return request.param


def exact_ids(
    x: torch.Tensor, codes: torch.Tensor, k: int, similarity: str, left_out=None
) -> torch.Tensor:
    matrix, offset = search_matrix(codes, similarity, torch.float32)
    scores = x.double() @ matrix.double().transpose(1, 2)
    if offset is not None:
        scores = scores + offset.double()
    if left_out is not None:
        scores = scores.masked_fill(left_out, float("-inf"))
    return scores.sort(dim=-1, descending=True, stable=True).indices[..., :k]


def near_ties(groups: int, tokens: int, num_codes: int, dim: int, spread: float) -> tuple:
    """Inputs and codes where each token's best codes differ by about ``spread`` (relative):
    a handful of copies of one code, each nudged a little, among random codes."""
    x = torch.randn(groups, tokens, dim)
    codes = torch.randn(groups, num_codes, dim)
    for g in range(groups):
        base = x[g, 0] / x[g, 0].norm() * 3
        nudges = 1 + spread * torch.randn(24, dim)
        codes[g, :24] = base * nudges
    x[:, 1:] = x[:, :1] + 1e-3 * torch.randn(groups, tokens - 1, dim)
    return x, codes


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("spread", [1e-3, 1e-5])
def test_near_ties_far_below_bfloat16_resolution(similarity: str, spread: float) -> None:
    x, codes = near_ties(3, 64, 512, 32, spread)
    ids = search_codes(x, codes, 8, similarity)
    assert torch.equal(ids, exact_ids(x, codes, 8, similarity))


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("scale", [1e-18, 1.0, 1e15])
def test_large_and_tiny_norms_and_groups_of_different_scales(similarity: str, scale: float) -> None:
    x = torch.randn(4, 300, 16) * scale
    codes = torch.randn(4, 1024, 16) * torch.tensor([1e-3, 1.0, 30.0, 1e4]).view(4, 1, 1)
    codes[2] *= torch.rand(1024, 1) * 10  # norms spread within a group
    ids = search_codes(x, codes, 5, similarity)
    assert torch.equal(ids, exact_ids(x, codes, 5, similarity))


@pytest.mark.parametrize("k", [1, 3, 16, 24])
def test_random_data_at_several_k(k: int) -> None:
    x, codes = torch.randn(2, 500, 64), torch.randn(2, 2048, 64)
    for similarity in SIMILARITIES:
        ids = search_codes(x, codes, k, similarity)
        assert torch.equal(ids, exact_ids(x, codes, k, similarity))


@pytest.mark.parametrize("num_codes", [300, 1000, 1001])
def test_widths_that_are_not_whole_vectors(num_codes: int) -> None:
    """Rows whose blocks end in a partial vector: the last part of a row is short, and the
    near-tied codes sit in it."""
    x, codes = near_ties(2, 100, num_codes, 32, 1e-5)
    codes = codes.roll(-24, dims=1)  # the near-tied copies last
    for k in (1, 8):
        for similarity in SIMILARITIES:
            ids = search_codes(x, codes, k, similarity)
            assert torch.equal(ids, exact_ids(x, codes, k, similarity))


def test_exact_duplicates_go_to_the_lower_index_and_crowded_rows_are_searched_in_full() -> None:
    x = torch.randn(2, 40, 16)
    codes = torch.randn(2, 512, 16)
    codes[0, 100:300] = codes[0, 7]  # 201 exact ties: more candidates than a row may keep
    codes[1, 50:60] = codes[1, 3]  # 11 exact ties
    x[0] = codes[0, 7] + 1e-4 * torch.randn(40, 16)
    x[1, :20] = codes[1, 3]
    for similarity in SIMILARITIES:
        ids = search_codes(x, codes, 8, similarity)
        assert torch.equal(ids, exact_ids(x, codes, 8, similarity))


def assert_exact_with_codes_left_out(x, codes, k: int, code_mask, token_mask) -> None:
    left_out = code_mask.unsqueeze(1) & token_mask.view(1, -1, 1)
    for similarity in SIMILARITIES:
        ids = search_codes(x, codes, k, similarity, exclude=[(code_mask, token_mask)])
        assert torch.equal(ids, exact_ids(x, codes, k, similarity, left_out))


def some_codes_left_out() -> tuple:
    """Most of the near-tied codes left out, and most codes of one group, at every third
    token."""
    x, codes = near_ties(2, 50, 512, 16, 1e-5)
    code_mask = torch.zeros(2, 512, dtype=torch.bool)
    code_mask[:, :12] = True
    code_mask[1, 100:] = True
    return x, codes, code_mask, torch.arange(50) % 3 == 0


def test_codes_left_out_at_some_tokens() -> None:
    x, codes, code_mask, token_mask = some_codes_left_out()
    assert_exact_with_codes_left_out(x, codes, 4, code_mask, token_mask)


def test_codes_left_out_across_every_block() -> None:
    """Most codes of every block left out: fewer than k of the groups of blocks keep a finite
    maximum at some tokens, so the one-pass selection cannot bound the k-th best there."""
    x, codes = near_ties(2, 40, 512, 16, 1e-5)
    code_mask = (torch.arange(512) % 32 >= 3).expand(2, 512).clone()
    code_mask[1] = torch.arange(512) % 128 >= 2  # 8 codes left in
    assert_exact_with_codes_left_out(x, codes, 6, code_mask, torch.arange(40) % 2 == 0)


def test_rows_searched_in_full_leave_codes_out_at_their_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(screened, "capacity", lambda k: 1)  # every row to the full search
    x, codes, code_mask, token_mask = some_codes_left_out()
    assert_exact_with_codes_left_out(x, codes, 4, code_mask, token_mask)


def test_tiles_and_rows_left_for_a_full_search_agree() -> None:
    x, codes = near_ties(3, 180, 600, 16, 1e-6)
    x = x[:, ::2]  # not contiguous
    for chunk_size in (1, 7, None):
        ids = search_codes(x, codes, 6, "euclidean", chunk_size=chunk_size)
        assert torch.equal(ids, exact_ids(x, codes, 6, "euclidean"))


def cheap_scores(x: torch.Tensor, codes: torch.Tensor, similarity: str) -> tuple:
    """``(tile, cheap_x, cheap)``: the codes prepared, the inputs in bfloat16 and their cheap
    scores, as the search makes them."""
    matrix, offset = search_matrix(codes, similarity, torch.float32)
    tile = screened.GroupTile(matrix, offset)
    cheap_x = x.to(torch.bfloat16)
    with screened.float32_sums(x.device):
        return tile, cheap_x, torch.bmm(cheap_x, tile.cheap_t)


def absolute_bound(tile: screened.GroupTile, x: torch.Tensor, cheap_x: torch.Tensor):
    """Each row's absolute error bound, as the kernel works it out."""
    wide = cheap_x.double()
    sizes = [wide.norm(dim=-1), (wide - x.double()).norm(dim=-1), torch.ones_like(wide[..., 0])]
    return sum(tile.bound[:, i].view(-1, 1) * size for i, size in enumerate(sizes))


def errors_and_bounds(x: torch.Tensor, codes: torch.Tensor, similarity: str) -> tuple:
    """How far each cheap score (plus offset) lies from the exact one, and its bound."""
    tile, cheap_x, cheap = cheap_scores(x, codes, similarity)
    approx = cheap.double()
    exact = x.double() @ tile.matrix.double().transpose(1, 2)
    if tile.offset is not None:
        offset = tile.offset.unsqueeze(1)
        approx = (approx.float() + offset).double()
        exact = exact + offset.double()
    bound = absolute_bound(tile, x, cheap_x).unsqueeze(-1) + tile.relative * approx.abs()
    return (approx - exact).abs(), bound


def test_the_bound_holds_for_every_code() -> None:
    """The premise of the proof, on this machine's bfloat16 matmul: every cheap score (plus
    offset) is within its bound of the exact score."""
    for similarity in SIMILARITIES:
        x, codes = torch.randn(2, 200, 64) * 7, torch.randn(2, 700, 64) * 0.3
        error, bound = errors_and_bounds(x, codes, similarity)
        assert (error <= bound).all()
        assert (error > bound / 100).any()  # the bound is not vacuous


def selection(kind: str):
    return native.screened_topk_bf16 if kind == "kernel" else screened.screened_topk


def test_a_row_with_too_many_candidates_is_left_for_the_full_search(screening_on: str) -> None:
    x, codes = torch.randn(1, 30, 16), torch.randn(1, 512, 16)
    tile, cheap_x, cheap = cheap_scores(x, codes, "inner_product")
    wide = torch.tensor([[0.0, 0.0, 1e9]], dtype=torch.float64)  # every code is a candidate
    select = selection(screening_on)
    _, fallback = select(cheap, x, cheap_x, tile.matrix, None, wide, 0.0, 4, 64)
    assert fallback.all()
    ids, fallback = select(cheap, x, cheap_x, tile.matrix, None, tile.bound, tile.relative, 4, 64)
    assert not fallback.any()
    assert torch.equal(ids.view(1, 30, 4), exact_ids(x, codes, 4, "inner_product"))


def test_used_only_where_it_pays() -> None:
    x = torch.randn(2, 10, 8)
    assert screened.enabled(x, 1024, 8)
    assert not screened.enabled(x, 100, 8)  # a small matmul gains nothing
    assert not screened.enabled(x.double(), 1024, 8)
    assert not screened.enabled(x, 1024, 300)


def test_crowds_of_float32_ties_are_searched_exactly() -> None:
    """200 codes one float32 step apart from the input's direction: more candidates than a row
    may keep, and gaps below float32's rounding of the scores; the full search is exact too."""
    x = torch.randn(1, 50, 64)
    base = x[0, 0].clone()
    codes = torch.randn(1, 512, 64)
    for j in range(200):
        step = float("inf") if j // 64 % 2 else -float("inf")
        code = base.clone()
        code[j % 64] = torch.nextafter(code[j % 64], torch.tensor(step))
        codes[0, 10 + j] = code
    x[0] = base + 1e-3 * torch.randn(50, 64)
    ids = search_codes(x, codes, 4, "inner_product")
    assert torch.equal(ids, exact_ids(x, codes, 4, "inner_product"))


def test_a_code_left_out_stays_out_when_the_bound_is_huge() -> None:
    """k = C / 4, scores near float32's limits: the threshold must not admit left-out codes."""
    codes = torch.randn(1, 256, 16)
    codes[0, 0] = 0
    codes[0, 0, 0] = 5.0  # the best code for x, but left out
    codes[0, 255] = 0
    codes[0, 255, 1] = 1.4e19  # one far code: a large offset and norm
    x = torch.zeros(1, 4, 16)
    x[0, :, 0] = 1e22
    x[0, :, 2:] = torch.randn(4, 14)
    mask = torch.zeros(1, 256, dtype=torch.bool)
    mask[0, 0] = True
    ids = search_codes(x, codes, 64, "euclidean", exclude=[(mask, None)])
    assert not (ids == 0).any()
    assert torch.equal(ids, exact_ids(x, codes, 64, "euclidean", mask.unsqueeze(1)))


def test_a_code_holding_nan_left_out_leaves_valid_ids() -> None:
    codes = torch.randn(1, 512, 16)
    codes[0, 5, 0] = float("nan")
    mask = torch.zeros(1, 512, dtype=torch.bool)
    mask[0, 5] = True
    x = torch.randn(1, 4, 16)
    for similarity in SIMILARITIES:
        ids = search_codes(x, codes, 4, similarity, exclude=[(mask, None)])
        assert torch.equal(ids, exact_ids(x, codes, 4, similarity, mask.unsqueeze(1)))


@pytest.mark.parametrize("scale", [3.0, 10.0, 1000.0])
def test_one_far_code_among_euclidean_codes(scale: float) -> None:
    """The bound takes each group's largest code, so one far code widens it for every row: the
    search stays exact, and a group with a code far beyond the others is searched in float32."""
    x = torch.nn.functional.layer_norm(torch.randn(1, 600, 64), (64,))
    codes = torch.randn(1, 4096, 64)
    codes[0, 7] *= scale
    matrix, offset = search_matrix(codes, "euclidean", torch.float32)
    assert screened.GroupTile(matrix, offset).narrows == (scale < screened.SPREAD)
    ids = search_codes(x, codes, 8, "euclidean", chunk_size=256)
    assert torch.equal(ids, exact_ids(x, codes, 8, "euclidean"))


@pytest.mark.parametrize("dim", [128, 256])
def test_wide_groups(dim: int) -> None:
    x, codes = near_ties(2, 64, 1024, dim, 1e-5)
    for similarity in SIMILARITIES:
        ids = search_codes(x, codes, 8, similarity)
        assert torch.equal(ids, exact_ids(x, codes, 8, similarity))


def assert_even_rows_searched_in_full(x, codes, tile, cheap_x, cheap) -> None:
    """Exactly the even rows are left to the full search, and the search's ids are exact."""
    _, fallback = tile.search(x, cheap_x, cheap, 4)
    assert fallback[0, ::2].all() and not fallback[0, 1::2].any()
    ids = search_codes(x, codes, 4, "inner_product")
    assert torch.equal(ids, exact_ids(x, codes, 4, "inner_product"))


def test_rows_whose_cheap_scores_could_overflow_are_searched_in_full() -> None:
    """Inputs near float32's largest value against unit codes: every score is finite, but the
    bound's argument that no cheap score is +inf or NaN no longer holds, so those rows, and
    only those, are left to the full search; the ids stay exact."""
    x, codes = torch.randn(1, 40, 16), torch.randn(1, 512, 16)
    x[0, ::2] *= 2.0**126.5 / x[0, ::2].norm(dim=-1, keepdim=True)
    tile, cheap_x, cheap = cheap_scores(x, codes, "inner_product")
    assert cheap.isfinite().all()
    assert_even_rows_searched_in_full(x, codes, tile, cheap_x, cheap)


def test_cheap_scores_that_overflow_leave_their_rows_to_the_full_search() -> None:
    """An input along a code, of a norm float32 holds but bfloat16 rounds up to +inf: the
    cheap score is +inf, and the row is searched in full all the same."""
    codes = torch.randn(1, 512, 16)
    x = torch.randn(1, 8, 16)
    x[0, ::2] = codes[0, 3] / codes[0, 3].norm() * 2.0**127.997
    tile, cheap_x, cheap = cheap_scores(x, codes, "inner_product")
    assert x.isfinite().all() and (cheap[0, ::2] == float("inf")).any(-1).all()
    assert_even_rows_searched_in_full(x, codes, tile, cheap_x, cheap)

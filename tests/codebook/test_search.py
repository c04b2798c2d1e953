"""The tiled top-k search: exact, independent of tile size, bounded tiles."""

import pytest
import torch

from codebook_features.codebook import native, search
from codebook_features.codebook.search import search_codes, tile_shape, topk_ids


def naive_scores(x: torch.Tensor, codes: torch.Tensor, similarity: str) -> torch.Tensor:
    x, codes = x.double(), codes.double()
    if similarity == "euclidean":
        return -torch.cdist(x, codes)
    scores = x @ codes.transpose(1, 2) / codes.norm(dim=-1).unsqueeze(1)
    if similarity == "cosine":
        scores = scores / x.norm(dim=-1, keepdim=True)
    return scores


@pytest.mark.parametrize("similarity", ["inner_product", "cosine", "euclidean"])
@pytest.mark.parametrize("num_codes", [50, 1024])
def test_search_matches_full_score_matrix(similarity: str, num_codes: int) -> None:
    x, codes = torch.randn(3, 200, 16), torch.randn(3, num_codes, 16)
    ids = search_codes(x, codes, 5, similarity)
    expected = naive_scores(x, codes, similarity).topk(5, dim=-1).indices
    assert torch.equal(ids, expected)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_chunked_equals_unchunked(chunk_size: int | None) -> None:
    x, codes = torch.randn(4, 300, 8), torch.randn(4, 2048, 8)
    whole = search_codes(x, codes, 8, "inner_product", chunk_size=300)
    assert torch.equal(search_codes(x, codes, 8, "inner_product", chunk_size=chunk_size), whole)


def test_group_tiling_equals_one_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    x, codes = torch.randn(5, 100, 8), torch.randn(5, 1024, 8)
    whole = search_codes(x, codes, 3, "euclidean", chunk_size=100)
    monkeypatch.setattr(search, "SCORE_BUDGET", 3000)
    assert tile_shape(5, 100, 1024, None)[0] == 1  # forced to tile over groups
    assert torch.equal(search_codes(x, codes, 3, "euclidean"), whole)


@pytest.mark.parametrize(
    ("groups", "tokens", "codes"), [(16, 8192, 4096), (16, 8192, 65536), (1, 10, 100), (4, 1, 9)]
)
def test_auto_tiles_stay_within_budget(groups: int, tokens: int, codes: int) -> None:
    g, t = tile_shape(groups, tokens, codes, None)
    assert 1 <= g <= groups and 1 <= t <= tokens
    # bounded by a constant, whatever the number of tokens
    assert g * t * codes <= max(search.SCORE_BUDGET, search.MIN_TOKENS * codes)
    assert tile_shape(groups, 100 * tokens, codes, None) == (g, t) or t == tokens
    g, t = tile_shape(groups, tokens, codes, None, 2 * search.SCORE_BUDGET)  # bfloat16 tiles
    assert g * t * codes <= max(2 * search.SCORE_BUDGET, search.MIN_TOKENS * codes)


def test_two_level_topk_is_exact_with_ties() -> None:
    scores = torch.randn(64, 4096)
    scores[:, 100] = scores[:, 2000] = scores.max(-1).values + 1  # exact tie at the top
    scores = (scores * 4).round() / 4  # many ties everywhere
    for k in (1, 8, 16):
        ours = topk_ids(scores, k)
        reference = scores.topk(k, dim=-1).values
        assert torch.equal(torch.gather(scores, 1, ours), reference)
        assert all(len(set(row.tolist())) == k for row in ours)


def test_excluded_codes_are_never_chosen_and_next_best_take_their_place() -> None:
    x, codes = torch.randn(2, 50, 8), torch.randn(2, 64, 8)
    plain = search_codes(x, codes, 3, "inner_product")
    banned = torch.zeros(2, 64, dtype=torch.bool)
    banned[0, plain[0, :, 0]] = True  # every group-0 favourite
    tokens = torch.zeros(50, dtype=torch.bool)
    tokens[10:20] = True
    ids = search_codes(x, codes, 3, "inner_product", exclude=[(banned, tokens)])
    assert torch.equal(ids[1], plain[1]) and torch.equal(ids[0, ~tokens], plain[0, ~tokens])
    scores = naive_scores(x, codes, "inner_product")[0]
    scores[:, banned[0]] = float("-inf")
    assert torch.equal(ids[0, tokens], scores.topk(3, dim=-1).indices[tokens])


@pytest.mark.parametrize(
    ("width", "k"),
    [
        (4096, 8),
        (4096, 1),
        (65536, 16),
        (1000, 5),
        (1001, 1),
        (257, 3),
        (4097, 16),
        (50, 8),
        (64, 40),
    ],
)
def test_compiled_topk_equals_torch(width: int, k: int) -> None:
    if not native.available():
        pytest.skip("no C compiler: the torch path is used")
    scores = torch.randn(300, width)
    ours = native.topk_rows(scores, k)
    assert torch.equal(torch.gather(scores, 1, ours), scores.topk(k, dim=-1).values)
    assert all(len(set(row.tolist())) == k for row in ours)


def test_compiled_topk_with_ties_infinities_and_nan() -> None:
    if not native.available():
        pytest.skip("no C compiler: the torch path is used")
    scores = (torch.randn(200, 4096) * 2).round()  # heavy ties
    ours = native.topk_rows(scores, 8)
    assert torch.equal(torch.gather(scores, 1, ours), scores.topk(8, dim=-1).values)
    # ties go to the lower index, like a stable sort
    expected = torch.sort(-scores, dim=-1, stable=True).indices[:, :8]
    assert torch.equal(ours, expected)
    masked = torch.randn(5, 4096)
    masked[:, 100:] = float("-inf")
    assert (native.topk_rows(masked, 8) < 100).all()
    broken = torch.randn(5, 4096)
    broken[:, ::3] = float("nan")
    ids = native.topk_rows(broken, 8)  # NaN scores: any valid, distinct ids will do
    assert ((ids >= 0) & (ids < 4096)).all()
    assert all(len(set(row.tolist())) == 8 for row in ids)


def test_search_without_the_compiled_kernel_gives_the_same_codes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, codes = torch.randn(4, 300, 8), torch.randn(4, 2048, 8)
    with_kernel = search_codes(x, codes, 8, "inner_product")
    monkeypatch.setattr(native, "available", lambda: False)
    assert torch.equal(search_codes(x, codes, 8, "inner_product"), with_kernel)

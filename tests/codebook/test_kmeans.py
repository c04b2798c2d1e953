"""k-means initialisation: lowers reconstruction error on clustered data, seeded, grouped."""

import pytest
import torch

from codebook_features import CodebookError
from codebook_features.codebook.kmeans import kmeans
from tests.codebook.helpers import make_codebook


def clustered(groups: int, clusters: int, per_cluster: int, dim: int) -> torch.Tensor:
    """(N, groups * dim) activations: each group's chunk sits near one of its own centres."""
    centres = torch.randn(groups, clusters, dim) * 3
    which = torch.randint(clusters, (groups, clusters * per_cluster))
    points = torch.gather(centres, 1, which.unsqueeze(-1).expand(-1, -1, dim))
    points = points + 0.05 * torch.randn_like(points)
    return points.transpose(0, 1).reshape(-1, groups * dim)


@pytest.mark.parametrize("similarity", ["inner_product", "euclidean"])
def test_kmeans_init_lowers_reconstruction_error(similarity: str) -> None:
    data = clustered(groups=2, clusters=16, per_cluster=40, dim=8)
    codebook = make_codebook(num_codes=16, k=1, normalize_input=False, similarity=similarity)
    with torch.no_grad():
        before = codebook(data).loss.item()
        codebook.init_kmeans(data, iters=15, seed=1)
        after = codebook(data).loss.item()
    assert after < 0.1 * before
    assert after < 2 * 0.05**2 * 8 * 2  # about the cluster noise, summed over both groups


def test_kmeans_is_seeded_and_groups_are_clustered_separately() -> None:
    data = torch.randn(2, 300, 4)
    data[1] += 100  # group 1 lives far away from group 0
    a, b = kmeans(data, 10, seed=3), kmeans(data, 10, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, kmeans(data, 10, seed=4))
    assert (a[0].abs() < 10).all() and (a[1] > 90).all()


def test_kmeans_refills_empty_clusters() -> None:
    data = torch.cat([torch.zeros(50, 2), torch.ones(50, 2)]).unsqueeze(0)
    centres = kmeans(data, 4, iters=5)
    assert torch.isfinite(centres).all()


def test_kmeans_init_needs_enough_samples() -> None:
    with pytest.raises(CodebookError, match="at least num_codes"):
        make_codebook().init_kmeans(torch.randn(10, 16))

"""The Codebook layer against the naive reference, across every option and input layout."""

import itertools

import pytest
import torch

from codebook_features.codebook import Codebook, CodebookConfig
from codebook_features.codebook.reference import reference_forward
from tests.codebook.helpers import make_codebook

OPTIONS = list(
    itertools.product(["inner_product", "cosine", "euclidean"], ["mean", "sum"], [True, False])
)


@pytest.mark.parametrize(("similarity", "aggregate", "normalize"), OPTIONS)
def test_layer_matches_reference(similarity: str, aggregate: str, normalize: bool) -> None:
    codebook = make_codebook(
        similarity=similarity, aggregate=aggregate, normalize_input=normalize, loss="fullaeloss"
    )
    x = torch.randn(3, 7, 16)
    ours, ref = codebook(x), reference_forward(codebook, x)
    assert torch.equal(ours.ids, ref.ids)
    torch.testing.assert_close(ours.output, ref.output)
    torch.testing.assert_close(ours.loss, ref.loss)
    assert ours.output.shape == x.shape and ours.ids.shape == (3, 7, 2, 3)


@pytest.mark.parametrize("variant", ["base", "aeloss", "fullaeloss", "vqvae"])
def test_gradients_match_reference(variant: str) -> None:
    """The reference injects its gradients inside backward (as the original); ours come from
    the returned loss. Both must agree."""
    codebook = make_codebook(torch.float64, loss=variant, recon_weight=0.6, commitment=0.4)
    x = torch.randn(4, 5, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn_like(x)
    grads = []
    for run in ("ours", "reference"):
        codebook.zero_grad()
        x.grad = None
        out = codebook(x) if run == "ours" else reference_forward(codebook, x)
        objective = (out.output * upstream).sum()
        if run == "ours":
            objective = objective + out.loss
        objective.backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in codebook.parameters()])
    for ours, ref in zip(*grads, strict=True):
        torch.testing.assert_close(ours, ref)


def test_heads_layout_equals_split_layout() -> None:
    codebook = make_codebook(dim=12, groups=3)
    x = torch.randn(2, 5, 3, 4)
    heads, split = codebook(x), codebook(x.reshape(2, 5, 12))
    assert heads.output.shape == x.shape and heads.ids.shape == (2, 5, 3, 3)
    assert torch.equal(heads.ids, split.ids)
    assert torch.equal(heads.output.reshape(2, 5, 12), split.output)


def test_grouped_equals_independent_codebooks() -> None:
    grouped = make_codebook(loss="fullaeloss")
    singles = []
    for g in range(2):
        single = Codebook(CodebookConfig(dim=8, num_codes=40, k=3, loss="fullaeloss"))
        with torch.no_grad():
            single.vectors.copy_(grouped.vectors[g : g + 1])
            single.norm_weight.copy_(grouped.norm_weight[g : g + 1])
            single.norm_bias.copy_(grouped.norm_bias[g : g + 1])
        singles.append(single)
    x = torch.randn(4, 6, 16, requires_grad=True)
    out = grouped(x)
    (out.output.pow(2).sum() + out.loss).backward()
    x_single = x.detach().clone().requires_grad_()
    parts = [s(chunk) for s, chunk in zip(singles, x_single.split(8, -1), strict=True)]
    total = sum(p.output.pow(2).sum() + p.loss for p in parts)
    total.backward()
    assert torch.equal(out.ids, torch.cat([p.ids for p in parts], -2))
    torch.testing.assert_close(out.output, torch.cat([p.output for p in parts], -1))
    torch.testing.assert_close(out.loss, sum(p.loss for p in parts))
    torch.testing.assert_close(x.grad, x_single.grad)
    for g, single in enumerate(singles):
        torch.testing.assert_close(grouped.vectors.grad[g], single.vectors.grad[0])
        torch.testing.assert_close(grouped.norm_weight.grad[g], single.norm_weight.grad[0])


def test_output_keeps_input_dtype_and_codes_learn_in_their_own() -> None:
    codebook = make_codebook()
    x = torch.randn(2, 3, 16, dtype=torch.bfloat16)
    out = codebook(x)
    assert out.output.dtype == torch.bfloat16 and out.ids.dtype == torch.long
    out.loss.backward()
    assert codebook.vectors.grad is not None and codebook.vectors.grad.dtype == torch.float32


def test_chunk_size_does_not_change_the_layer() -> None:
    x = torch.randn(50, 16)
    a = make_codebook(num_codes=1024, k=4)
    b = make_codebook(num_codes=1024, k=4, chunk_size=3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x).ids, b(x).ids)
    assert torch.equal(a(x).output, b(x).output)


def test_state_dict_holds_parameters_not_statistics() -> None:
    codebook = make_codebook()
    assert set(codebook.state_dict()) == {"vectors", "norm_weight", "norm_bias"}
    assert set(make_codebook(normalize_input=False).state_dict()) == {"vectors"}


def test_old_names_still_work_with_a_warning() -> None:
    """Files saved when the vectors were called ``codes`` load; the old attribute names warn."""
    source, target = make_codebook(), make_codebook()
    old_state = {k.replace("vectors", "codes"): v for k, v in source.state_dict().items()}
    target.load_state_dict(old_state)
    assert torch.equal(target.vectors, source.vectors)
    with pytest.warns(DeprecationWarning, match=r"Codebook\.vectors"):
        assert target.codes is target.vectors
    out = target(torch.randn(4, 16))
    with pytest.warns(DeprecationWarning, match=r"CodebookOutput\.ids"):
        assert out.codes is out.ids


def test_empty_input_gives_empty_output() -> None:
    codebook = make_codebook(dead_code_window=2)
    for training in (False, True):
        codebook.train(training)
        out = codebook(torch.randn(0, 3, 16))
        assert out.output.shape == (0, 3, 16) and out.ids.shape == (0, 3, 2, 3)


def test_recent_inputs_are_kept_only_for_dead_code_refresh() -> None:
    assert make_codebook().recent_inputs.shape[1] == 0
    assert make_codebook(dead_code_window=3).recent_inputs.shape[1] > 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_tokens_get_no_codes_and_a_nan_output(bad: float) -> None:
    codebook = make_codebook()
    x = torch.randn(5, 16)
    x[2, 3] = bad  # group 0 of token 2
    out = codebook(x)
    clean = codebook(torch.cat([x[:2], x[3:]]))
    assert (out.ids[2, 0] == -1).all() and (out.ids[2, 1] >= 0).all()
    assert out.output[2, :8].isnan().all() and out.output[2, 8:].isfinite().all()
    assert torch.equal(out.ids[[0, 1, 3, 4]], clean.ids)
    assert torch.equal(out.output[[0, 1, 3, 4]], clean.output)
    assert out.loss.isnan()
    with torch.no_grad():
        handle = codebook.hook_codes.register_forward_hook(lambda m, a, ids: ids.clone())
        hooked = codebook(x)
        handle.remove()
    assert torch.equal(hooked.ids, out.ids) and hooked.output[2, :8].isnan().all()


def test_kmeans_refuses_non_finite_samples() -> None:
    from codebook_features import CodebookError

    codebook = make_codebook()
    samples = torch.randn(300, 16)
    samples[7, 0] = float("nan")
    before = codebook.vectors.detach().clone()
    with pytest.raises(CodebookError, match="NaN or inf in 1 of 300 tokens"):
        codebook.init_kmeans(samples)
    assert torch.equal(codebook.vectors, before)


def test_ids_are_contiguous_whether_or_not_tokens_are_masked() -> None:
    codebook = Codebook(CodebookConfig(dim=32, num_codes=300, k=3, groups=4))
    x = torch.randn(10, 32)
    out = codebook(x)
    assert out.ids.is_contiguous() and out.ids.view(-1, 3).shape == (40, 3)
    x[2, 0] = float("nan")
    assert codebook(x).ids.is_contiguous()

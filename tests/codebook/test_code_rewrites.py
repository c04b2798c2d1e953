"""Rewriting code ids through the hook, and excluding codes from the search."""

import pytest
import torch

from codebook_features import CodebookError
from tests.codebook.helpers import make_codebook


def rewrite(fn):
    """A forward hook on hook_codes that returns ``fn(ids.clone())``."""
    return lambda module, args, ids: fn(ids.clone())


@pytest.mark.parametrize("aggregate", ["mean", "sum"])
def test_forcing_one_slot_swaps_exactly_that_codes_share(aggregate: str) -> None:
    codebook = make_codebook(aggregate=aggregate)
    x = torch.randn(4, 5, 16)
    plain = codebook(x)
    s = 1 / 3 if aggregate == "mean" else 1.0

    def force(ids: torch.Tensor) -> torch.Tensor:
        ids[:, 2, 1, -1] = 7  # position 2, group 1, least similar slot
        return ids

    with torch.no_grad():
        handle = codebook.hook_codes.register_forward_hook(rewrite(force))
        forced = codebook(x)
        handle.remove()
    assert (forced.ids[:, 2, 1, -1] == 7).all()
    old = plain.ids[:, 2, 1, -1]
    expected = plain.output[:, 2, 8:] + s * (codebook.vectors[1, 7] - codebook.vectors[1, old])
    torch.testing.assert_close(forced.output[:, 2, 8:], expected)
    untouched = torch.ones(4, 5, 16, dtype=torch.bool)
    untouched[:, 2, 8:] = False
    assert torch.equal(forced.output[untouched], plain.output[untouched])


@pytest.mark.parametrize(("aggregate", "factor"), [("mean", 1.0), ("sum", 3.0)])
def test_forcing_all_slots_outputs_the_code(aggregate: str, factor: float) -> None:
    codebook = make_codebook(aggregate=aggregate)
    handle = codebook.hook_codes.register_forward_hook(rewrite(lambda ids: ids.fill_(5)))
    with torch.no_grad():
        out = codebook(torch.randn(6, 16))
    handle.remove()
    expected = factor * torch.cat([codebook.vectors[0, 5], codebook.vectors[1, 5]])
    torch.testing.assert_close(out.output, expected.expand(6, 16))


def test_adding_an_extra_code_adds_its_share() -> None:
    codebook = make_codebook()
    x = torch.randn(6, 16)
    plain = codebook(x)
    extra = torch.full((6, 2, 1), 9)
    handle = codebook.hook_codes.register_forward_hook(
        lambda module, args, ids: torch.cat([ids, extra], -1)
    )
    with torch.no_grad():
        out = codebook(x)
    handle.remove()
    assert out.ids.shape == (6, 2, 4)
    share = torch.cat([codebook.vectors[0, 9], codebook.vectors[1, 9]]) / 3
    torch.testing.assert_close(out.output, plain.output + share)


def test_dropping_a_code_removes_its_share_and_it_never_appears() -> None:
    codebook = make_codebook()
    x = torch.randn(200, 16)
    plain = codebook(x)
    victim = int(plain.ids[0, 0, 0])
    handle = codebook.hook_codes.register_forward_hook(
        rewrite(lambda ids: ids.masked_fill_(ids == victim, -1))
    )
    with torch.no_grad():
        out = codebook(x)
    handle.remove()
    assert not (out.ids == victim).any()
    hits = (plain.ids == victim).sum(-1, keepdim=True).float()  # (N, G, 1)
    share = hits * codebook.vectors[:, victim].unsqueeze(0) / 3  # (N, G, d)
    torch.testing.assert_close(out.output, plain.output - share.reshape(200, 16))


def test_excluded_code_is_replaced_by_the_next_best() -> None:
    codebook = make_codebook(k=2)
    x = torch.randn(100, 16)
    plain = codebook(x)
    banned = torch.zeros(2, 40, dtype=torch.bool)
    victim = int(plain.ids[0, 1, 0])
    banned[1, victim] = True
    handle = codebook.register_exclusion(lambda lead: (banned, None))
    out = codebook(x)
    handle.remove()
    assert not (out.ids[:, 1] == victim).any()
    hit = (plain.ids[:, 1] == victim).any(-1)
    assert torch.equal(out.ids[~hit], plain.ids[~hit])
    # where the victim was chosen, the remaining code moves up and a new one fills the slot
    for row_new, row_old in zip(out.ids[hit, 1], plain.ids[hit, 1], strict=True):
        kept = [c for c in row_old.tolist() if c != victim]
        assert row_new.tolist()[: len(kept)] == kept and victim not in row_new.tolist()
    assert torch.equal(codebook(x).ids, plain.ids)  # handle removed


def test_exclusion_at_chosen_positions_only() -> None:
    codebook = make_codebook()
    x = torch.randn(2, 6, 16)
    plain = codebook(x)
    banned = torch.ones(2, 40, dtype=torch.bool)
    banned[:, :3] = False  # only codes 0..2 allowed where the exclusion applies
    where = torch.zeros(2, 6, dtype=torch.bool)
    where[:, -1] = True
    codebook.register_exclusion(lambda lead: (banned, where) if lead == (2, 6) else None)
    out = codebook(x)
    assert set(out.ids[:, -1].flatten().tolist()) <= {0, 1, 2}
    assert torch.equal(out.ids[:, :-1], plain.ids[:, :-1])


def test_a_hook_returning_bad_ids_is_refused() -> None:
    codebook = make_codebook()
    for bad in (lambda ids: ids + 40, lambda ids: ids.float(), lambda ids: ids[..., 0]):
        handle = codebook.hook_codes.register_forward_hook(rewrite(bad))
        with pytest.raises(CodebookError, match="hook_codes"):
            codebook(torch.randn(3, 16))
        handle.remove()


def test_a_hook_editing_ids_in_place_is_honoured_and_checked() -> None:
    codebook = make_codebook(k=2)
    x = torch.randn(5, 16)

    def empty_a_slot(module, args, ids):
        ids[:, 1, 1] = -1  # edits in place, returns nothing

    handle = codebook.hook_codes.register_forward_hook(empty_a_slot)
    with torch.no_grad():
        out = codebook(x)
    handle.remove()
    assert (out.ids[:, 1, 1] == -1).all()
    expected = codebook.decode(out.ids, has_empty_slots=True).reshape(5, 16)
    torch.testing.assert_close(out.output, expected)

    def out_of_range(module, args, ids):
        ids[0, 0, 0] = 40

    codebook.hook_codes.register_forward_hook(out_of_range)
    with pytest.raises(CodebookError, match="outside"):
        codebook(x)

"""The shared batching of the steering package: windows cover every token in order, and padded
batches keep the sequences' order, pad on the right and mask exactly the real tokens."""

from __future__ import annotations

import pytest
import torch

from codebook_features import CodebookError
from codebook_features.steering.batches import check_batch_size, padded_batches, windows


def test_windows_cut_consecutively_and_keep_every_token() -> None:
    ids = list(range(10, 20))
    assert windows(ids, 4) == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
    assert windows(ids, 5) == [ids[:5], ids[5:]]
    assert windows(ids, 10) == [ids] == windows(ids, 50)
    assert windows(ids, None) == [ids]
    assert windows(ids, 1) == [[i] for i in ids]
    assert windows(torch.tensor(ids).tolist(), 3)[-1] == [19]
    assert windows([], 4) == [] == windows([], None)
    with pytest.raises(CodebookError, match="at least 1 token"):
        windows(ids, 0)


def test_padded_batches_shapes_padding_mask_and_order() -> None:
    sequences = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14], [15]]
    found = list(padded_batches(sequences, 2, "cpu", pad_id=99))
    assert [rows for _, _, rows in found] == [range(0, 2), range(2, 4), range(4, 5)]
    first, mask, _ = found[0]
    assert first.dtype == mask.dtype == torch.long
    assert first.tolist() == [[5, 6, 7], [8, 99, 99]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    second, mask, _ = found[1]
    assert second.tolist() == [[9, 10, 99, 99], [11, 12, 13, 14]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    last, mask, _ = found[2]
    assert last.shape == mask.shape == (1, 1) and last.tolist() == [[15]]
    # the real tokens, read back through the mask, are the sequences in order
    back = [
        ids[row][: int(m[row].sum())].tolist() for ids, m, rows in found for row in range(len(rows))
    ]
    assert back == sequences


@pytest.mark.parametrize("batch_size", [1, 3, 5, 8])
def test_batch_boundaries(batch_size: int) -> None:
    sequences = [list(range(1, n + 1)) for n in (3, 1, 4, 1, 5)]
    found = list(padded_batches(sequences, batch_size, torch.device("cpu")))
    rows = [list(r) for _, _, r in found]
    assert [i for r in rows for i in r] == list(range(5))
    assert all(len(r) == batch_size for r in rows[:-1]) and 1 <= len(rows[-1]) <= batch_size
    for ids, mask, r in found:
        assert ids.shape == mask.shape == (len(r), max(len(sequences[i]) for i in r))
        assert int(mask.sum()) == sum(len(sequences[i]) for i in r)
        assert (ids[mask == 0] == 0).all()  # default pad id


def test_refusals() -> None:
    for bad in (0, -1, 1.5, True, "2", None):
        with pytest.raises(CodebookError, match="batch_size must be an integer >= 1"):
            check_batch_size(bad)
        with pytest.raises(CodebookError, match="batch_size"):
            padded_batches([[1]], bad, "cpu")  # refused at once, not at the first batch
    assert check_batch_size(3) == 3
    with pytest.raises(CodebookError, match="sequence 1 has no tokens"):
        padded_batches([[1], []], 2, "cpu")
    assert list(padded_batches([], 2, "cpu")) == []

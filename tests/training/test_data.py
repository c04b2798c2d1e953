"""Text in several formats becomes the same token blocks; batches are a pure function of
(seed, index, rank)."""

import json

import pytest
import torch

from codebook_features import CodebookError
from codebook_features.training.config import DataConfig
from codebook_features.training.data import BatchPlan, build_blocks, load_split


@pytest.fixture
def tokenizer(text_data):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(text_data[1])


def expected_stream(corpus, tokenizer) -> list[int]:
    ids: list[int] = []
    for line in corpus.read_text().splitlines():
        ids += tokenizer(line, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids


def test_blocks_pack_documents_with_end_of_text(text_data, tokenizer) -> None:
    corpus, _ = text_data
    train, val = build_blocks(DataConfig(dataset=str(corpus), block_size=16), tokenizer, seed=0)
    stream = torch.tensor(expected_stream(corpus, tokenizer))
    blocks = stream[: len(stream) // 16 * 16].view(-1, 16)
    assert train.shape[1] == val.shape[1] == 16
    assert len(train) + len(val) == len(blocks)
    combined = {tuple(b.tolist()) for b in torch.cat([train, val])}
    assert combined == {tuple(b.tolist()) for b in blocks}
    assert len(val) == round(0.05 * len(blocks))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_give_the_same_blocks_as_text(text_data, tokenizer, tmp_path, fmt):
    corpus, _ = text_data
    lines = corpus.read_text().splitlines()
    path = tmp_path / f"corpus.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"body": line}) + "\n" for line in lines))
    else:
        import datasets

        datasets.Dataset.from_dict({"body": lines}).to_parquet(str(path))
    got = build_blocks(
        DataConfig(dataset=str(path), block_size=16, text_field="body"), tokenizer, seed=0
    )
    want = build_blocks(DataConfig(dataset=str(corpus), block_size=16), tokenizer, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_streaming_holds_out_the_first_blocks(text_data, tokenizer) -> None:
    corpus, _ = text_data
    config = DataConfig(dataset=str(corpus), block_size=16, streaming=True, max_val_blocks=10)
    train, val = build_blocks(config, tokenizer, seed=0)
    stream = torch.tensor(expected_stream(corpus, tokenizer))
    assert torch.equal(val, stream[:160].view(10, 16))
    assert next(iter(train)) == stream[160:176].tolist()


def test_missing_column_and_split_are_explained(text_data, tokenizer) -> None:
    corpus, _ = text_data
    with pytest.raises(CodebookError, match="no column 'body'"):
        build_blocks(DataConfig(dataset=str(corpus), text_field="body"), tokenizer, seed=0)
    with pytest.raises(CodebookError, match="validation_dataset for separate"):
        load_split(DataConfig(dataset=str(corpus)), "validation")
    with pytest.raises(CodebookError, match=r"smaller data\.block_size"):
        build_blocks(DataConfig(dataset=str(corpus), block_size=100000), tokenizer, seed=0)


def test_batches_are_reproducible_and_disjoint_across_processes() -> None:
    blocks = torch.arange(100).view(50, 2)
    plans = [BatchPlan(blocks, batch_size=4, rank=r, world=3, seed=7) for r in range(3)]
    again = BatchPlan(blocks, batch_size=4, rank=1, world=3, seed=7)
    assert torch.equal(plans[1](5), again(5))
    for i in range(4):  # one epoch of 4 global batches of 12 blocks
        firsts = [set(p(i)[:, 0].tolist()) for p in plans]
        assert sum(len(f) for f in firsts) == 12 and len(set().union(*firsts)) == 12
    epoch = set().union(*(set(p(i)[:, 0].tolist()) for p in plans for i in range(4)))
    assert len(epoch) == 48
    assert not torch.equal(plans[0](0), plans[0](4))  # a new epoch is a new order
    with pytest.raises(CodebookError, match="fewer than one global batch"):
        BatchPlan(blocks[:5], batch_size=4, rank=0, world=2, seed=0)


def test_dataset_specs_hub_names_and_mistakes(text_data) -> None:
    from codebook_features.training.data import local_files

    corpus, _ = text_data
    assert local_files("roneneldan/TinyStories") is None and local_files("wikitext") is None
    assert local_files(f"{corpus},") == [str(corpus)]  # an empty item is ignored
    with pytest.raises(CodebookError, match="cannot be mixed"):
        local_files(f"{corpus},wikitext")
    with pytest.raises(CodebookError, match="not a list"):
        local_files("wikitext,c4")


def test_token_rows_of_block_size_stay_whole(tmp_path, tokenizer) -> None:
    path = tmp_path / "tokens.jsonl"
    rows = [[1] * 5, list(range(100, 110)), list(range(200, 210)), [2] * 5]
    path.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in rows))
    config = DataConfig(dataset=str(path), block_size=10, validation_fraction=0.3)
    train, val = build_blocks(config, tokenizer, seed=0)
    blocks = {tuple(b) for b in torch.cat([train, val]).tolist()}
    assert blocks == {tuple(range(100, 110)), tuple(range(200, 210)), (1,) * 5 + (2,) * 5}

"""The steering metrics against hand counts and hand computations."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.steering.metrics import (
    Rate,
    distinct_n,
    perplexity,
    regex_rate,
    wilson_interval,
    words,
)
from tests.model_zoo import neox_model
from tests.text_fixtures import write_corpus, write_tokenizer

Z = 1.959963984540054


def by_formula(hits: int, total: int) -> tuple[float, float]:
    p = hits / total
    centre = (p + Z**2 / (2 * total)) / (1 + Z**2 / total)
    half = Z / (1 + Z**2 / total) * math.sqrt(p * (1 - p) / total + Z**2 / (4 * total**2))
    return centre - half, centre + half


@pytest.mark.parametrize(("hits", "total"), [(1, 10), (3, 7), (42, 100), (999, 1000)])
def test_wilson_interval_matches_the_formula(hits: int, total: int) -> None:
    low, high = wilson_interval(hits, total)
    assert (low, high) == pytest.approx(by_formula(hits, total), abs=1e-12)
    assert 0 <= low < hits / total < high <= 1


def test_wilson_interval_known_points() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z**2 / (10 + Z**2))
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(10 / (10 + Z**2))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # more evidence, narrower interval
    width = [high - low for low, high in (wilson_interval(5, 10), wilson_interval(50, 100))]
    assert width[1] < width[0]


def test_rate() -> None:
    rate = Rate(hits=3, total=12)
    assert rate.rate == 0.25
    assert rate.low < rate.rate < rate.high
    assert (rate.low, rate.high) == wilson_interval(3, 12)
    data = rate.to_dict()
    assert data == {"hits": 3, "total": 12, "rate": 0.25, "low": rate.low, "high": rate.high}
    assert Rate.from_dict(data) == rate
    empty = Rate(hits=0, total=0)
    assert math.isnan(empty.rate)
    assert empty.to_dict()["rate"] is None
    assert (empty.low, empty.high) == (0.0, 1.0)
    for hits, total in [(4, 3), (-1, 3), (1.0, 3)]:
        with pytest.raises(CodebookError):
            Rate(hits=hits, total=total)  # type: ignore[arg-type]
    with pytest.raises(CodebookError, match="hits"):
        Rate.from_dict({"total": 3})


def test_regex_rate() -> None:
    texts = ["The wedding was lovely", "a bride and groom", "weddings!", "nothing here", ""]
    assert regex_rate(texts, r"wedding") == Rate(hits=2, total=5)
    # "The" only; "nothing" has no "the"
    assert regex_rate(texts, r"(?i)the") == Rate(hits=1, total=5)
    assert regex_rate(texts, r"the") == Rate(hits=0, total=5)  # case-sensitive unless asked
    assert regex_rate(texts, re.compile("BRIDE", re.IGNORECASE)) == Rate(hits=1, total=5)
    assert regex_rate(texts, r"\bbride|groom\b") == Rate(hits=1, total=5)  # one text, counted once
    assert regex_rate(iter(texts), r"^$") == Rate(hits=1, total=5)
    assert regex_rate([], "x") == Rate(hits=0, total=0)


def test_regex_rate_refusals() -> None:
    with pytest.raises(CodebookError, match=r"bad regex '\(unclosed': missing \)") as error:
        regex_rate(["a"], "(unclosed")
    assert "\n" not in str(error.value)
    with pytest.raises(CodebookError, match="compiled str regex"):
        regex_rate(["a"], re.compile(b"a"))  # type: ignore[arg-type]
    with pytest.raises(CodebookError, match="texts"):
        regex_rate([b"a"], "a")  # type: ignore[list-item]


def test_distinct_n_by_hand() -> None:
    texts = ["the cat sat on the mat", "the cat ran", "  "]
    assert words("a  b\tc\n") == ["a", "b", "c"]
    # unigrams: the cat sat on the mat | the cat ran -> 9 in all; distinct: the cat sat on mat ran
    assert distinct_n(texts, 1) == 6 / 9
    # bigrams: (the cat)(cat sat)(sat on)(on the)(the mat) | (the cat)(cat ran) -> 7, 6 distinct;
    # none crosses from the first text into the second ("mat the")
    assert distinct_n(texts, 2) == 6 / 7
    # trigrams: 4 + 1, all distinct
    assert distinct_n(texts, 3) == 1.0
    assert math.isnan(distinct_n(texts, 7))
    assert math.isnan(distinct_n([], 1))


def test_distinct_n_of_token_ids() -> None:
    ids = [[5, 5, 5, 5], (7, 5), torch.tensor([5, 5])]
    assert distinct_n(ids, 1) == 2 / 8  # {5, 7}
    assert distinct_n(ids, 2) == 2 / 5  # (5,5) x3, (7,5), (5,5) from the tensor
    with pytest.raises(CodebookError, match="positive"):
        distinct_n(ids, 0)
    with pytest.raises(CodebookError, match="single str"):
        distinct_n("the cat", 1)


# ---------------------------------------------------------------------------------- perplexity
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    directory = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(directory, write_corpus(Path(directory) / "corpus.txt", lines=50))
    return AutoTokenizer.from_pretrained(directory)


def by_hand(model: torch.nn.Module, prompt: list[int], continuation: list[int]) -> float:
    """The continuation's total NLL from one unpadded forward pass of prompt + continuation."""
    ids = torch.tensor([prompt + continuation])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return -sum(
        logprobs[t - 1, ids[0, t]].item()
        for t in range(len(prompt), len(prompt) + len(continuation))
    )


PROMPTS = ["the red cat", "the old king sees the small", "a"]
CONTINUATIONS = ["sees the dragon near the hill .", "dragon .", "ship by the sea"]


def encode(tokenizer: object, prompts: list[str], continuations: list[str]) -> list:
    return [
        (tokenizer(p)["input_ids"], tokenizer(c, add_special_tokens=False)["input_ids"])
        for p, c in zip(prompts, continuations, strict=True)
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_perplexity_matches_a_forward_pass_by_hand(tokenizer: object, batch_size: int) -> None:
    model = neox_model()
    pairs = encode(tokenizer, PROMPTS, CONTINUATIONS)
    assert len({len(p) + len(c) for p, c in pairs}) == 3  # different lengths: padding is used
    nll = [by_hand(model, p, c) for p, c in pairs]
    counts = [len(c) for _, c in pairs]
    result = perplexity(model, tokenizer, PROMPTS, CONTINUATIONS, batch_size=batch_size)
    assert result.tokens == sum(counts) == 7 + 2 + 4
    expected = [math.exp(x / n) for x, n in zip(nll, counts, strict=True)]
    assert result.per_text == pytest.approx(expected, rel=1e-5)
    assert result.value == pytest.approx(math.exp(sum(nll) / sum(counts)), rel=1e-5)
    assert 1 < result.value < 61 * 3  # a random model: near the vocabulary size
    # continuations given as the generated token ids are scored the same
    as_ids = perplexity(model, tokenizer, PROMPTS, [c for _, c in pairs], batch_size=batch_size)
    assert as_ids.per_text == pytest.approx(result.per_text, rel=1e-6)


def test_empty_continuation_is_left_out(tokenizer: object) -> None:
    model = neox_model()
    full = perplexity(model, tokenizer, PROMPTS[:2], CONTINUATIONS[:2])
    mixed = perplexity(model, tokenizer, [*PROMPTS[:2], "the cat"], [*CONTINUATIONS[:2], ""])
    assert mixed.tokens == full.tokens
    assert mixed.value == pytest.approx(full.value, rel=1e-6)
    assert math.isnan(mixed.per_text[2])
    assert mixed.to_dict()["per_text"][2] is None
    nothing = perplexity(model, tokenizer, ["the"], [[]])
    assert nothing.tokens == 0
    assert math.isnan(nothing.value)


def test_codebook_model_is_scored_through_its_codebooks(tokenizer: object) -> None:
    config = CodebookModelConfig(sites=["mlp"], num_codes=16, k=2)
    cbm = CodebookModel(neox_model(), config).eval()
    pairs = encode(tokenizer, PROMPTS, CONTINUATIONS)
    nll = [by_hand(cbm, p, c) for p, c in pairs]
    result = perplexity(cbm, tokenizer, PROMPTS, CONTINUATIONS, batch_size=3)
    assert result.per_text == pytest.approx(
        [math.exp(x / len(c)) for x, (_, c) in zip(nll, pairs, strict=True)], rel=1e-5
    )
    plain = perplexity(neox_model(), tokenizer, PROMPTS, CONTINUATIONS)
    assert plain.value != pytest.approx(result.value, rel=1e-3)  # the codebooks did apply


def test_long_windows_lose_tokens_from_the_left() -> None:
    model = neox_model(max_position_embeddings=8)
    prompt, continuation = [3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]
    ids = prompt + continuation
    # 12 tokens, context 8: the window is ids[4:], of which the last 6 are the continuation
    expected = by_hand(model, ids[4:6], ids[6:])
    result = perplexity(model, None, [prompt], [continuation])
    assert result.tokens == 6
    assert result.value == pytest.approx(math.exp(expected / 6), rel=1e-5)
    # a continuation longer than the context: its first tokens have no predecessor in the window
    prompt, continuation = [3, 4], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    result = perplexity(model, None, [prompt, [3]], [continuation, [4]], batch_size=2)
    assert result.tokens == 7 + 1
    assert result.per_text[0] == pytest.approx(math.exp(by_hand(model, ids[4:5], ids[5:]) / 7))
    assert result.per_text[1] == pytest.approx(math.exp(by_hand(model, [3], [4])))


def test_mode_and_refusals(tokenizer: object) -> None:
    model = neox_model().train()
    perplexity(model, tokenizer, ["the"], ["cat"])
    assert model.training  # put back as it was
    with pytest.raises(CodebookError, match="one prompt per continuation"):
        perplexity(model, tokenizer, ["the", "a"], ["cat"])
    with pytest.raises(CodebookError, match="prompt 0 has no tokens"):
        perplexity(model, tokenizer, [""], ["cat"])
    with pytest.raises(CodebookError, match="continuation 0 has token id 61"):
        perplexity(model, tokenizer, ["the"], [[3, 61]])
    with pytest.raises(CodebookError, match="batch_size"):
        perplexity(model, tokenizer, ["the"], ["cat"], batch_size=0)


class Certain(torch.nn.Module):
    """A model sure of token 0 at every position: any other token costs about 1000 nats."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1000.0))

    def forward(self, input_ids: torch.Tensor, **_: object) -> object:
        logits = torch.zeros(*input_ids.shape, 8)
        logits[..., 0] = self.scale
        return type("Output", (), {"logits": logits})()


def test_an_overflowing_perplexity_is_inf() -> None:
    result = perplexity(Certain(), None, [[1], [1]], [[2, 3], [0]])
    assert result.tokens == 3
    assert result.per_text[0] == math.inf  # exp(1000) overflows
    assert result.per_text[1] == pytest.approx(1.0)
    assert result.value == pytest.approx(math.exp(2000 / 3), rel=1e-3)  # no overflow here
    alone = perplexity(Certain(), None, [[1]], [[2, 3]], batch_size=1)
    assert alone.value == math.inf and alone.per_text == [math.inf]

"""Token texts a reader can see: stray bytes of a multi-byte character are written as bytes,
whole characters stay characters, on a real byte-level BPE tokenizer trained here."""

from transformers import PreTrainedTokenizerFast

from codebook_features.search.token_text import readable_token


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import ByteLevelBPETokenizer

    core = ByteLevelBPETokenizer()
    text = ["the dragon flies over 日本 and café", "dragon dragon café"] * 20
    core.train_from_iterator(text, vocab_size=300, min_frequency=2, show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=core._tokenizer)


def test_partial_characters_show_their_bytes_whole_ones_their_text() -> None:
    tokenizer = byte_level_tokenizer()
    # never in the training text: one token per byte, each written as its byte
    ids = tokenizer.encode("龍", add_special_tokens=False)
    assert len(ids) == 3 and tokenizer.decode(ids[:1]) == "\ufffd"
    assert "".join(readable_token(tokenizer, i) for i in ids) == "\\xe9\\xbe\\x8d"
    # a token ending one character and holding the next whole: its bytes, then the character
    ids = tokenizer.encode("日本", add_special_tokens=False)
    assert [readable_token(tokenizer, i) for i in ids] == ["\\xe6\\x97", "\\xa5本"]
    for word in (" dragon", "the"):
        (token,) = tokenizer.encode(word, add_special_tokens=False)
        assert readable_token(tokenizer, token) == tokenizer.decode([token]) == word
    (token,) = tokenizer.encode(" café", add_special_tokens=False)
    assert readable_token(tokenizer, token) == " café"

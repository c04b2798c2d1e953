"""CodeRef: one name for a code, as a value and as a string that parses back."""

import pytest

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.attach.code_ref import CodeRef
from tests.model_zoo import tiny_model


@pytest.mark.parametrize(
    "text", ["layers.3.attn_heads/2/417", "layers.0.mlp/0/0", "layers.11.block/0/65535"]
)
def test_string_form_parses_back(text: str) -> None:
    ref = CodeRef.parse(text)
    assert str(ref) == text
    assert CodeRef.parse(str(ref)) == ref
    assert hash(ref) == hash(CodeRef.parse(text))


def test_fields_and_natural_order() -> None:
    ref = CodeRef.parse(" layers.3.attn_heads/2/417 ")
    assert (ref.site, ref.group, ref.id) == ("layers.3.attn_heads", 2, 417)
    assert ref == CodeRef(site="layers.3.attn_heads", group=2, id=417)
    refs = [
        CodeRef("layers.10.mlp", 0, 1),
        CodeRef("layers.2.mlp", 1, 0),
        CodeRef("layers.2.mlp", 0, 9),
    ]
    assert [str(r) for r in sorted(refs, key=CodeRef.sort_key)] == [
        "layers.2.mlp/0/9",
        "layers.2.mlp/1/0",
        "layers.10.mlp/0/1",
    ]


@pytest.mark.parametrize(
    "text",
    ["layers.3.mlp/2", "layers.3.mlp/2/x", "layers.3.mlp/-1/4", "/0/1", "a/b/1/2/3", "", "1 2 3"],
)
def test_malformed_names_are_refused_with_the_form(text: str) -> None:
    with pytest.raises(CodebookError, match="SITE/GROUP/ID"):
        CodeRef.parse(text)


@pytest.mark.parametrize(
    ("site", "group", "id"),
    [("", 0, 0), ("a/b", 0, 0), ("s", -1, 0), ("s", 0, 1.5), ("s", True, 0)],
)
def test_bad_values_are_refused(site: object, group: object, id: object) -> None:
    with pytest.raises(CodebookError):
        CodeRef(site, group, id)  # type: ignore[arg-type]


def test_check_against_a_model() -> None:
    cbm = CodebookModel(
        tiny_model("gpt_neox"), CodebookModelConfig(num_codes=16, k=2, sites=["attn_heads", "mlp"])
    )
    assert CodeRef.parse("layers.1.attn_heads/3/15").check(cbm).id == 15
    with pytest.raises(CodebookError, match=r"group \(head\) 4 is out of range"):
        CodeRef.parse("layers.1.attn_heads/4/0").check(cbm)
    with pytest.raises(CodebookError, match="code 16 is out of range"):
        CodeRef.parse("layers.0.mlp/0/16").check(cbm)
    with pytest.raises(CodebookError, match=r"no codebook at site 'layers\.9\.mlp'"):
        CodeRef.parse("layers.9.mlp/0/1").check(cbm)

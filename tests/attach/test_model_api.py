"""CodebookModel beyond the per-family checks: configuration, site selection, interventions'
details, and every user mistake getting our error."""

import json
import logging

import pytest
import torch

from codebook_features import CodebookError, CodebookModel, CodebookModelConfig
from codebook_features.persist.files import CODEBOOK_CONFIG
from tests.model_zoo import neox_model, tiny_model


def neox(**overrides: object) -> CodebookModel:
    settings: dict = {"num_codes": 16, "k": 2, "sites": ["attn_heads", "mlp"]} | overrides
    return CodebookModel(tiny_model("gpt_neox"), CodebookModelConfig(**settings))


def ids(length: int = 6) -> torch.Tensor:
    return torch.arange(2, 2 + 2 * length).view(2, length) % 61


def test_layers_per_site_settings_and_losses() -> None:
    cbm = neox(layers=[-1], per_site={"mlp": {"k": 4, "num_codes": 32, "groups": 2}})
    assert list(cbm.sites) == ["layers.1.attn_heads", "layers.1.mlp"]
    mlp = cbm.codebook("layers.1.mlp").config
    assert (mlp.k, mlp.num_codes, mlp.groups, mlp.dim) == (4, 32, 2, 32)
    heads = cbm.codebook("layers.1.attn_heads").config
    assert (heads.k, heads.groups, heads.group_dim) == (2, 4, 8)
    cbm(ids())
    losses = cbm.codebook_losses()
    assert set(losses) == set(cbm.sites)
    torch.testing.assert_close(cbm.codebook_loss(), sum(losses.values()))


def test_enable_and_disable_by_kind_and_name() -> None:
    cbm = neox()
    cbm.disable("mlp")
    assert cbm.enabled == {"layers.0.attn_heads", "layers.1.attn_heads"}
    cbm.enable("layers.1.mlp")
    cbm(ids())
    assert set(cbm.codebook_losses()) == {
        "layers.0.attn_heads",
        "layers.1.attn_heads",
        "layers.1.mlp",
    }
    with cbm.disabled():
        cbm(ids())
        assert cbm.codebook_losses() == {} and float(cbm.codebook_loss()) == 0.0
    assert len(cbm.enabled) == 3


def test_forcing_at_chosen_positions_and_adding_a_slot() -> None:
    cbm = neox()
    site = "layers.0.mlp"
    with torch.no_grad():
        with cbm.capture([site]) as plain:
            cbm(ids())
        with cbm.force_codes(site, 9, positions=[1, 4], mode="add"), cbm.capture([site]) as got:
            cbm(ids())
    codes = got[site]
    assert codes.shape == (2, 6, 1, 3)
    assert (codes[:, [1, 4], 0, 2] == 9).all() and (codes[:, [0, 2, 3, 5], 0, 2] == -1).all()
    assert torch.equal(codes[..., :2], plain[site])


def test_interventions_compose_and_undo_in_order() -> None:
    cbm = neox()
    site = "layers.1.attn_heads"
    with torch.no_grad():
        with cbm.capture([site]) as plain:
            cbm(ids())
        with cbm.force_codes(site, 7, mode="all"):
            with cbm.ablate_codes(site, 7, groups=[2]), cbm.capture([site]) as both:
                cbm(ids())
            with cbm.capture([site]) as forced:
                cbm(ids())
        with cbm.capture([site]) as after:
            cbm(ids())
    assert (both[site][:, :, 2] == -1).all() and (both[site][:, :, [0, 1, 3]] == 7).all()
    assert (forced[site] == 7).all()
    assert torch.equal(after[site], plain[site])


def test_least_mode_fills_slots_from_the_end() -> None:
    cbm = neox()
    site = "layers.0.attn_heads"
    with torch.no_grad(), cbm.force_codes(site, {3: [11, 12]}), cbm.capture([site]) as got:
        cbm(ids())
    assert (got[site][:, :, 3, 1] == 11).all() and (got[site][:, :, 3, 0] == 12).all()


def test_model_moves_dtype_and_generates() -> None:
    cbm = neox().to(torch.float64)
    assert cbm.codebook("layers.0.mlp").vectors.dtype == torch.float64
    out = cbm.generate(ids(3), max_new_tokens=4, do_sample=False, pad_token_id=1)
    assert out.shape == (2, 7)


BAD_CONFIGS = [
    ({"sites": ["heads"]}, "unknown site 'heads'"),
    ({"sites": []}, "sites is empty"),
    ({"layers": "first"}, "layers: input should be 'all'"),
    ({"layers": []}, "layers must be 'all' or a non-empty list"),
    ({"per_site": {"block": {"k": 2}}}, "not in sites"),
    ({"per_site": {"mlp": {"topk": 2}}}, "unknown setting"),
    ({"per_site": {"attn_heads": {"groups": 2}}}, "unknown setting"),
    ({"per_site": {"mlp": {"k": 99}}}, "larger than num_codes"),
    ({"k": 40}, "larger than num_codes"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CONFIGS)
def test_bad_model_config_raises_our_error(change: dict, message: str) -> None:
    settings = {"num_codes": 16, "sites": ["attn_heads", "mlp"]} | change
    with pytest.raises(CodebookError, match=message):
        CodebookModelConfig(**settings)


def test_mistakes_at_attach_and_intervention_time() -> None:
    with pytest.raises(CodebookError, match="layer 5 is out of range"):
        neox(layers=[5])
    with pytest.raises(CodebookError, match="not divisible by groups"):
        neox(groups=5)
    cbm = neox()
    with pytest.raises(CodebookError, match=r"no codebook at site 'layers\.7\.mlp'"):
        cbm.force_codes("layers.7.mlp", 1)
    with pytest.raises(CodebookError, match="group \\(head\\) 4 is out of range"):
        cbm.force_codes("layers.0.attn_heads", 1, groups=[4])
    with pytest.raises(CodebookError, match="code 16 is out of range"):
        cbm.ablate_codes("layers.0.mlp", [3, 16])
    with pytest.raises(CodebookError, match="only k=2 slots"):
        cbm.force_codes("layers.0.mlp", [1, 2, 3])
    with pytest.raises(CodebookError, match="unknown force mode"):
        cbm.force_codes("layers.0.mlp", 1, mode="replace")
    with pytest.raises(CodebookError, match="positions must be"):
        cbm.force_codes("layers.0.mlp", 1, positions="prompt")


def test_unknown_family_is_refused() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("Config", (), {"model_type": "odd", "num_hidden_layers": 2})()
            self.stack = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])

    with pytest.raises(
        CodebookError, match=r"model family 'odd'.*refused because no attention module"
    ):
        CodebookModel(Odd(), CodebookModelConfig(num_codes=4))


def test_checkpoint_for_another_model_is_refused(tmp_path) -> None:
    neox().save(tmp_path / "small")
    model = neox_model(hidden_size=48)
    with pytest.raises(CodebookError, match=r"do not match this model at layers\.0\.attn_heads"):
        CodebookModel.load_codebooks(model, tmp_path / "small")


def test_damaged_or_missing_checkpoints_are_refused(tmp_path) -> None:
    with pytest.raises(CodebookError, match="not a saved codebook model"):
        CodebookModel.from_pretrained(tmp_path)
    missing = tmp_path / "runs" / "missing" / "final"
    with pytest.raises(CodebookError, match=r"missing/final does not exist: give an existing"):
        CodebookModel.from_pretrained(missing)
    neox_model().save_pretrained(tmp_path / "plain")  # a model without codebooks: not damaged
    with pytest.raises(CodebookError, match=r"has no codebooks .* plain model; add codebooks by"):
        CodebookModel.from_pretrained(tmp_path / "plain")
    neox().save(tmp_path / "saved")
    (tmp_path / "saved" / CODEBOOK_CONFIG).write_text("{not json")
    with pytest.raises(CodebookError, match="is damaged"):
        CodebookModel.from_pretrained(tmp_path / "saved")


def flip_a_byte(path, offset: int = -7) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damaged", ["model.safetensors", "codebooks.safetensors", "config.json"])
def test_bit_flips_are_refused_before_loading(tmp_path, damaged: str) -> None:
    cbm = neox()
    cbm.save(tmp_path / "saved")
    recorded = json.loads((tmp_path / "saved" / CODEBOOK_CONFIG).read_text())["files"]
    assert {"model.safetensors", "codebooks.safetensors", "config.json"} <= set(recorded)
    flip_a_byte(tmp_path / "saved" / damaged)
    with pytest.raises(CodebookError, match=f"{damaged} in .* is damaged: its checksum"):
        CodebookModel.from_pretrained(tmp_path / "saved")
    if damaged == "codebooks.safetensors":  # also when attaching to a loaded base model
        with pytest.raises(CodebookError, match="is damaged: its checksum"):
            CodebookModel.load_codebooks(tiny_model("gpt_neox"), tmp_path / "saved")


def test_missing_files_and_models_without_checksums(tmp_path) -> None:
    cbm = neox()
    cbm.save(tmp_path / "saved")
    (tmp_path / "saved" / "model.safetensors").unlink()
    with pytest.raises(CodebookError, match=r"is missing model\.safetensors"):
        CodebookModel.from_pretrained(tmp_path / "saved")
    cbm.save(tmp_path / "old")  # as saved before checksums were recorded
    manifest = tmp_path / "old" / CODEBOOK_CONFIG
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"files": {}}))
    flip_a_byte(tmp_path / "old" / "model.safetensors")  # in the weights, not the header
    assert list(CodebookModel.from_pretrained(tmp_path / "old").sites) == list(cbm.sites)
    flip_a_byte(tmp_path / "saved" / "codebooks.safetensors", offset=3)  # header length
    with pytest.raises(CodebookError):
        CodebookModel.from_pretrained(tmp_path / "saved", verify=False)


def test_saving_never_overwrites_foreign_files(tmp_path) -> None:
    target = tmp_path / "notes"
    target.mkdir()
    (target / "todo.txt").write_text("keep me")
    with pytest.raises(CodebookError, match="not made by codebook-features"):
        neox().save(target)
    assert (target / "todo.txt").read_text() == "keep me"
    cbm = neox()
    cbm.save(tmp_path / "run")
    cbm.save(tmp_path / "run")  # re-saving a checkpoint replaces it
    (tmp_path / "run" / "notes.txt").write_text("mine")  # but never what someone added
    with pytest.raises(CodebookError, match=r"also holds files it did not make \(notes\.txt\)"):
        cbm.save(tmp_path / "run")
    (tmp_path / "run" / "notes.txt").unlink()
    saved = json.loads((tmp_path / "run" / CODEBOOK_CONFIG).read_text())
    assert saved["codebook_features_version"] and saved["model_type"] == "gpt_neox"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_deep_copy_and_detach_are_independent() -> None:
    import copy

    cbm = neox()
    twin = copy.deepcopy(cbm)
    with torch.no_grad():
        expected = cbm(ids()).logits
        twin.disable()
        assert torch.equal(cbm(ids()).logits, expected)  # the original still quantizes
        plain = twin(ids()).logits
        assert not torch.equal(plain, expected)
        model = cbm.detach()
        assert torch.equal(model(ids()).logits, plain)  # no hooks left: the plain model


def test_deep_copy_after_a_training_forward() -> None:
    import copy

    cbm = neox()
    cbm(ids()).logits.sum().backward()  # losses with autograd history are kept
    twin = copy.deepcopy(cbm)
    assert twin.codebook_losses() == {} and cbm.codebook_losses()


def test_reentering_new_positions_starts_from_the_new_prompt() -> None:
    cbm = neox()
    site = "layers.0.mlp"
    force = cbm.force_codes(site, 5, positions="new", mode="all")
    with torch.no_grad():
        with force:
            cbm(ids(4))
        with force, cbm.capture([site]) as got:
            cbm(ids(8))  # a new, longer prompt: nothing in it is "new"
    assert not (got[site] == 5).all(-1).all(-1).any()


def test_intervention_inputs_are_checked_and_converted() -> None:
    import numpy as np

    cbm = neox()
    with pytest.raises(CodebookError, match="only k=2 slots"):
        cbm.force_codes("layers.0.mlp", [1, 2, 3], mode="all")
    with (
        torch.no_grad(),
        cbm.force_codes("layers.0.mlp", np.int64(3), positions=(p for p in [1])),
        cbm.capture(["layers.0.mlp"]) as got,
    ):
        cbm(ids())
    assert (got["layers.0.mlp"][:, 1, 0, -1] == 3).all()
    assert not (got["layers.0.mlp"][:, 0, 0, -1] == 3).all()


def test_hub_options_also_locate_the_codebooks(tmp_path) -> None:
    cbm = neox()
    cbm.save(tmp_path / "repo" / "variant")
    loaded = CodebookModel.from_pretrained(tmp_path / "repo", subfolder="variant")
    assert list(loaded.sites) == list(cbm.sites)


def test_saved_files_follow_the_umask(tmp_path) -> None:
    import os

    old = os.umask(0o022)
    try:
        neox().save(tmp_path / "saved")
    finally:
        os.umask(old)
    assert (tmp_path / "saved").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "saved" / CODEBOOK_CONFIG).stat().st_mode & 0o777 == 0o644


def test_a_model_saved_by_a_newer_version_loads_with_a_warning(tmp_path) -> None:
    from codebook_features.settings.base import SavedFileWarning

    cbm = neox()
    cbm.save(tmp_path / "saved")
    manifest = tmp_path / "saved" / CODEBOOK_CONFIG
    saved = json.loads(manifest.read_text())
    saved["codebook_features_version"] = "99.0.0"
    saved["config"]["future_setting"] = 3
    manifest.write_text(json.dumps(saved))
    with pytest.warns(SavedFileWarning, match=r"version 99\.0\.0.*future_setting"):
        again = CodebookModel.from_pretrained(tmp_path / "saved")
    assert again.codebook_config == cbm.codebook_config
    with pytest.raises(CodebookError, match="unknown setting"):  # what users type stays strict
        CodebookModelConfig.from_dict({"num_codes": 8, "future_setting": 3})


def test_a_forward_logs_nothing_the_plain_model_does_not(caplog) -> None:
    import transformers

    warning_once = transformers.utils.logging.warning_once
    warning_once.cache_clear()  # each message is logged once per process: start afresh
    transformers.logging.enable_propagation()
    try:
        cbm = neox()
        ids = torch.zeros(1, 4, dtype=torch.long)
        with caplog.at_level(logging.WARNING):
            cbm(input_ids=ids, use_cache=False)
            cbm(input_ids=ids, use_cache=True)
            cbm.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
    finally:
        transformers.logging.disable_propagation()
        warning_once.cache_clear()
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("transformers")]

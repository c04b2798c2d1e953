"""The ready configs in ``configs/`` load as ``codebook train --config`` loads them, and the
codebooks they describe fit the real models: each model is built from its published sizes and
the codebooks attached, with shape-only tensors, so nothing is downloaded or allocated.

Why fake tensors rather than the meta device: attaching codebooks runs one tiny forward pass to
read each site's width, and on the meta device transformers' mask code calls ``.item()``, which
meta tensors cannot answer. ``FakeTensorMode`` gives tensors with shapes but no data just the
same, and transformers treats them as traced, so the real forward runs on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # the models' published Hugging Face configs (the sizes that decide the codebooks' shapes)
    "EleutherAI/pythia-70m-deduped": {
        "model_type": "gpt_neox",
        "hidden_size": 512,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
        "vocab_size": 50304,
        "max_position_embeddings": 2048,
        "rotary_pct": 0.25,
        "use_parallel_residual": True,
    },
    "EleutherAI/pythia-410m-deduped": {
        "model_type": "gpt_neox",
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "vocab_size": 50304,
        "max_position_embeddings": 2048,
        "rotary_pct": 0.25,
        "use_parallel_residual": True,
    },
    "roneneldan/TinyStories-1Layer-21M": {
        "model_type": "gpt_neo",
        "hidden_size": 1024,
        "num_layers": 1,
        "num_heads": 16,
        "vocab_size": 50257,
        "max_position_embeddings": 2048,
        "attention_types": [[["global"], 1]],
        "window_size": 256,
    },
}

EXPECTED: dict[str, dict[str, Any]] = {
    # what the paper ran (original.md C.5, Table 2): sites, groups per site, C, k
    "paper-pythia410m-wikitext.yaml": {
        "sites": [f"layers.{i}.attn_heads" for i in range(24)],
        "groups": 16,
        "dim": 1024,
        "num_codes": 10_000,
        "k": 8,
        "mode": "finetune",
    },
    "paper-tinystories-1layer.yaml": {
        "sites": ["layers.0.attn_heads"],
        "groups": 16,
        "dim": 1024,
        "num_codes": 10_000,
        "k": 8,
        "mode": "finetune",
    },
    "paper-tinystories-1layer-mlp.yaml": {
        "sites": ["layers.0.mlp"],
        "groups": 16,
        "dim": 1024,
        "num_codes": 10_000,
        "k": 8,
        "mode": "finetune",
    },
}


def load(path: Path) -> Any:
    """The run configuration exactly as ``codebook train --config PATH`` builds it."""
    from codebook_features.cli import build_parser
    from codebook_features.settings.options import settings_from_args
    from codebook_features.training import RunConfig

    argv = ["train", "--config", str(path)]
    return settings_from_args(RunConfig, build_parser(argv).parse_args(argv))


def attach(config: Any) -> Any:
    """The config's model, built from its real sizes as fake tensors, with its codebooks."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoConfig, AutoModelForCausalLM

    from codebook_features.attach.model import CodebookModel

    sizes = dict(ARCHITECTURES[config.model.name_or_path])
    model_config = AutoConfig.for_model(sizes.pop("model_type"), **sizes)
    with FakeTensorMode():
        model = AutoModelForCausalLM.from_config(model_config)
        return CodebookModel(model, config.codebooks)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_each_config_loads_and_its_codebooks_fit_the_model(path: Path) -> None:
    config = load(path)
    name = config.model.name_or_path
    assert name in ARCHITECTURES, f"add {name}'s sizes to ARCHITECTURES to check {path.name}"
    cbm = attach(config)
    assert cbm.sites, f"{path.name} attaches no codebooks"
    for site in cbm.sites:
        codebook = cbm.codebook(site).config
        assert codebook.num_codes == config.codebooks.num_codes
        assert codebook.k == config.codebooks.k


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_configs_are_the_papers_settings(name: str) -> None:
    expected = EXPECTED[name]
    config = load(CONFIGS / name)
    assert config.training.mode == expected["mode"]
    cbm = attach(config)
    assert list(cbm.sites) == expected["sites"]
    for site in cbm.sites:
        codebook = cbm.codebook(site)
        c = codebook.config
        assert (c.dim, c.groups, c.num_codes, c.k) == (
            expected["dim"],
            expected["groups"],
            expected["num_codes"],
            expected["k"],
        )
        assert codebook.vectors.shape == (c.groups, c.num_codes, c.dim // c.groups)


def test_the_readme_documents_every_config() -> None:
    readme = (CONFIGS / "README.md").read_text()
    for path in CONFIGS.glob("*.yaml"):
        assert f"codebook train --config configs/{path.name}" in readme

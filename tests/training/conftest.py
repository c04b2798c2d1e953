"""A tiny corpus, tokenizer and run configuration shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from codebook_features import CodebookModelConfig
from codebook_features.training import DataConfig, ModelConfig, RunConfig, TrainingConfig
from tests.model_zoo import TINY_NEOX
from tests.text_fixtures import write_corpus, write_tokenizer


@pytest.fixture(scope="session")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("text")
    corpus = write_corpus(root / "corpus.txt")
    return corpus, write_tokenizer(root / "tokenizer", corpus)


@pytest.fixture
def make_config(text_data, tmp_path):
    corpus, tokenizer = text_data

    def make(
        mode: str = "finetune",
        name: str = "run",
        pretrained: Path | None = None,
        **training: object,
    ) -> RunConfig:
        settings = {
            "output_dir": str(tmp_path / name),
            "mode": mode,
            "steps": 40,
            "batch_size": 16,
            "eval_every": 20,
            "save_every": 20,
            "lr": 3e-3,
            "progress": False,
        } | training
        return RunConfig(
            model=ModelConfig(name_or_path=str(pretrained))
            if pretrained
            else ModelConfig(init=dict(TINY_NEOX), tokenizer=str(tokenizer)),
            data=DataConfig(dataset=str(corpus), block_size=32),
            codebooks=None
            if mode == "baseline"
            else CodebookModelConfig(
                num_codes=32, k=2, sites=["attn_heads", "mlp"], dead_code_window=5
            ),
            training=TrainingConfig(**settings),
        )

    return make


@pytest.fixture(scope="session")
def pretrained(text_data, tmp_path_factory) -> Path:
    """A tiny model trained without codebooks: what codebooks-only training starts from."""
    from codebook_features.training import train

    corpus, tokenizer = text_data
    root = tmp_path_factory.mktemp("pretrained")
    config = RunConfig(
        model=ModelConfig(init=dict(TINY_NEOX), tokenizer=str(tokenizer)),
        data=DataConfig(dataset=str(corpus), block_size=32),
        training=TrainingConfig(
            output_dir=str(root / "run"),
            mode="baseline",
            steps=60,
            batch_size=16,
            eval_every=60,
            save_every=60,
            lr=3e-3,
            progress=False,
        ),
    )
    return train(config).model_dir

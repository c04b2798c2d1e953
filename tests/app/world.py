"""A small recorded world for the browser's tests, built once per test session: a labelled
corpus whose text holds markup characters (``<``, ``&``, quotes), a tiny codebook model saved
with its tokenizer, a store recorded from it, and a training run directory beside the model."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.steering.recorded import record_corpus
from tests.text_fixtures import write_corpus

MARKUP = [
    'the <script>alert("x")</script> dragon & the cat near the hill .',
    "the <b>old</b> king & queen by the sea .",
    "the tall ship sees the &amp; river 'quoted' in the town .",
]
"""Lines whose tokens a page must show as text, never as markup."""


@dataclass(frozen=True)
class World:
    root: Path
    run: Path
    """A run directory (settings, metrics, a plot) whose ``final`` is the model."""
    model: Path
    store: Path


_WORLD: dict[Path, World] = {}


def world(factory: pytest.TempPathFactory) -> World:
    key = factory.getbasetemp()
    if key not in _WORLD:
        _WORLD[key] = _build(factory.mktemp("web-world"))
    return _WORLD[key]


def _build(root: Path) -> World:
    text = write_corpus(root / "corpus.txt", lines=100, seed=0)
    lines = text.read_text().splitlines()
    rng = random.Random(0)
    for line in MARKUP * 4:
        lines.insert(rng.randrange(len(lines)), line)
    text.write_text("\n".join(lines) + "\n")
    run = root / "run"
    record_corpus(root, text, run / "final")
    _write_run(run)
    return World(root, run, run / "final", root / "store")


def _write_run(run: Path) -> None:
    """What a training run leaves beside its final model: settings, metrics rows, a plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codebook_features.persist.files import METRICS_FILE, PLOTS_DIR, RUN_CONFIG, SUMMARY_FILE

    (run / RUN_CONFIG).write_text("model:\n  name: tiny\n")
    rows = [{"split": "val", "step": s, "loss": 3.0 / s, "accuracy": 0.1 * s} for s in (1, 2)]
    (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / SUMMARY_FILE).write_text(json.dumps({"steps": 2, "final": {"loss": 1.5}}))
    (run / PLOTS_DIR).mkdir()
    figure, axes = plt.subplots(figsize=(3, 2))
    axes.plot([1, 2], [3.0, 1.5])
    figure.savefig(run / PLOTS_DIR / "loss.png")
    plt.close(figure)

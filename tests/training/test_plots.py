"""Loss plots: each scale on its own panel."""

import matplotlib.image

from codebook_features.training.plots import plot_losses


def rows(with_codebooks: bool) -> list[dict]:
    out = []
    for step in (0, 10, 20):
        if step:
            out.append(
                {
                    "split": "train",
                    "step": step,
                    "lm_loss": 4.7 - step / 100,
                    "codebook_loss": 75.0 + 7 * step if with_codebooks else 0.0,
                }
            )
        val = {"split": "val", "step": step, "loss": 4.8 - step / 100}
        if with_codebooks:
            val["without_codebooks_loss"] = 4.6
            val["sites"] = {
                f"layers.{i}.mlp": {"fvu": 0.5 - step / 100 + i / 10, "mse": 1.0} for i in (0, 1)
            }
        out.append(val)
    return out


def panels_high(path) -> int:
    return matplotlib.image.imread(path).shape[0]


def test_lm_loss_codebook_loss_and_fvu_each_get_a_panel(tmp_path) -> None:
    plot_losses(rows(with_codebooks=False), tmp_path / "baseline.png")
    plot_losses(rows(with_codebooks=True), tmp_path / "codebooks.png")
    one, three = panels_high(tmp_path / "baseline.png"), panels_high(tmp_path / "codebooks.png")
    # 1.2 + 2.6 * panels inches at 110 dpi
    assert one == round(110 * (1.2 + 2.6 * 1))
    assert three == round(110 * (1.2 + 2.6 * 3))


def test_empty_and_partial_rows_still_plot(tmp_path) -> None:
    plot_losses([], tmp_path / "empty.png")
    partial = [r for r in rows(with_codebooks=True) if r["split"] == "train"]
    plot_losses(partial, tmp_path / "partial.png")  # codebook loss, no validation yet
    assert panels_high(tmp_path / "partial.png") == round(110 * (1.2 + 2.6 * 2))

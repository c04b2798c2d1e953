"""Every causal-LM type of the installed transformers, at every site kind: right or refused.

For each type that builds tiny offline (:mod:`tests.family_zoo`), each site kind is attached
alone; a refusal must be a ``CodebookError``. An attached site must then pass: disabled ==
plain, the attn_heads layout (one group per head), a forced code visible in the codes and
changing the logits, a backward pass with finite gradients, save/load giving identical logits,
the attention's output projection turning the attn_heads site into the attn site, and cached
generation equal to recomputation under an intervention that changes it. Any other outcome
fails.

``python -m tests.attach.family_matrix`` writes the table into README.md between its markers;
a test checks that the README holds exactly what this module renders.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from torch import Tensor, nn

from codebook_features import CodebookModel, CodebookModelConfig
from codebook_features.attach.families import Plan, attention_heads, plan_sites
from codebook_features.attach.site_names import SITE_KINDS
from codebook_features.errors import CodebookError
from tests.family_zoo import MODEL_TYPES, build_tiny

START = "<!-- family-matrix:start -->"
END = "<!-- family-matrix:end -->"
README = Path(__file__).resolve().parents[2] / "README.md"
REASONS = {
    "mixture-of-experts": "experts",
    "adds the residual": "residual",
    "given the residual": "residual",
    "recurrent-depth": "looped",
    "cannot be checked": "unchecked",
    "after projecting": "changed after projection",
    "no attention module": "no module",
    "no MLP module": "no module",
    "projection ran": "projection reruns",
    "output projection": "no module",
    "ambiguous": "ambiguous",
    "list of decoder blocks": "no blocks",
    "not in this layer": "no module",
    "shape": "shape",
    "features": "width",
    "multiple": "width",
}
"""Key phrases of refusal messages -> the short reason shown in the table."""


@dataclass
class Row:
    """One model type: each site kind's outcome, ``"ok"`` or the refusal message."""

    model_type: str
    sites: dict[str, str] = field(default_factory=dict)


def short(outcome: str) -> str:
    if outcome.startswith("ok"):
        return "✓" + (f" {outcome[3:]} layers" if outcome != "ok" else "")
    return "✗ " + next((v for k, v in REASONS.items() if k in outcome), "other")


def _settings(sites: list[str]) -> CodebookModelConfig:
    return CodebookModelConfig(num_codes=8, k=1, sites=sites)


def _layer_head_count(model: nn.Module, projection: nn.Module) -> int | None:
    """The head count the layer's attention module states (its own, which a sliding-window
    layer or a decoder of an encoder-decoder family may not share with the config), else the
    config's."""
    for module in model.modules():
        if any(child is projection for child in module.children()):
            for name in ("num_heads", "num_attention_heads", "n_head", "n_heads"):
                value = getattr(module, name, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
    return attention_heads(model)[0]


def _check_site(model: nn.Module, names: list[str], ids: Tensor, plain: Tensor) -> None:
    """Disabled == plain, the attn_heads layout, a forced code seen and felt, and a backward
    pass (a model that changes a site's tensor in place would break it)."""
    cbm = CodebookModel(model, _settings(names))
    site = names[0]
    try:
        with torch.no_grad():
            with cbm.disabled():
                assert torch.equal(cbm(ids).logits, plain), f"{site}: disabled differs from plain"
            if site.endswith("attn_heads"):
                heads = _layer_head_count(model, cbm.sites[site].module)
                config = cbm.codebook(site).config
                assert config.groups == heads and config.dim % heads == 0, f"{site}: layout"
            with cbm.capture([site]) as before:
                on = cbm(ids).logits
            code = next(c for c in range(8) if not (before[site][..., 0, :] == c).any())
            with cbm.force_codes(site, code, groups=[0], mode="all"), cbm.capture([site]) as seen:
                forced = cbm(ids).logits
        assert (seen[site][..., 0, 0] == code).all(), f"{site}: forced code not in the codes"
        assert not torch.equal(forced, on), f"{site}: forcing a code does not change the logits"
        loss = cbm(ids, use_cache=False).logits.float().square().mean() + cbm.codebook_loss()
        loss.backward()
        grad = cbm.codebook(site).vectors.grad
        assert grad is not None and bool(torch.isfinite(grad).all()), f"{site}: gradients"
    finally:
        model.zero_grad(set_to_none=True)
        cbm.detach()


def _check_together(model: nn.Module, names: list[str], ids: Tensor) -> None:
    """Save/load gives identical logits, and cached generation equals recomputation under an
    intervention at every site; all accepted sites at once, to keep the matrix fast."""
    cbm = CodebookModel(model, _settings(names))
    try:
        with torch.no_grad():
            for param in cbm.codebooks.parameters():
                param.add_(torch.randn_like(param) * 0.1)
            expected = cbm(ids).logits
        with tempfile.TemporaryDirectory() as tmp:
            cbm.save(Path(tmp) / "saved")
            loaded = CodebookModel.from_pretrained(Path(tmp) / "saved")
        with torch.no_grad():
            assert torch.equal(loaded.eval()(ids).logits, expected), "save/load changes logits"
        _check_heads_project_to_attn(cbm, ids)
        settings = {"max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False}
        settings |= {"pad_token_id": 1, "output_scores": True, "return_dict_in_generate": True}
        with torch.no_grad(), cbm.capture() as chosen:
            plain = torch.stack(cbm.generate(ids[:1], **settings).scores)
        # at each site a code the plain generation never chose (6 tokens, 8 codes), so that the
        # intervention changes the scores of the new tokens (min_new_tokens: there are some)
        unused = {
            site: next(c for c in range(8) if not (chosen[site][..., 0, :] == c).any())
            for site in cbm.sites
        }
        runs = []
        for use_cache in (True, False):
            with torch.no_grad(), contextlib.ExitStack() as stack:
                for site, code in unused.items():
                    stack.enter_context(cbm.force_codes(site, code, groups=[0], positions="new"))
                runs.append(cbm.generate(ids[:1], use_cache=use_cache, **settings))
        assert torch.equal(runs[0].sequences, runs[1].sequences), (
            "cached generation differs from recomputation"
        )
        assert not torch.equal(torch.stack(runs[0].scores), plain), (
            "the intervention does not change cached generation"
        )
    finally:
        cbm.detach()


def _check_heads_project_to_attn(cbm: CodebookModel, ids: Tensor) -> None:
    """In each layer with both sites, the attn_heads site (the output projection's input, what
    its codebook gets) projected by that projection is the attn site."""
    layers = [n.rsplit(".", 1)[0] for n in cbm.sites if n.endswith(".attn_heads")]
    pairs = [(f"{p}.attn_heads", f"{p}.attn") for p in layers if f"{p}.attn" in cbm.sites]
    if not pairs:
        return
    sites = [name for pair in pairs for name in pair]
    with torch.no_grad(), cbm.disabled():
        with cbm.observe(sites, ids=False, inputs=True) as seen:
            cbm(ids)
        for heads, attn in pairs:
            projected = cbm.sites[heads].module(seen.inputs[heads])
            projected = projected[0] if isinstance(projected, (tuple, list)) else projected
            torch.testing.assert_close(
                projected, seen.inputs[attn], rtol=1e-4, atol=1e-5, msg=f"{heads} -> {attn}"
            )


def _plan(model: nn.Module) -> Plan | None:
    """Where the model's sites are; ``None`` when its blocks are not found."""
    try:
        return plan_sites(model)
    except CodebookError:
        return None


def _planned(plan: Plan | None, kind: str) -> list[str]:
    """The sites of ``kind`` in the layers whose modules have one (a hybrid model's attention
    layers, say); none when the model's blocks are not found."""
    if plan is None:
        return []
    return [f"layers.{i}.{kind}" for i, p in enumerate(plan.per_layer) if kind not in p.refused]


def check_type(model_type: str) -> Row | str:
    """The row of one model type, or why it could not be built tiny. Each kind is attached in
    every layer that has it; a kind no layer has is refused."""
    model, why = build_tiny(model_type)
    if model is None:
        return why
    ids = torch.randint(2, 61, (2, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(ids).logits
    row, accepted, plan = Row(model_type), [], _plan(model)
    for kind in SITE_KINDS:
        names = _planned(plan, kind)
        try:
            CodebookModel(model, _settings(names or [kind])).detach()
        except CodebookError as error:
            row.sites[kind] = str(error)
            continue
        _check_site(model, names, ids, plain)
        layers = len(plan.blocks)  # an attached kind means the blocks were found
        row.sites[kind] = "ok" if len(names) == layers else f"ok {len(names)}/{layers}"
        accepted += names
    if accepted:
        _check_together(model, accepted, ids)
    return row


def run_matrix(types: list[str] = MODEL_TYPES) -> tuple[list[Row], dict[str, str]]:
    """Rows of every type that builds tiny, and the reasons of those that do not."""
    rows, skipped = [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a busy machine
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        try:
            for model_type in types:
                result = check_type(model_type)
                if isinstance(result, Row):
                    rows.append(result)
                else:
                    skipped[model_type] = result
        finally:
            transformers.logging.set_verbosity(verbosity)
            torch.set_num_threads(threads)
            if bars:
                transformers.utils.logging.enable_progress_bar()
    return rows, skipped


def render(rows: list[Row], skipped: dict[str, str]) -> str:
    """The README block: counts, the families x sites table, and the types not built."""
    right = sum(v.startswith("ok") for r in rows for v in r.sites.values())
    cells = len(rows) * len(SITE_KINDS)
    lines = [
        f"Generated by `python -m tests.attach.family_matrix` with transformers "
        f"{transformers.__version__}: {len(rows)} of {len(MODEL_TYPES)} causal-LM types build "
        f"tiny offline; {right} of {cells} sites are attached and pass every check, the other "
        f"{cells - right} are refused with a reason (✗ and its short form).",
        "",
        "| model type | " + " | ".join(SITE_KINDS) + " |",
        "|---|" + "---|" * len(SITE_KINDS),
    ]
    for row in rows:
        cells_ = " | ".join(short(row.sites[k]) for k in SITE_KINDS)
        lines.append(f"| {row.model_type} | {cells_} |")
    lines += ["", f"Not built tiny with generic settings ({len(skipped)}): " + ", ".join(skipped)]
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """What README.md holds between the markers."""
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument(
        "--types", nargs="+", default=MODEL_TYPES, help="model types to check (default: all)"
    )
    args = parser.parse_args()
    rows, skipped = run_matrix(args.types)
    block = render(rows, skipped)
    text = args.readme.read_text()
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    args.readme.write_text(f"{before}{START}\n{block}\n{END}{after}")
    print(block)


if __name__ == "__main__":
    main()

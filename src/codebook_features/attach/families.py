"""Which module of each decoder block carries each site: a table row per family, or discovery.

A row names module paths; discovery finds them by module names, block by block, because a
model's layers need not be alike (a dense first layer before mixture-of-experts layers). A
site whose module is missing or ambiguous in a layer is *refused* there with a reason, while the
other sites of that layer stay available: a family whose MLP cannot be found still gets
``attn_heads``, ``attn`` and ``block``. What the modules compute is checked afterwards, on one
forward pass (:mod:`codebook_features.attach.site_checks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from codebook_features.errors import CodebookError


@dataclass(frozen=True)
class Family:
    """Module paths of one model family. ``layers`` is from the model root; the rest are
    relative to one decoder block: ``attention`` and ``mlp`` are the modules whose *output* is
    the site (a projection when the module itself adds the residual, as Bloom's does);
    ``attention_out`` and ``mlp_out`` the projections whose *input* is the site."""

    layers: str
    attention: str
    attention_out: str
    mlp: str
    mlp_out: str


def _row(layers: str, attention: str, attention_out: str, mlp: str, mlp_out: str) -> Family:
    return Family(layers, attention, f"{attention}.{attention_out}", mlp, f"{mlp}.{mlp_out}")


_LLAMA_LIKE = _row("model.layers", "self_attn", "o_proj", "mlp", "down_proj")
_GPT2_LIKE = _row("transformer.h", "attn", "c_proj", "mlp", "c_proj")

FAMILIES: dict[str, Family] = {
    "gpt2": _GPT2_LIKE,
    "openai-gpt": _GPT2_LIKE,
    "gpt_neox": _row("gpt_neox.layers", "attention", "dense", "mlp", "dense_4h_to_h"),
    "gpt_neo": Family("transformer.h", "attn", "attn.attention.out_proj", "mlp", "mlp.c_proj"),
    "gptj": _row("transformer.h", "attn", "out_proj", "mlp", "fc_out"),
    # the MLP is not a module of its own: its output is fc2's
    "opt": Family("model.decoder.layers", "self_attn", "self_attn.out_proj", "fc2", "fc2"),
    "falcon": _row("transformer.h", "self_attention", "dense", "mlp", "dense_4h_to_h"),
    # BloomAttention and BloomMLP add the residual inside: their projections carry the sites
    "bloom": Family(
        "transformer.h",
        "self_attention.dense",
        "self_attention.dense",
        "mlp.dense_4h_to_h",
        "mlp.dense_4h_to_h",
    ),
    # so does MptMLP
    "mpt": Family("transformer.blocks", "attn", "attn.out_proj", "ffn.down_proj", "ffn.down_proj"),
    "phi": _row("model.layers", "self_attn", "dense", "mlp", "fc2"),
    # multimodal Gemma 3 (4B and up) and Gemma 4: the language model's layers beside a
    # vision tower's
    **{
        name: _row("model.language_model.layers", "self_attn", "o_proj", "mlp", "down_proj")
        for name in ("gemma3", "gemma4")
    },
    "starcoder2": _row("model.layers", "self_attn", "o_proj", "mlp", "c_proj"),
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "gemma4_text",
            "phi3",
            "olmo",
            "olmo2",
            "olmo3",
            "stablelm",
            "cohere",
            "cohere2",
            "granite",
            # mixture of experts: ``mlp`` is the whole sparse block; ``mlp.down_proj`` exists
            # only in dense layers, so mlp_hidden is refused in the expert layers
            "mixtral",
            "qwen2_moe",
            "qwen3_moe",
            "olmoe",
            "deepseek_v3",
            "gpt_oss",
            "phimoe",
        )
    },
}
"""``config.model_type`` -> module paths. Adding a family: one row here, one test."""

_DISCOVER = {
    "attention": ("self_attn", "attn", "attention", "self_attention"),
    "attention_out": ("o_proj", "out_proj", "dense", "c_proj"),
    "mlp": ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe"),
    "mlp_out": ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "fc_out", "w2", "out_proj"),
}
_EXPERT_NAMES = ("experts", "expert")
_MOE_REASON = (
    "a mixture-of-experts MLP has no single hidden activation (each expert has its own; the mlp "
    "site is the whole sparse block's output)"
)


@dataclass
class LayerPlan:
    """Each site kind of one block: the module path carrying it, or why it is refused."""

    paths: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    projections: dict[str, str] = field(default_factory=dict)
    """For attn and mlp: the output projection whose output the site's output must equal, so
    a module that adds the residual stream or normalises after projecting is caught."""


@dataclass
class Plan:
    """Where every site of a model is, layer by layer."""

    family: str
    blocks: nn.ModuleList
    per_layer: list[LayerPlan]


def refusal(
    family: str, site: str, reason: str, more: int = 0, elsewhere: list[int] | None = None
) -> CodebookError:
    """The error refusing a site: the family, the site, why, and what to do (``elsewhere``:
    the layers that do have this kind of site)."""
    kind = site.rsplit(".", 1)[-1]
    others = f" (and {more} more site(s))" if more else ""
    todo = f"leave {kind} out of sites"
    if elsewhere:
        todo += f" or name only layers that have it ({_some_sites(elsewhere, kind)})"
    return CodebookError(
        f"model family {family!r}: site {site}{others} is refused because {reason}; {todo}"
    )


def _some_sites(layers: list[int], kind: str) -> str:
    if len(layers) == 1:
        return f"layers.{layers[0]}.{kind}"
    return ", ".join(f"layers.{i}.{kind}" for i in layers[:3]) + (
        ", ..." if len(layers) > 3 else ""
    )


def text_config(model: nn.Module) -> Any:
    """The config of the model's language part: a multimodal model's (Gemma 3's) keeps layer
    and head counts in its text config."""
    config = getattr(model, "config", None)
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def attention_heads(model: nn.Module) -> tuple[int | None, str]:
    """The model's number of attention heads, or ``None`` and why there is no single one."""
    try:
        heads = getattr(text_config(model), "num_attention_heads", None)
    except RuntimeError:  # transformers' per-layer configs refuse a global head count
        return None, "its number of attention heads differs from layer to layer"
    if not isinstance(heads, int) or heads < 1:
        return None, "the model config has no num_attention_heads to split it by"
    return heads, ""


_HEAD_DIM_NAMES = ("head_dim", "head_size", "attention_head_size")
_HEAD_COUNT_NAMES = ("num_heads", "num_attention_heads", "n_head", "n_heads")


def layer_heads(model: nn.Module, block: nn.Module, projection: nn.Module, width: int) -> int:
    """The number of heads whose outputs ``projection`` (an attention's output projection in
    ``block``) reads, ``width`` features in all: from the attention module around it (its head
    size or head count), since the model config's count is not always that layer's (sliding-
    window layers of their own size, a decoder-only model of an encoder-decoder family whose
    config counts the encoder's heads); from the config only when the module says nothing."""
    attention = _parent_of(block, projection)
    for holder in (attention, projection):
        if holder is None:
            continue
        # the count first: in multi-head latent attention the head size named head_dim is
        # that of queries and keys, not of the values the projection reads
        count = _positive_int(holder, _HEAD_COUNT_NAMES)
        if count is not None and width % count == 0:
            return count
        size = _positive_int(holder, _HEAD_DIM_NAMES)
        if size is not None and width % size == 0:
            return width // size
    heads, why = attention_heads(model)
    if heads is None:
        raise CodebookError(f"{why}; attn_heads codebooks need the heads of each layer")
    counts = _config_head_counts(model)
    if len(set(counts.values())) > 1:
        named = ", ".join(f"{name}={count}" for name, count in counts.items())
        raise CodebookError(
            f"the model config names several head counts ({named}) and the attention module "
            "does not say which is this layer's: attn_heads cannot be split here (use attn)"
        )
    if width % heads:
        raise CodebookError(
            f"the attention output of {width} features does not split into the config's "
            f"{heads} heads, and its attention module does not say its head size: attn_heads "
            "cannot be split here (use attn)"
        )
    return heads


def _config_head_counts(model: nn.Module) -> dict[str, int]:
    """The config's counts of attention heads (``num_attention_heads``,
    ``decoder_attention_heads``, ``swa_num_attention_heads``, ...), key-value heads left out."""
    try:
        config = vars(text_config(model))
    except TypeError:
        return {}
    return {
        name: value
        for name, value in config.items()
        if name.endswith("attention_heads")
        and "key_value" not in name
        and "kv" not in name
        and isinstance(value, int)
        and not isinstance(value, bool)
        and value > 0
    }


def _positive_int(module: nn.Module, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _parent_of(block: nn.Module, child: nn.Module) -> nn.Module | None:
    """The module of ``block`` that holds ``child`` directly."""
    for module in block.modules():
        if any(c is child for c in module.children()):
            return module
    return None


def model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", None))


def plan_sites(model: nn.Module) -> Plan:
    """The module of every site kind in every layer, from the table or by discovery."""
    name = model_type(model)
    row = FAMILIES.get(name)
    layers = row.layers if row else _find_layers(model, name)
    blocks = _get(model, layers, name)
    if not isinstance(blocks, nn.ModuleList) or not len(blocks):
        raise CodebookError(
            f"model family {name!r}: {layers!r} is not a list of decoder blocks; add a row "
            "for the family to FAMILIES in codebook_features/attach/families.py"
        )
    per_layer = [_pair(_row_plan(row, b) if row else _discover(b), b) for b in blocks]
    return Plan(name, blocks, per_layer)


def _row_plan(row: Family, block: nn.Module) -> LayerPlan:
    plan = LayerPlan()
    wanted = {
        "attn_heads": row.attention_out,
        "attn": row.attention,
        "mlp": row.mlp,
        "mlp_hidden": row.mlp_out,
    }
    for kind, path in wanted.items():
        try:
            block.get_submodule(path)
        except AttributeError:
            parent = path.rsplit(".", 1)[0]
            plan.refused[kind] = (
                _MOE_REASON
                if kind == "mlp_hidden" and _is_moe(block, parent)
                else f"its module {path!r} is not in this layer"
            )
        else:
            plan.paths[kind] = path
    return plan


def _pair(plan: LayerPlan, block: nn.Module) -> LayerPlan:
    """Tie attn and mlp to their output projections; without one (other than a
    mixture-of-experts MLP, a sum of experts) what the module adds after it cannot be checked,
    so the site is refused."""
    for kind, partner in (("attn", "attn_heads"), ("mlp", "mlp_hidden")):
        path = plan.paths.get(kind)
        if path is None:
            continue
        projection = plan.paths.get(partner)
        if projection is None:
            if kind == "mlp" and _is_moe(block, path):
                continue
            del plan.paths[kind]
            plan.refused[kind] = (
                f"its output projection is unknown ({plan.refused[partner]}), so it cannot be "
                "checked that its output leaves out the residual stream"
            )
        elif projection != path:
            plan.projections[kind] = projection
    return plan


def _discover(block: nn.Module) -> LayerPlan:
    """Find the site modules of one block from its children's names; a kind whose module is
    missing or ambiguous is refused with the reason."""
    plan = LayerPlan()
    children = dict(block.named_children())
    if _bert_like(block, children):
        # each output module adds the residual and normalises after its dense projection, so
        # the projections carry the sites
        plan.paths = {"attn_heads": _BERT_ATTENTION, "attn": _BERT_ATTENTION}
        plan.paths |= {"mlp": _BERT_MLP, "mlp_hidden": _BERT_MLP}
        return plan
    attention, why = _unique("attention", children)
    if attention is None:
        plan.refused["attn"] = plan.refused["attn_heads"] = why
    else:
        plan.paths["attn"] = attention
        out, why = _unique("attention_out", dict(children[attention].named_children()))
        if out is None:
            plan.refused["attn_heads"] = f"in the attention module {attention!r}: {why}"
        else:
            plan.paths["attn_heads"] = f"{attention}.{out}"
    mlp, why = _unique("mlp", children)
    if mlp is None and {"fc1", "fc2"} <= set(children):
        # an MLP of bare projections in the block (OPT, BART-like decoders): fc2 carries both
        plan.paths["mlp"] = plan.paths["mlp_hidden"] = "fc2"
        return plan
    if mlp is None:
        plan.refused["mlp"] = plan.refused["mlp_hidden"] = why
        return plan
    plan.paths["mlp"] = mlp
    if _is_moe(block, mlp):
        plan.refused["mlp_hidden"] = _MOE_REASON
        return plan
    out, why = _unique("mlp_out", dict(children[mlp].named_children()))
    if out is None:
        plan.refused["mlp_hidden"] = f"in the MLP module {mlp!r}: {why}"
    else:
        plan.paths["mlp_hidden"] = f"{mlp}.{out}"
    return plan


_BERT_ATTENTION = "attention.output.dense"
_BERT_MLP = "output.dense"


def _bert_like(block: nn.Module, children: dict[str, nn.Module]) -> bool:
    """BERT's layer layout: attention, intermediate and output, each output a dense projection
    followed by dropout, the residual and a LayerNorm."""
    if not {"attention", "intermediate", "output"} <= set(children):
        return False
    try:
        return all(
            isinstance(block.get_submodule(path), nn.Linear)
            for path in (_BERT_ATTENTION, _BERT_MLP)
        )
    except AttributeError:
        return False


def _unique(role: str, children: dict[str, nn.Module]) -> tuple[str | None, str]:
    options = _DISCOVER[role]
    hits = [n for n in options if n in children]
    if len(hits) == 1:
        return hits[0], ""
    what = role.replace("_out", " output projection").replace("mlp", "MLP")
    if not hits:
        return None, f"no {what} module was found (looked for {', '.join(options)})"
    return None, f"the {what} module is ambiguous ({', '.join(hits)})"


def _is_moe(block: nn.Module, path: str) -> bool:
    try:
        module = block.get_submodule(path)
    except AttributeError:
        return False
    return any(n in _EXPERT_NAMES for n, _ in module.named_children())


def _find_layers(model: nn.Module, name: str) -> str:
    """The path of the only module list as long as the model has layers (as sparsify does)."""
    count = getattr(text_config(model), "num_hidden_layers", None)
    lists = [
        path
        for path, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count and path
    ]
    if len(lists) != 1:
        found = f"{len(lists)} candidates" if lists else "none"
        raise CodebookError(
            f"unsupported model family {name!r}: its list of decoder blocks could not be found "
            f"({found}); add a row for it to FAMILIES in codebook_features/attach/families.py"
        )
    return lists[0]


def _get(root: nn.Module, path: str, name: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError as error:
        raise CodebookError(
            f"model family {name!r}: module {path!r} not found in {type(root).__name__}; the "
            "family table in codebook_features/attach/families.py does not match this model"
        ) from error

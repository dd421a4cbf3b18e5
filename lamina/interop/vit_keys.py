"""Key maps of ``lamina.models.ViT``: torchvision, timm and Hugging Face names.

* torchvision ``VisionTransformer``: ``conv_proj``, ``class_token``,
  ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_{i}.{ln_1,
  self_attention.in_proj_*, self_attention.out_proj, ln_2, mlp.0, mlp.3}``
  (the published ``.pth`` files spell the MLP ``mlp.linear_1`` / ``mlp.linear_2``;
  both are read), ``encoder.ln``, ``heads.head``.
* timm ``VisionTransformer``: ``patch_embed.proj``, ``cls_token``, ``pos_embed``,
  ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head``.
* Hugging Face ``ViTForImageClassification`` as stored on the Hub
  (``google/vit-base-patch16-224``): ``vit.embeddings.{cls_token,
  position_embeddings, patch_embeddings.projection}``,
  ``vit.encoder.layer.{i}.{layernorm_before, attention.attention.{query,key,value},
  attention.output.dense, layernorm_after, intermediate.dense, output.dense}``,
  ``vit.layernorm``, ``classifier``; ``ViTModel`` files have no ``vit.`` prefix
  and a ``pooler.dense`` (lamina's ViT has no pooler: it is dropped with the head).
  transformers 5 renamed the modules in memory (``vit.layers.{i}.attention.q_proj``,
  ``mlp.fc1``, ...); those spellings are read too.

The fused projections (torchvision's ``in_proj_weight``, timm's ``qkv``) are
split into lamina's query / key / value in that order.
"""

from __future__ import annotations

from typing import List

from lamina.interop.keymap import Entry

__all__ = ["torchvision_entries", "timm_entries", "hf_entries", "HF_HEAD_EXTRA"]

HF_HEAD_EXTRA = ("pooler.dense.weight", "pooler.dense.bias", "vit.pooler.dense.weight", "vit.pooler.dense.bias")


def _ln(target: str, *sources: str) -> List[Entry]:
    return [Entry(f"{target}/scale", tuple(f"{s}.weight" for s in sources)),
            Entry(f"{target}/offset", tuple(f"{s}.bias" for s in sources))]


def _linear(target: str, *sources: str, head: bool = False) -> List[Entry]:
    return [Entry(f"{target}/weights", tuple(f"{s}.weight" for s in sources), "linear", head=head),
            Entry(f"{target}/bias", tuple(f"{s}.bias" for s in sources), head=head)]


def _fused_qkv(block: str, weight: str, bias: str) -> List[Entry]:
    out = []
    for index, name in enumerate(("query_proj", "key_proj", "value_proj")):
        out.append(Entry(f"{block}/attention/{name}/weights", (weight,), "linear", part=(index, 3)))
        out.append(Entry(f"{block}/attention/{name}/bias", (bias,), part=(index, 3)))
    return out


def _embeddings(patch: str, cls: str, pos: str, model) -> List[Entry]:
    out = [Entry("patch_embed/weights", (f"{patch}.weight",), "conv"), Entry("patch_embed/bias", (f"{patch}.bias",)),
           Entry("positions/embeddings", (pos,), "positions")]
    if model.pooling == "cls":
        out.append(Entry("cls_token", (cls,)))
    return out


def _fused_entries(model, emb: tuple, layer: str, names: dict, final: str, head: str) -> List[Entry]:
    """The map of a ViT whose attention has one fused qkv projection (torchvision, timm).

    ``layer`` is the block prefix with ``{i}``; ``names`` gives each part's key
    (or spellings) relative to it: ``ln1``, ``qkv_weight``, ``qkv_bias``, ``proj``, ``ln2``, ``fc1``, ``fc2``.
    """
    out = _embeddings(*emb, model)
    for i in range(model.num_layers):
        ours, theirs = f"blocks/{i}", layer.format(i=i)
        spell = {k: [f"{theirs}.{v}" for v in (names[k] if isinstance(names[k], tuple) else (names[k],))] for k in names}
        out += _ln(f"{ours}/norm1", *spell["ln1"])
        out += _fused_qkv(ours, spell["qkv_weight"][0], spell["qkv_bias"][0])
        out += _linear(f"{ours}/attention/output_proj", *spell["proj"])
        out += _ln(f"{ours}/norm2", *spell["ln2"])
        out += _linear(f"{ours}/fc1", *spell["fc1"])
        out += _linear(f"{ours}/fc2", *spell["fc2"])
    out += _ln("norm", final)
    out += _linear("head", head, head=True)
    return out


def torchvision_entries(model) -> List[Entry]:
    """The torchvision key map of ``model`` (a :class:`lamina.models.ViT`).

    Args:
      model: the lamina ViT.

    Returns:
      One :class:`Entry` per variable.
    """
    names = {"ln1": "ln_1", "qkv_weight": "self_attention.in_proj_weight", "qkv_bias": "self_attention.in_proj_bias",
             "proj": "self_attention.out_proj", "ln2": "ln_2", "fc1": ("mlp.0", "mlp.linear_1"), "fc2": ("mlp.3", "mlp.linear_2")}
    return _fused_entries(model, ("conv_proj", "class_token", "encoder.pos_embedding"), "encoder.layers.encoder_layer_{i}",
                          names, "encoder.ln", "heads.head")


def timm_entries(model) -> List[Entry]:
    """The timm key map of ``model`` (a :class:`lamina.models.ViT`).

    Args:
      model: the lamina ViT.

    Returns:
      One :class:`Entry` per variable.
    """
    names = {"ln1": "norm1", "qkv_weight": "attn.qkv.weight", "qkv_bias": "attn.qkv.bias", "proj": "attn.proj",
             "ln2": "norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    return _fused_entries(model, ("patch_embed.proj", "cls_token", "pos_embed"), "blocks.{i}", names, "norm", "head")


def hf_entries(model, prefix: str = "vit.") -> List[Entry]:
    """The Hugging Face (Hub ``ViTForImageClassification``) key map of ``model``.

    Args:
      model: the lamina ViT.
      prefix: ``"vit."`` (``ViTForImageClassification``) or ``""`` (``ViTModel``).

    Returns:
      One :class:`Entry` per variable.
    """
    p = prefix
    out = _embeddings(f"{p}embeddings.patch_embeddings.projection", f"{p}embeddings.cls_token",
                      f"{p}embeddings.position_embeddings", model)
    for i in range(model.num_layers):
        ours, hub, v5 = f"blocks/{i}", f"{p}encoder.layer.{i}", f"{p}layers.{i}"
        out += _ln(f"{ours}/norm1", f"{hub}.layernorm_before", f"{v5}.layernorm_before")
        for name, old, new in (("query_proj", "query", "q_proj"), ("key_proj", "key", "k_proj"), ("value_proj", "value", "v_proj")):
            out += _linear(f"{ours}/attention/{name}", f"{hub}.attention.attention.{old}", f"{v5}.attention.{new}")
        out += _linear(f"{ours}/attention/output_proj", f"{hub}.attention.output.dense", f"{v5}.attention.o_proj")
        out += _ln(f"{ours}/norm2", f"{hub}.layernorm_after", f"{v5}.layernorm_after")
        out += _linear(f"{ours}/fc1", f"{hub}.intermediate.dense", f"{v5}.mlp.fc1")
        out += _linear(f"{ours}/fc2", f"{hub}.output.dense", f"{v5}.mlp.fc2")
    out += _ln("norm", f"{p}layernorm")
    out += _linear("head", "classifier", head=True)
    return out

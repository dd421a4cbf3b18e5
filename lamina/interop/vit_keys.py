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
           Entry("positions/embeddings", (pos,), "squeeze")]
    if model.pooling == "cls":
        out.append(Entry("cls_token", (cls,)))
    return out


def torchvision_entries(model) -> List[Entry]:
    """The torchvision key map of ``model`` (a :class:`lamina.models.ViT`).

    Args:
      model: the lamina ViT.

    Returns:
      One :class:`Entry` per variable.
    """
    out = _embeddings("conv_proj", "class_token", "encoder.pos_embedding", model)
    for i in range(model.num_layers):
        ours, theirs = f"blocks/{i}", f"encoder.layers.encoder_layer_{i}"
        out += _ln(f"{ours}/norm1", f"{theirs}.ln_1")
        out += _fused_qkv(ours, f"{theirs}.self_attention.in_proj_weight", f"{theirs}.self_attention.in_proj_bias")
        out += _linear(f"{ours}/attention/output_proj", f"{theirs}.self_attention.out_proj")
        out += _ln(f"{ours}/norm2", f"{theirs}.ln_2")
        out += _linear(f"{ours}/fc1", f"{theirs}.mlp.0", f"{theirs}.mlp.linear_1")
        out += _linear(f"{ours}/fc2", f"{theirs}.mlp.3", f"{theirs}.mlp.linear_2")
    out += _ln("norm", "encoder.ln")
    out += _linear("head", "heads.head", head=True)
    return out


def timm_entries(model) -> List[Entry]:
    """The timm key map of ``model`` (a :class:`lamina.models.ViT`).

    Args:
      model: the lamina ViT.

    Returns:
      One :class:`Entry` per variable.
    """
    out = _embeddings("patch_embed.proj", "cls_token", "pos_embed", model)
    for i in range(model.num_layers):
        ours, theirs = f"blocks/{i}", f"blocks.{i}"
        out += _ln(f"{ours}/norm1", f"{theirs}.norm1")
        out += _fused_qkv(ours, f"{theirs}.attn.qkv.weight", f"{theirs}.attn.qkv.bias")
        out += _linear(f"{ours}/attention/output_proj", f"{theirs}.attn.proj")
        out += _ln(f"{ours}/norm2", f"{theirs}.norm2")
        out += _linear(f"{ours}/fc1", f"{theirs}.mlp.fc1")
        out += _linear(f"{ours}/fc2", f"{theirs}.mlp.fc2")
    out += _ln("norm", "norm")
    out += _linear("head", "head", head=True)
    return out


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

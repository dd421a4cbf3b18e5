"""Key maps of ``lamina.models.ResNet``: torchvision / timm names, and Keras applications' names.

torchvision's and timm's ResNets share one ``state_dict`` layout
(``conv1``, ``bn1``, ``layer{1..4}.{b}.conv{k}`` / ``bn{k}``, ``downsample.{0,1}``,
``fc``); Keras' ``ResNet50/101/152`` use layer names
(``conv1_conv``, ``conv{2..5}_block{b}_{0..3}_{conv,bn}``, ``predictions``).
The maps follow the lamina model's own structure, so any depth works.
"""

from __future__ import annotations

from typing import List

from lamina.interop.keymap import Entry

__all__ = ["torch_entries", "applications_entries", "TORCH_TOLERATE"]

TORCH_TOLERATE = ("*num_batches_tracked",)

_BN_TORCH = (("scale", "weight"), ("offset", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))
_BN_H5 = (("scale", "gamma"), ("offset", "beta"), ("moving_mean", "moving_mean"), ("moving_variance", "moving_variance"))


def _bn(target: str, source: str, names: tuple) -> List[Entry]:
    sep = "." if names is _BN_TORCH else "/"
    return [Entry(f"{target}/{ours}", (f"{source}{sep}{theirs}",)) for ours, theirs in names]


def _blocks(model):  # (stage index, block index, block)
    for i, stage in enumerate(model.stages):
        for b, block in enumerate(stage.blocks):
            yield i, b, block


def torch_entries(model) -> List[Entry]:
    """The torchvision / timm key map of ``model`` (a :class:`lamina.models.ResNet`).

    Args:
      model: the lamina ResNet.

    Returns:
      One :class:`Entry` per variable.
    """
    out = [Entry("stem_conv/weights", ("conv1.weight",), "conv")] + _bn("stem_bn", "bn1", _BN_TORCH)
    for i, b, block in _blocks(model):
        ours, theirs = f"stages/{i}/blocks/{b}", f"layer{i + 1}.{b}"
        n = 3 if block.expansion == 4 else 2
        for k in range(n):
            out.append(Entry(f"{ours}/conv_{k}/weights", (f"{theirs}.conv{k + 1}.weight",), "conv"))
            out += _bn(f"{ours}/bn_{k}", f"{theirs}.bn{k + 1}", _BN_TORCH)
        if block.proj is not None:
            out.append(Entry(f"{ours}/proj/weights", (f"{theirs}.downsample.0.weight",), "conv"))
            out += _bn(f"{ours}/proj_bn", f"{theirs}.downsample.1", _BN_TORCH)
    out.append(Entry("classifier/weights", ("fc.weight",), "linear", head=True))
    out.append(Entry("classifier/bias", ("fc.bias",), head=True))
    return out


def applications_entries(model) -> List[Entry]:
    """The Keras applications (``ResNet50`` / ``101`` / ``152``) key map of ``model``.

    The first convolution's input channels are flipped (Keras' models take BGR,
    the lamina model RGB; see :data:`lamina.interop.archs.PREPROCESSING`).

    Args:
      model: the lamina ResNet (``variant="v1"``, ``conv_bias=True``).

    Returns:
      One :class:`Entry` per variable.
    """
    out = [Entry("stem_conv/weights", ("conv1_conv/kernel",), "bgr"), Entry("stem_conv/bias", ("conv1_conv/bias",))]
    out += _bn("stem_bn", "conv1_bn", _BN_H5)
    for i, b, block in _blocks(model):
        ours, theirs = f"stages/{i}/blocks/{b}", f"conv{i + 2}_block{b + 1}"
        convs = [(f"conv_{k}", f"bn_{k}", f"{theirs}_{k + 1}") for k in range(3 if block.expansion == 4 else 2)]
        if block.proj is not None:
            convs.append(("proj", "proj_bn", f"{theirs}_0"))
        for conv, bn, name in convs:
            out.append(Entry(f"{ours}/{conv}/weights", (f"{name}_conv/kernel",)))
            out.append(Entry(f"{ours}/{conv}/bias", (f"{name}_conv/bias",)))
            out += _bn(f"{ours}/{bn}", f"{name}_bn", _BN_H5)
    out.append(Entry("classifier/weights", ("predictions/kernel",), head=True))
    out.append(Entry("classifier/bias", ("predictions/bias",), head=True))
    return out

"""The benchmark networks, built in lamina, Keras 3, Sonnet 2 and PyTorch.

Every peer network is built by walking a built lamina model (``ConvNet(10)``,
``resnet18(10, stem="cifar")`` or ``MLP([512, 512], 10)``) and, when a
reference is given, starts from *its* initial weights (He-normal convs/hidden
layers, LeCun-normal classifier, zero biases, BatchNorm scale 1 / offset 0,
moving mean 0 / variance 1), so every framework trains the same function from
the same point: the first step's loss matches across frameworks (exactly up to
float rounding for the CNN and the MLP; for ResNet-18 the stride-2 3x3 convs
of Keras and Sonnet use TensorFlow's ``SAME`` padding (0 before, 1 after)
where lamina and PyTorch pad 1 on both sides, so its losses differ slightly).

Without a reference (the per-variant RSS child processes) each framework uses
its own default initialization; the Keras and Sonnet builders still build a
lamina model for the layer sizes (PyTorch's are written out and import no
TensorFlow).

Frameworks are imported inside the builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["NETS", "NetSpec", "lamina_model", "copy_lamina", "keras_model", "sonnet_model", "torch_model", "synthetic_batch"]

LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8  # one Adam for every framework
BN_MOMENTUM, BN_EPS = 0.9, 1e-5  # TF convention (PyTorch momentum = 1 - 0.9)


@dataclass(frozen=True)
class NetSpec:
    """A benchmark network: per-example input shape (NHWC / flat), batch size, classes."""

    name: str
    input_shape: Tuple[int, ...]
    batch: int
    num_classes: int = 10


NETS: Dict[str, NetSpec] = {
    "cnn": NetSpec("cnn", (28, 28, 1), 128),
    "resnet18": NetSpec("resnet18", (32, 32, 3), 64),
    "mlp": NetSpec("mlp", (784,), 256),
}


def synthetic_batch(spec: NetSpec, batch: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Random inputs in [0, 1) (float32, NHWC) and integer labels."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *spec.input_shape), dtype=np.float32)
    y = rng.integers(0, spec.num_classes, size=(batch,)).astype(np.int32)
    return x, y


# ---------------------------------------------------------------- lamina
def lamina_model(net: str, seed: int = 0, package: str = "lamina") -> Any:
    """A fresh, built lamina model for ``net`` (seeded); ``package``: ``lamina_base`` for ``--base``."""
    import importlib

    import tensorflow as tf

    lm = importlib.import_module(package)

    spec = NETS[net]
    lm.set_seed(seed)
    if net == "cnn":
        model = lm.models.ConvNet(spec.num_classes)
    elif net == "resnet18":
        model = lm.models.resnet18(spec.num_classes, stem="cifar")
    elif net == "mlp":
        model = lm.models.MLP([512, 512], spec.num_classes)
    else:
        raise ValueError(f"unknown net {net!r}; expected one of {sorted(NETS)}")
    model(tf.zeros((1, *spec.input_shape)), training=False)
    return model


def copy_lamina(dst: Any, src: Any) -> None:
    """Assigns ``src``'s variable values to the same-structured lamina model ``dst``."""
    for d, s in zip(dst.variables, src.variables):
        d.assign(s)


def _np(var: Any) -> Optional[np.ndarray]:
    return None if var is None else np.asarray(var.numpy())


def _layers(ref: Any, net: str) -> List[Tuple[str, Any]]:
    """The lamina model's layers in forward order, as ``(kind, layer)``.

    Kinds: ``conv`` (3x3/1, relu), ``pool``, ``flatten``, ``dense_relu``, ``dense``
    for the CNN and MLP; ResNet-18 is walked by :func:`_resnet_blocks`.
    """
    out: List[Tuple[str, Any]] = []
    if net == "cnn":
        for block in ref.blocks:
            out += [("conv", c) for c in block.convs] + [("pool", block.pool)]
        out += [("flatten", None), ("dense_relu", ref.hidden), ("dense", ref.classifier)]
    elif net == "mlp":
        out += [("dense_relu", l) for l in ref.linears] + [("dense", ref.output)]
    return out


def _resnet_blocks(ref: Any) -> List[Any]:
    return [b for stage in ref.stages for b in stage.blocks]


# ----------------------------------------------------------------- Keras
def keras_model(net: str, ref: Any = None, policy: str = "float32") -> Any:
    """The Keras 3 functional model of ``net`` (dtype policy ``policy``), weights from ``ref``."""
    import keras
    from keras import layers as L

    spec = NETS[net]
    copies: List[Tuple[Any, List[np.ndarray]]] = []

    def take(layer: Any, lam: Any, kernel_fix: Callable[[np.ndarray], np.ndarray] = lambda w: w) -> Any:
        if ref is not None:
            ws = [kernel_fix(_np(lam.weights))] + ([_np(lam.bias)] if getattr(lam, "bias", None) is not None else [])
            copies.append((layer, ws))
        return layer

    inp = keras.Input(spec.input_shape)
    x = inp
    if net in ("cnn", "mlp"):
        src = _layers(ref if ref is not None else lamina_model(net), net)
        for kind, lam in src:
            if kind == "conv":
                x = take(L.Conv2D(lam.num_filters, 3, padding="same", activation="relu", dtype=policy), lam)(x)
            elif kind == "pool":
                x = L.MaxPooling2D(2, dtype=policy)(x)
            elif kind == "flatten":
                x = L.Flatten(dtype=policy)(x)
            else:
                act = "relu" if kind == "dense_relu" else None
                x = take(L.Dense(lam.num_units, activation=act, dtype=policy), lam)(x)
    else:
        skel = ref if ref is not None else lamina_model(net)

        def conv(x: Any, lam: Any) -> Any:
            k, s = lam.kernel_size[0], lam.strides[0]
            layer = L.Conv2D(lam.num_filters, k, strides=s, padding="same", use_bias=False, dtype=policy)
            return take(layer, lam)(x)

        def bn(x: Any) -> Any:
            return L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPS, dtype=policy)(x)

        x = L.ReLU(dtype=policy)(bn(conv(x, skel.stem_conv)))
        for b in _resnet_blocks(skel):
            y = L.ReLU(dtype=policy)(bn(conv(x, b.conv_0)))
            y = bn(conv(y, b.conv_1))
            sc = bn(conv(x, b.proj)) if b.proj is not None else x
            x = L.ReLU(dtype=policy)(L.Add(dtype=policy)([y, sc]))
        x = L.GlobalAveragePooling2D(dtype=policy)(x)
        x = take(L.Dense(spec.num_classes, dtype=policy), skel.classifier)(x)
    model = keras.Model(inp, x, name=f"keras_{net}")
    for layer, ws in copies:
        layer.set_weights(ws)
    return model


# ---------------------------------------------------------------- Sonnet
def sonnet_model(net: str, ref: Any = None) -> Any:
    """The Sonnet 2 module of ``net`` (float32), weights from ``ref``; call ``m(x, is_training)``."""
    import sonnet as snt
    import tensorflow as tf

    spec = NETS[net]
    skel = ref if ref is not None else lamina_model(net)

    class SonnetNet(snt.Module):
        """``net`` as a Sonnet module (layers in forward order)."""

        def __init__(self) -> None:
            super().__init__(name=f"sonnet_{net}")
            self.pairs: List[Tuple[Any, Any]] = []  # (sonnet layer, lamina layer) for the weight copy
            if net in ("cnn", "mlp"):
                self.ops: List[Tuple[str, Any]] = []
                for kind, lam in _layers(skel, net):
                    if kind == "conv":
                        layer = snt.Conv2D(lam.num_filters, 3, padding="SAME")
                    elif kind in ("dense", "dense_relu"):
                        layer = snt.Linear(lam.num_units)
                    else:
                        layer = None
                    if layer is not None:
                        self.pairs.append((layer, lam))
                    self.ops.append((kind, layer))
            else:
                def conv(lam: Any) -> Any:
                    layer = snt.Conv2D(lam.num_filters, lam.kernel_size[0], stride=lam.strides[0],
                                       padding="SAME", with_bias=False)
                    self.pairs.append((layer, lam))
                    return layer

                def bn() -> Any:
                    return snt.BatchNorm(True, True, decay_rate=BN_MOMENTUM, eps=BN_EPS)

                self.stem = (conv(skel.stem_conv), bn())
                self.blocks = []
                for b in _resnet_blocks(skel):
                    proj = (conv(b.proj), bn()) if b.proj is not None else None
                    self.blocks.append(((conv(b.conv_0), bn()), (conv(b.conv_1), bn()), proj))
                self.head = snt.Linear(spec.num_classes)
                self.pairs.append((self.head, skel.classifier))

        def __call__(self, x: tf.Tensor, is_training: bool) -> tf.Tensor:
            if net in ("cnn", "mlp"):
                for kind, layer in self.ops:
                    if kind == "conv" or kind == "dense_relu":
                        x = tf.nn.relu(layer(x))
                    elif kind == "dense":
                        x = layer(x)
                    elif kind == "pool":
                        x = tf.nn.max_pool2d(x, 2, 2, "VALID")
                    elif kind == "flatten":
                        x = snt.Flatten()(x)
                return x

            def cb(pair: Any, h: tf.Tensor) -> tf.Tensor:
                return pair[1](pair[0](h), is_training=is_training)

            x = tf.nn.relu(cb(self.stem, x))
            for c0, c1, proj in self.blocks:
                y = tf.nn.relu(cb(c0, x))
                y = cb(c1, y)
                x = tf.nn.relu(y + (cb(proj, x) if proj is not None else x))
            return self.head(tf.reduce_mean(x, axis=[1, 2]))

    model = SonnetNet()
    model(tf.zeros((1, *spec.input_shape)), is_training=False)
    if ref is not None:
        for layer, lam in model.pairs:
            layer.w.assign(lam.weights)
            if getattr(layer, "with_bias", True) and getattr(lam, "bias", None) is not None:
                layer.b.assign(lam.bias)
    return model


# --------------------------------------------------------------- PyTorch
def torch_model(net: str, ref: Any = None) -> Any:
    """The PyTorch ``nn.Module`` of ``net`` (NCHW, float32), weights from ``ref``."""
    import torch
    from torch import nn

    spec = NETS[net]
    skel = ref  # without a reference, only the layer sizes are needed: hard-coded below
    pairs: List[Tuple[Any, Any, str]] = []

    def conv(cin: int, cout: int, k: int, s: int, bias: bool, lam: Any) -> nn.Conv2d:
        layer = nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=bias)
        pairs.append((layer, lam, "conv"))
        return layer

    def linear(cin: int, cout: int, lam: Any, kind: str = "linear") -> nn.Linear:
        layer = nn.Linear(cin, cout)
        pairs.append((layer, lam, kind))
        return layer

    def get(obj: Any, path: str) -> Any:
        if obj is None:
            return None
        for part in path.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        return obj

    if net == "cnn":
        model = nn.Sequential(
            conv(1, 32, 3, 1, True, get(skel, "blocks.0.convs.0")), nn.ReLU(),
            conv(32, 32, 3, 1, True, get(skel, "blocks.0.convs.1")), nn.ReLU(), nn.MaxPool2d(2),
            conv(32, 64, 3, 1, True, get(skel, "blocks.1.convs.0")), nn.ReLU(),
            conv(64, 64, 3, 1, True, get(skel, "blocks.1.convs.1")), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            linear(7 * 7 * 64, 128, get(skel, "hidden"), "linear_nhwc"), nn.ReLU(),
            linear(128, spec.num_classes, get(skel, "classifier")),
        )
    elif net == "mlp":
        model = nn.Sequential(
            linear(784, 512, get(skel, "linears.0")), nn.ReLU(),
            linear(512, 512, get(skel, "linears.1")), nn.ReLU(),
            linear(512, spec.num_classes, get(skel, "output")),
        )
    elif net == "resnet18":

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, eps=BN_EPS, momentum=1.0 - BN_MOMENTUM)

        class Block(nn.Module):
            def __init__(self, cin: int, cout: int, stride: int, lam: Any) -> None:
                super().__init__()
                self.c0, self.b0 = conv(cin, cout, 3, stride, False, get(lam, "conv_0")), bn(cout)
                self.c1, self.b1 = conv(cout, cout, 3, 1, False, get(lam, "conv_1")), bn(cout)
                self.proj = None
                if stride != 1 or cin != cout:
                    self.proj = nn.Sequential(conv(cin, cout, 1, stride, False, get(lam, "proj")), bn(cout))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                y = torch.relu(self.b0(self.c0(x)))
                y = self.b1(self.c1(y))
                return torch.relu(y + (self.proj(x) if self.proj is not None else x))

        class ResNet18(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.stem = nn.Sequential(conv(3, 64, 3, 1, False, get(skel, "stem_conv")), bn(64), nn.ReLU())
                blocks, cin = [], 64
                for i, width in enumerate((64, 128, 256, 512)):
                    for j in range(2):
                        stride = 2 if (i > 0 and j == 0) else 1
                        blocks.append(Block(cin, width, stride, get(skel, f"stages.{i}.blocks.{j}")))
                        cin = width
                self.blocks = nn.Sequential(*blocks)
                self.head = linear(512, spec.num_classes, get(skel, "classifier"))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

        model = ResNet18()
    else:
        raise ValueError(f"unknown net {net!r}")
    if ref is not None:
        with torch.no_grad():
            for layer, lam, kind in pairs:
                w = _np(lam.weights)
                if kind == "conv":
                    w = w.transpose(3, 2, 0, 1)  # HWIO -> OIHW
                elif kind == "linear_nhwc":
                    # lamina flattens (H, W, C); PyTorch flattens (C, H, W).
                    h = w.reshape(7, 7, 64, -1).transpose(2, 0, 1, 3).reshape(w.shape[0], -1)
                    w = h.T
                else:
                    w = w.T
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                if layer.bias is not None and getattr(lam, "bias", None) is not None:
                    layer.bias.copy_(torch.from_numpy(_np(lam.bias)))
    return model

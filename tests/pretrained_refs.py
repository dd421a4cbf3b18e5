"""Reference models for the pretrained-weights tests: torchvision, timm, transformers and Keras, random weights.

torchvision 0.28's compiled operators (``torchvision::nms`` ...) do not load beside the
CPU build of torch 2.13, and its import then fails in ``torch.library.register_fake``
("operator torchvision::nms does not exist"). The model definitions are pure Python, so
:func:`import_torchvision` imports torchvision with ``register_fake`` made tolerant of
that one error (the fake kernels of the missing operators are then simply not
registered; no model here uses them). timm and transformers import torchvision too,
so they go through the same helper.
"""

import importlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

_patched = False


def _tolerate_missing_ops():
    global _patched
    if _patched:
        return
    import torch.library as library

    original = library.register_fake

    def register_fake(op, fn=None, **kwargs):
        def decorate(func):
            try:
                return original(op, **kwargs)(func)
            except RuntimeError as e:
                if "does not exist" not in str(e):
                    raise
                return func

        return decorate if fn is None else decorate(fn)

    library.register_fake = register_fake
    _patched = True


def import_torchvision():
    """``torchvision``, imported beside CPU torch (see the module docstring); skips the test if absent."""
    if "torchvision" not in sys.modules:
        _tolerate_missing_ops()
    return pytest.importorskip("torchvision")


def import_package(name):
    """``timm`` or ``transformers`` (which import torchvision), or skip the test."""
    import_torchvision()
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.skip(f"{name} is not installed")


def randomize(module, seed=0):
    """Gives a torch module random BatchNorm statistics / affine parameters and non-zero heads.

    torchvision initializes BatchNorm to the identity and ViT heads to zeros, which would
    hide a wrong mapping of those tensors.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
        for name, p in module.named_parameters():
            if float(p.abs().max()) == 0.0:  # zero-initialized heads, class tokens, biases
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def save_state_dict(module, path):
    """Writes a torch module's state_dict with safetensors (contiguous copies)."""
    import safetensors.torch

    safetensors.torch.save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def torch_logits(module, x_nchw):
    """The torch module's outputs on a NumPy NCHW batch (inference mode)."""
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(x_nchw)))
    out = getattr(out, "logits", out)
    return out.numpy()


def lamina_logits(model, x_nchw):
    """A lamina model's outputs on a NumPy NCHW batch, transposed to its data format."""
    import tensorflow as tf

    x = x_nchw if model.data_format == "channels_first" else x_nchw.transpose(0, 2, 3, 1)
    return model(tf.constant(np.ascontiguousarray(x)), training=False).numpy()


def difference(ours, ref):
    """``(max |ours - ref|, that divided by max |ref|)``."""
    diff = float(np.max(np.abs(np.asarray(ours) - np.asarray(ref))))
    return diff, diff / max(float(np.max(np.abs(ref))), 1e-12)


def images(n, size, seed=0):
    """A batch of normalized-looking NCHW float32 images."""
    return np.random.RandomState(seed).randn(n, 3, size, size).astype(np.float32)

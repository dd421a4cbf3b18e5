"""Measures the importers' parity: reference model (random weights) vs the lamina model it loads into.

Prints one row per importer and data format: max |difference| of the logits, that
divided by max |reference logit|, and the round trip back to torchvision. Inputs are
the smallest sizes used in the tests (64x64 ResNets, 32x32 ViTs with 16x16 patches);
run from the repository root: ``python benchmarks/pretrained_parity.py``. The figures
are recorded in docs/pretrained.md.
"""

import os
import platform
import sys
import tempfile

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import lamina as lm  # noqa: E402
from pretrained_refs import (  # noqa: E402
    difference, images, import_package, import_torchvision, lamina_logits, randomize, save_state_dict, torch, torch_logits,
)

SMALL = dict(patch_size=16, model_dim=32, num_heads=4, num_layers=2, mlp_dim=64, image_size=32)


def row(name, ctor, diffs, trip="-"):
    for fmt, (a, r) in diffs.items():
        print(f"| {name} | {ctor} | {fmt} | {a:.1e} | {r:.1e} | {trip} |")


def both(make, path, x, ref, **kw):
    out = {}
    for fmt in ("channels_last", "channels_first"):
        model = make(fmt)
        lm.interop.load_pretrained(model, path, **kw)
        out[fmt] = difference(lamina_logits(model, x), ref)
    return out, model


def trip(model, fresh, tmp):
    import safetensors.torch

    path = lm.interop.save_state_dict(model, os.path.join(tmp, "back.safetensors"))
    fresh.load_state_dict(safetensors.torch.load_file(path), strict=True)
    x = images(2, 64 if "resnet" in type(fresh).__name__.lower() else 32, seed=7)
    a, r = difference(torch_logits(fresh.eval(), x), lamina_logits(model, x))
    return f"{a:.1e} ({r:.1e})"


def main():
    print(f"CPU: {platform.processor() or platform.machine()}; torch {torch.__version__}, tensorflow {tf.__version__}")
    print("| checkpoint | lamina constructor | data format | max abs diff | relative | round trip to torch: abs (relative) |")
    print("|---|---|---|---|---|---|")
    tv = import_torchvision().models
    timm = import_package("timm")
    transformers = import_package("transformers")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
            torch.manual_seed(0)
            ref_model = randomize(getattr(tv, arch)(weights=None), 0)
            path = save_state_dict(ref_model, os.path.join(tmp, f"{arch}.safetensors"))
            x = images(2, 64)
            diffs, model = both(lambda f: lm.interop.create_model(arch, "torchvision", data_format=f), path, x,
                                torch_logits(ref_model, x))
            row(f"torchvision {arch}", f'create_model("{arch}") = models.{arch}(1000)', diffs,
                trip(model, getattr(tv, arch)(weights=None), tmp))
        torch.manual_seed(0)
        ref_model = randomize(timm.create_model("resnet50", pretrained=False), 0)
        path = save_state_dict(ref_model, os.path.join(tmp, "timm50.safetensors"))
        x = images(2, 64)
        diffs, _ = both(lambda f: lm.interop.create_model("resnet50", "timm", data_format=f), path, x, torch_logits(ref_model, x))
        row("timm resnet50", 'create_model("resnet50", "timm")', diffs)

        import keras
        k = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
        rng = np.random.RandomState(0)
        for layer in k.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                g, b, m, v = layer.get_weights()
                layer.set_weights([rng.uniform(.5, 1.5, g.shape), rng.uniform(-.5, .5, b.shape),
                                   rng.uniform(-.5, .5, m.shape), rng.uniform(.5, 2, v.shape)])
        kpath = os.path.join(tmp, "k.weights.h5")
        k.save_weights(kpath)
        rgb = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
        ref = k(rgb[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32), training=False).numpy()
        xin = rgb - np.array([123.68, 116.779, 103.939], np.float32)
        diffs = {}
        for fmt in ("channels_last", "channels_first"):
            model = lm.interop.create_model("resnet50", "keras", data_format=fmt)
            lm.interop.load_pretrained(model, kpath)
            xi = xin if fmt == "channels_last" else xin.transpose(0, 3, 1, 2)
            diffs[fmt] = difference(model(tf.constant(np.ascontiguousarray(xi))).numpy(), ref)
        row("Keras ResNet50 .weights.h5", 'create_model("resnet50", "keras") (variant="v1", conv_bias=True)', diffs)

        vt = import_torchvision().models.vision_transformer
        torch.manual_seed(0)
        ref_model = randomize(vt.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32,
                                                   mlp_dim=64, num_classes=7), 0)
        path = save_state_dict(ref_model, os.path.join(tmp, "vit.safetensors"))
        x = images(2, 32)
        diffs, model = both(lambda f: lm.models.ViT(7, norm_eps=1e-6, data_format=f, **SMALL), path, x, torch_logits(ref_model, x))
        fresh = vt.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=7)
        row("torchvision VisionTransformer (vit_b_16 names, small)", "ViT(norm_eps=1e-6, ...)", diffs, trip(model, fresh, tmp))
        torch.manual_seed(0)
        ref_model = randomize(timm.create_model("vit_base_patch16_224", pretrained=False, img_size=32, depth=2, embed_dim=32,
                                                num_heads=4, mlp_ratio=2.0, num_classes=7), 0)
        path = save_state_dict(ref_model, os.path.join(tmp, "tvit.safetensors"))
        diffs, _ = both(lambda f: lm.models.ViT(7, norm_eps=1e-6, data_format=f, **SMALL), path, x, torch_logits(ref_model, x))
        row("timm vit_base_patch16_224 (small)", "ViT(norm_eps=1e-6, ...)", diffs)
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        from test_interop_vit import _hub_name
        import safetensors.torch
        cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                     image_size=32, patch_size=16, num_labels=7)
        torch.manual_seed(0)
        ref_model = randomize(transformers.ViTForImageClassification(cfg), 0)
        path = os.path.join(tmp, "hf.safetensors")
        safetensors.torch.save_file({_hub_name(k): v.contiguous() for k, v in ref_model.state_dict().items()}, path)
        diffs, _ = both(lambda f: lm.models.ViT(7, norm_eps=1e-12, data_format=f, **SMALL), path, x, torch_logits(ref_model, x))
        row("HF ViTForImageClassification (Hub names, small)", "ViT(norm_eps=1e-12, ...)", diffs)


if __name__ == "__main__":
    main()

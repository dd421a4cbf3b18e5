"""ViT checkpoints from torchvision, timm and Hugging Face into lamina (random weights), and back.

The references are the libraries' own models, made small (image 32, patch 16, 2 blocks)
with the same module names; the full-size vit_b_16 / vit_l_16 are checked for names and
shapes only (the torch model on the meta device, no forward).
"""

import json

import numpy as np
import pytest
import tensorflow as tf

import lamina as lm
from lamina.interop import keymap, vit_keys
from pretrained_refs import (
    difference,
    images,
    import_package,
    import_torchvision,
    lamina_logits,
    randomize,
    save_state_dict,
    torch,
    torch_logits,
)

FORMATS = ("channels_last", "channels_first")
TOL = 1e-4
SMALL = dict(patch_size=16, model_dim=32, num_heads=4, num_layers=2, mlp_dim=64, image_size=32)


def _torchvision_vit(seed=0, classes=7):
    vt = import_torchvision().models.vision_transformer
    torch.manual_seed(seed)
    ref = vt.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                               num_classes=classes)
    return randomize(ref, seed)


def test_torchvision_vit_matches_in_both_data_formats_and_round_trips(tmp_path):
    ref_model = _torchvision_vit()
    path = save_state_dict(ref_model, tmp_path / "vit.safetensors")
    x = images(3, 32)
    ref = torch_logits(ref_model, x)
    for data_format in FORMATS:
        model = lm.models.ViT(7, norm_eps=1e-6, data_format=data_format, **SMALL)
        report = lm.interop.load_pretrained(model, path)
        assert report.source == "torchvision" and report.head_loaded and not report.skipped
        assert report.notes == ["custom ViT: num_heads=4 cannot be checked from the weights"]
        _, rel = difference(lamina_logits(model, x), ref)
        assert rel <= TOL, (data_format, rel)
    # Round trip: lamina -> torchvision names -> a fresh torchvision model (strict load).
    import safetensors.torch

    out = lm.interop.save_state_dict(model, str(tmp_path / "back.safetensors"))
    back = _torchvision_vit(seed=9)
    back.load_state_dict(safetensors.torch.load_file(out), strict=True)
    assert difference(torch_logits(back, x), lamina_logits(model, x))[1] <= TOL


def test_torchvision_published_mlp_spelling_is_read(tmp_path):
    """torchvision's .pth files name the MLP mlp.linear_1 / mlp.linear_2 (converted on load by torchvision)."""
    import safetensors.torch

    ref_model = _torchvision_vit()
    state = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
             for k, v in ref_model.state_dict().items()}
    path = str(tmp_path / "old.safetensors")
    safetensors.torch.save_file(state, path)
    model = lm.models.ViT(7, norm_eps=1e-6, **SMALL)
    lm.interop.load_pretrained(model, path)
    x = images(2, 32)
    assert difference(lamina_logits(model, x), torch_logits(ref_model, x))[1] <= TOL


def test_timm_vit_matches_and_features_are_timm_intermediates(tmp_path):
    timm = import_package("timm")
    torch.manual_seed(0)
    ref_model = randomize(timm.create_model("vit_base_patch16_224", pretrained=False, img_size=32, depth=2,
                                            embed_dim=32, num_heads=4, mlp_ratio=2.0, num_classes=5), 0)
    assert ref_model.blocks[0].norm1.eps == 1e-6
    path = save_state_dict(ref_model, tmp_path / "timm_vit.safetensors")
    x = images(2, 32, seed=4)
    ref = torch_logits(ref_model, x)
    with torch.no_grad():
        ref_maps = ref_model.forward_intermediates(torch.from_numpy(x), indices=[0, 1], norm=False,
                                                   output_fmt="NCHW", intermediates_only=True)
    for data_format in FORMATS:
        model = lm.models.ViT(5, norm_eps=1e-6, data_format=data_format, **SMALL)
        report = lm.interop.load_pretrained(model, path)
        assert report.source == "timm" and report.preprocessing["mean"] == [0.5, 0.5, 0.5]
        _, rel = difference(lamina_logits(model, x), ref)
        assert rel <= TOL, (data_format, rel)
        xin = x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)
        maps = model.features(tf.constant(xin), indices=[0, -1])
        for ours, theirs in zip(maps, ref_maps):
            ours = ours.numpy() if data_format == "channels_first" else ours.numpy().transpose(0, 3, 1, 2)
            assert ours.shape == tuple(theirs.shape) == (2, 32, 2, 2)
            assert difference(ours, theirs.numpy())[1] <= TOL


def _hub_name(key):
    """transformers 5 module names -> the names stored in Hub files such as google/vit-base-patch16-224.

    The inverse of transformers' own ViTModel conversion mapping (conversion_mapping.py:
    encoder.layer. -> layers., attention.query -> q_proj, attention.output.dense ->
    attention.o_proj, intermediate.dense -> mlp.fc1, output.dense -> mlp.fc2).
    """
    for new, old in ((".layers.", ".encoder.layer."), ("attention.q_proj", "attention.attention.query"),
                     ("attention.k_proj", "attention.attention.key"), ("attention.v_proj", "attention.attention.value"),
                     ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                     ("mlp.fc2", "output.dense")):
        key = key.replace(new, old)
    return key


def test_hugging_face_vit_hub_checkpoint_matches(tmp_path):
    transformers = import_package("transformers")
    import safetensors.torch

    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    image_size=32, patch_size=16, num_labels=6)
    torch.manual_seed(0)
    ref_model = randomize(transformers.ViTForImageClassification(config), 0)
    hub = {_hub_name(k): v.contiguous() for k, v in ref_model.state_dict().items()}
    assert "vit.encoder.layer.1.attention.attention.query.weight" in hub and "classifier.bias" in hub
    folder = tmp_path / "hub"
    folder.mkdir()
    safetensors.torch.save_file(hub, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(folder))
    # transformers itself reads the Hub spelling back with nothing missing or unexpected.
    reloaded, info = transformers.ViTForImageClassification.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    x = images(2, 32, seed=5)
    ref = torch_logits(ref_model, x)
    assert difference(torch_logits(reloaded.eval(), x), ref)[0] == 0.0
    for data_format in FORMATS:
        model = lm.models.ViT(6, norm_eps=1e-12, data_format=data_format, **SMALL)
        report = lm.interop.load_pretrained(model, str(folder / "model.safetensors"))
        assert report.source == "hf" and report.preprocessing["std"] == [0.5, 0.5, 0.5]
        _, rel = difference(lamina_logits(model, x), ref)
        assert rel <= TOL, (data_format, rel)
    # The in-memory transformers 5 names load too.
    v5 = str(tmp_path / "v5.safetensors")
    safetensors.torch.save_file({k: v.contiguous() for k, v in ref_model.state_dict().items()}, v5)
    model = lm.models.ViT(6, norm_eps=1e-12, **SMALL)
    lm.interop.load_pretrained(model, v5, source="hf")
    assert difference(lamina_logits(model, x), ref)[1] <= TOL
    # A ViTModel file (no classifier, a pooler) loads as a backbone, and says what it left out.
    backbone = {k[len("vit."):]: v for k, v in hub.items() if k.startswith("vit.")}
    backbone.update({"pooler.dense.weight": torch.zeros(32, 32), "pooler.dense.bias": torch.zeros(32)})
    vm = str(tmp_path / "vitmodel.safetensors")
    safetensors.torch.save_file(backbone, vm)
    report = lm.interop.load_pretrained(lm.models.ViT(6, norm_eps=1e-12, **SMALL), vm)
    assert report.notes == ["the checkpoint has no classifier head; the model's head (6 classes) keeps its initialization",
                            "dropped the checkpoint's pooler.dense (Hugging Face ViTModel); lamina's ViT has no pooler",
                            "custom ViT: num_heads=4 cannot be checked from the weights"]


def test_vit_options_the_weights_cannot_show_are_checked(tmp_path):
    path = save_state_dict(_torchvision_vit(), tmp_path / "vit.safetensors")
    with pytest.raises(ValueError, match=r"torchvision ViT checkpoints use LayerNorm eps 1e-06, the model has norm_eps=1e-05; "
                                         r"build it with norm_eps=1e-06"):
        lm.interop.load_pretrained(lm.models.ViT(7, **SMALL), path)
    with pytest.raises(ValueError, match="pooling='cls'"):
        lm.interop.load_pretrained(lm.models.ViT(7, norm_eps=1e-6, pooling="mean", **SMALL), path)
    other = dict(SMALL, image_size=(48, 32))  # a 3x2 grid: no square resampling of the 2x2 table fits
    with pytest.raises(ValueError, match=r"misshapen 1: encoder.pos_embedding \(1, 5, 32\) -> positions/embeddings expects \(7, 32\)"):
        lm.interop.load_pretrained(lm.models.ViT(7, norm_eps=1e-6, **other), path)
    # No image size given: the checkpoint's positions give it.
    model = lm.models.ViT(7, norm_eps=1e-6, **dict(SMALL, image_size=None))
    lm.interop.load_pretrained(model, path)
    assert model.image_size == (32, 32)


@pytest.mark.parametrize("arch", ["vit_b_16", "vit_b_32"])
def test_full_size_torchvision_vit_key_map(arch):
    _check_full_size(arch)


@pytest.mark.slow
def test_vit_l_16_key_map():
    _check_full_size("vit_l_16")


def _check_full_size(arch):
    models = import_torchvision().models
    with torch.device("meta"):
        ref = getattr(models, arch)(weights=None)
    state = ref.state_dict()
    assert ref.encoder.layers[0].ln_1.eps == 1e-6
    fake = {k: np.broadcast_to(np.zeros((), np.float32), tuple(v.shape)) for k, v in state.items()}
    model = lm.interop.create_model(arch, "torchvision")
    model(tf.zeros((1, 224, 224, 3)))
    shapes = {k: tuple(v.shape) for k, v in model.variable_paths().items()}
    result = keymap.apply_map(vit_keys.torchvision_entries(model), fake, shapes)
    assert sorted(result.weights) == sorted(shapes) and sorted(result.used) == sorted(state)
    assert model.num_heads == ref.encoder.layers[0].self_attention.num_heads


def test_convert_file_records_arch_options_and_preprocessing(tmp_path):
    src = save_state_dict(_torchvision_vit(classes=1000), tmp_path / "vit.safetensors")
    # A small ViT is no registered architecture: convert needs one, so check the ResNet path in test_cli_convert
    # and here that a converted ViT file round-trips its metadata through load_pretrained.
    model = lm.models.ViT(1000, norm_eps=1e-6, **SMALL)
    report = lm.interop.load_pretrained(model, src)
    dst = str(tmp_path / "lamina.safetensors")
    lm.save_weights(model, dst, {"source": "torchvision", "preprocessing": json.dumps(report.preprocessing),
                                 "model_options": json.dumps({"norm_eps": 1e-6})})
    again = lm.models.ViT(10, norm_eps=1e-6, **SMALL)
    report = lm.interop.load_pretrained(again, dst)
    assert report.source == "torchvision" and report.preprocessing["crop"] == 224
    assert report.notes == ["dropped the checkpoint's head (1000 classes); the new head has 10"]
    np.testing.assert_array_equal(again.blocks[1].fc2.weights.numpy(), model.blocks[1].fc2.weights.numpy())
    with pytest.raises(ValueError, match="LayerNorm eps"):
        lm.interop.load_pretrained(lm.models.ViT(10, **SMALL), dst)


def test_a_vit_checkpoint_loads_at_another_image_size_with_resampled_positions(tmp_path):
    """Fine-tuning at 64x64 from 32x32 weights: the 2x2 position grid becomes 4x4 (the class token row kept)."""
    ref_model = _torchvision_vit()
    path = save_state_dict(ref_model, tmp_path / "vit.safetensors")
    table = ref_model.encoder.pos_embedding.detach().numpy()[0]  # (1 + 2*2, 32)
    bigger = lm.models.ViT(7, norm_eps=1e-6, **{**SMALL, "image_size": 64})
    lm.interop.load_pretrained(bigger, path)
    got = bigger.positions.embeddings.numpy()
    assert got.shape == (1 + 4 * 4, 32)
    np.testing.assert_array_equal(got[0], table[0])  # the class token's position is not a grid cell
    np.testing.assert_allclose(got, keymap.resample_positions(table, (17, 32)), atol=1e-6)
    # bilinear resampling is exactly PyTorch's interpolate(align_corners=False)
    grid = torch.tensor(table[1:].reshape(1, 2, 2, 32)).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(16, 32).numpy()
    np.testing.assert_allclose(keymap.resample_positions(table, (17, 32), "bilinear")[1:], expected, atol=1e-6)
    assert np.isfinite(lamina_logits(bigger, images(2, 64))).all()

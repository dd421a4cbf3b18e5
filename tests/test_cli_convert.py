"""``lamina convert``: a torchvision checkpoint in, a lamina safetensors file out; errors are one line, exit 2."""

import json

import pytest

import lamina as lm
from lamina.cli import main
from lamina.export.safetensors import read_metadata
from pretrained_refs import difference, images, import_torchvision, lamina_logits, randomize, save_state_dict, torch, torch_logits


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    models = import_torchvision().models
    torch.manual_seed(0)
    ref = randomize(models.resnet18(weights=None), 0)
    return ref, save_state_dict(ref, tmp_path_factory.mktemp("ckpt") / "resnet18.safetensors")


def test_convert_writes_a_lamina_file_with_arch_options_and_preprocessing(resnet18_file, tmp_path, capsys):
    ref, src = resnet18_file
    dst = str(tmp_path / "r18.safetensors")
    assert main(["convert", src, "--to", dst, "--arch", "resnet18", "--source", "torchvision"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"loaded 102 tensors from {src} (torchvision resnet18); skipped 20") and dst in out.out
    meta = read_metadata(dst)
    assert meta["format"] == "lamina" and meta["arch"] == "resnet18" and meta["source"] == "torchvision"
    assert json.loads(meta["model_options"])["variant"] == "v1.5" and meta["num_classes"] == "1000"
    assert json.loads(meta["preprocessing"])["std"] == [0.229, 0.224, 0.225]
    # The file loads back with lm.load_weights (the same variable paths) and gives torchvision's logits.
    model = lm.interop.create_model("resnet18")
    lm.load_weights(model, dst)
    x = images(2, 64)
    assert difference(lamina_logits(model, x), torch_logits(ref, x))[1] <= 1e-4
    # ... and through load_pretrained, which reads the metadata (fine-tuning to 10 classes drops the head).
    report = lm.interop.load_pretrained(lm.interop.create_model("resnet18", num_classes=10), dst)
    assert report.source == "torchvision" and report.arch == "resnet18" and report.preprocessing["crop"] == 224
    assert report.notes == ["dropped the checkpoint's head classifier (1000 classes); the new head has 10"]


def test_convert_with_a_new_head_notes_it(resnet18_file, tmp_path, capsys):
    _, src = resnet18_file
    dst = str(tmp_path / "r18-10.safetensors")
    assert main(["convert", src, "--to", dst, "--arch", "resnet18", "--num-classes", "10", "--data-format", "channels_first"]) == 0
    err = capsys.readouterr().err
    assert err.strip() == "lamina: note: dropped the checkpoint's head fc (1000 classes); the new head has 10"
    assert read_metadata(dst)["num_classes"] == "10"


@pytest.mark.parametrize("argv, message", [
    (["--arch", "resnet50"], r"torchvision checkpoint does not fit ResNet 'resnet50': missing"),
    (["--arch", "resnet9"], r"unknown architecture 'resnet9'"),
    (["--arch", "resnet18", "--source", "hf"], r"source 'hf' has no resnet checkpoints"),
    (["--arch", "resnet18", "--source", "keras"], r"the names are torchvision's, not keras's"),
])
def test_convert_errors_are_one_line_exit_2(resnet18_file, tmp_path, capsys, argv, message):
    import re

    _, src = resnet18_file
    assert main(["convert", src, "--to", str(tmp_path / "x.safetensors"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lamina: error: ") and re.search(message, err), err
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_missing_file_and_bad_output_name(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.pth"), "--to", str(tmp_path / "x.safetensors"), "--arch", "resnet18"]) == 2
    assert "nope.pth does not exist" in capsys.readouterr().err
    assert main(["convert", "a.pth", "--to", "x.npz", "--arch", "resnet18"]) == 2
    assert "--to must name a .safetensors file" in capsys.readouterr().err

"""An exported network states the input normalization it was trained with, and is verified on that input.

The oracle is what a user of the file does: normalize raw test pixels by hand with the mean/std written in the
file, run ONNX Runtime, and compare with the PyTorch network fed by its own loader."""
import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("safetensors")

import torch  # noqa: E402

from kd_plugin import create_model  # noqa: E402
from kd_plugin.checkpoint import load_model  # noqa: E402
from kd_plugin.cli.compress_classifier import main as compress_classifier  # noqa: E402
from kd_plugin.cli.kd_plugin import main as kd_plugin  # noqa: E402
from kd_plugin.data import TensorLoader, load_split  # noqa: E402
from kd_plugin.export import onnx_files  # noqa: E402
from kd_plugin.util.normalization import DISTILLER, normalization_of  # noqa: E402


@pytest.fixture(scope="module")
def distiller_normalized(tiny_data, tmp_path_factory):
    """A cnn5 trained one epoch under Distiller's 0.5/0.5 normalization (recorded in its checkpoint)."""
    root = tmp_path_factory.mktemp("export_norm")
    assert compress_classifier([tiny_data, "-a", "cnn5", "--epochs", "1", "-b", "25", "--lr", "0.05", "--seed", "1",
                                "--cpu", "--normalization", "distiller", "--no-progress", "-o", str(root / "logs"),
                                "-n", "net"]) == 0
    (ckpt,) = glob.glob(str(root / "logs" / "*" / "net_best.pth.tar"))
    return root, ckpt


def by_hand(images, mean, std):
    pixels = images.numpy().astype(np.float32) / 255
    return ((pixels - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None])


def own_logits(model, image_set):
    loader = TensorLoader(image_set, len(image_set), "n", normalization=normalization_of(model))
    with torch.no_grad():
        return model.eval()(next(loader.epoch(0)).inputs)


def test_the_exported_files_record_and_verify_the_checkpoints_normalization(distiller_normalized, tiny_data, capsys):
    root, ckpt = distiller_normalized
    out = str(root / "exports")
    assert kd_plugin(["export", ckpt, "--format", "onnx,safetensors", "--data", tiny_data, "-o", out]) == 0
    assert "normalization of cnn5_cifar: distiller" in capsys.readouterr().out
    props = onnx_files.metadata(os.path.join(out, "net_best.onnx"))
    mean, std = ([float(v) for v in props[key].split(",")] for key in ("mean", "std"))
    assert (tuple(mean), tuple(std), props["normalization"]) == (DISTILLER.mean, DISTILLER.std, "distiller")

    model, _ = load_model(ckpt)
    test = load_split(tiny_data, "test")
    session = onnx_files.session(os.path.join(out, "net_best.onnx"))
    user_logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: by_hand(test.images, mean,
                                                                                            std)})[0])
    reference = own_logits(model, test)
    assert torch.allclose(user_logits, reference, atol=1e-4, rtol=0)

    # The verification's accuracy is the network's own: what evaluate reports on the same images.
    record = json.loads(Path(out, "net_best.json").read_text())
    (onnx_entry,) = [f for f in record["files"] if f["format"] == "onnx"]
    own_top1 = (reference.argmax(1) == test.labels).float().mean().item() * 100
    assert onnx_entry["check"]["pytorch_top1"] == pytest.approx(own_top1)
    assert onnx_entry["check"]["top1"] == pytest.approx(own_top1)

    # safetensors: a network created from the file expects what the file records.
    reloaded = create_model("cnn5_cifar", weights=os.path.join(out, "net_best.safetensors"))
    assert normalization_of(reloaded).same_as(DISTILLER)
    assert torch.equal(own_logits(reloaded, test), reference)


def test_export_normalization_flag_overrides_the_record(distiller_normalized, tmp_path):
    _, ckpt = distiller_normalized
    assert kd_plugin(["export", ckpt, "--format", "onnx", "--normalization", "cifar", "-o", str(tmp_path)]) == 0
    props = onnx_files.metadata(str(tmp_path / "net_best.onnx"))
    assert props["normalization"] == "cifar" and props["mean"].startswith("0.4914")

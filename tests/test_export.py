"""``kd-plugin export``: ONNX (fp32, int8) and safetensors files that compute what the PyTorch network computes,
and the card rows that measure them. Skipped without the export extra (``pip install -e ".[export]"``)."""
import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("safetensors")

from cli_support import assert_one_line_error  # noqa: E402

from kd_plugin import create_model  # noqa: E402
from kd_plugin.checkpoint import load_model  # noqa: E402
from kd_plugin.cli.compress_classifier import main as compress_classifier  # noqa: E402
from kd_plugin.cli.kd_plugin import main as kd_plugin  # noqa: E402
from kd_plugin.data import MEAN, STD, TensorLoader, load_split, write_synthetic_cifar  # noqa: E402
from kd_plugin.export import measure, onnx_files  # noqa: E402
from kd_plugin.export.identity import model_identity  # noqa: E402
from kd_plugin.util.normalization import DEFAULT  # noqa: E402

# int8 must stay this close to fp32 (top-1 points on the generated test images) for a briefly trained 5-CNN.
INT8_TOP1_BOUND = 5.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 5-CNN trained 2 epochs on generated data, exported once to every format."""
    root = tmp_path_factory.mktemp("export")
    data = write_synthetic_cifar(str(root / "data"), train_images=200, test_images=100, seed=3)
    assert compress_classifier([data, "-a", "cnn5", "--epochs", "2", "-b", "20", "--lr", "0.05", "--seed", "0",
                                "--no-progress", "-o", str(root / "logs"), "-n", "student"]) == 0
    ckpt = next(os.path.join(d, f) for d, _, fs in os.walk(root / "logs") for f in fs if f == "student_best.pth.tar")
    out = str(root / "exports")
    assert kd_plugin(["export", ckpt, "--format", "onnx,safetensors", "--int8", "--calib-data", data,
                      "--calib-images", "100", "--data", data, "-o", out]) == 0
    return {"data": data, "ckpt": ckpt, "out": out, "root": root}


def _test_batch(data, n=32):
    test = load_split(data, "test")
    return next(TensorLoader(test.subset(slice(0, n)), n, "n").epoch(0)).inputs


def test_onnx_logits_equal_pytorch_on_a_batch_and_any_batch_size(exported):
    model, _ = load_model(exported["ckpt"])
    model.eval()
    sess = onnx_files.session(os.path.join(exported["out"], "student_best.onnx"))
    inputs = _test_batch(exported["data"])
    for batch in (inputs, inputs[:1], inputs[:7]):
        with torch.no_grad():
            reference = model(batch)
        assert torch.allclose(onnx_files.run(sess, batch), reference, atol=1e-4, rtol=0)


def test_onnx_metadata_carries_the_models_identity(exported):
    props = onnx_files.metadata(os.path.join(exported["out"], "student_best.onnx"))
    assert props["arch"] == "cnn5_cifar" and props["input_size"] == "3,32,32"
    assert [float(v) for v in props["mean"].split(",")] == list(MEAN)
    assert [float(v) for v in props["std"].split(",")] == list(STD)
    assert props["classes"].split(",")[0] == "airplane" and len(props["classes"].split(",")) == 10
    assert onnx_files.metadata(os.path.join(exported["out"], "student_best.int8.onnx"))["arch"] == "cnn5_cifar"


def test_safetensors_round_trip_is_bit_exact(exported):
    original, _ = load_model(exported["ckpt"])
    loaded = create_model("cnn5_cifar", weights=os.path.join(exported["out"], "student_best.safetensors"))
    for key, tensor in original.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key
    inputs = _test_batch(exported["data"])
    with torch.no_grad():
        assert torch.equal(original.eval()(inputs), loaded.eval()(inputs))
    info = json.loads(Path(exported["out"], "student_best.json").read_text())
    assert info["arch"] == "cnn5_cifar" and info["mean"] == list(MEAN) and info["std"] == list(STD)
    checks = {entry["format"]: entry["check"] for entry in info["files"]}
    assert checks["safetensors"]["bit_exact"] and checks["safetensors"]["max_abs_logit_delta"] == 0
    assert checks["onnx"]["max_abs_logit_delta"] < 1e-4 and checks["onnx"]["top1_agreement"] == 100


def test_safetensors_of_another_arch_is_refused(exported):
    from kd_plugin.util.errors import KDPluginError

    with pytest.raises(KDPluginError, match="weights are a cnn5_cifar, not the requested vgg7_bn_cifar"):
        create_model("vgg7", weights=os.path.join(exported["out"], "student_best.safetensors"))


def test_int8_top1_stays_within_the_bound_of_fp32(exported):
    test = load_split(exported["data"], "test")
    fp32, int8 = (measure.onnx_logits(onnx_files.session(os.path.join(exported["out"], f"student_best{suffix}")), test,
                                      DEFAULT) for suffix in (".onnx", ".int8.onnx"))
    fp32_top1, int8_top1 = measure.top1(fp32, test), measure.top1(int8, test)
    assert fp32_top1 > 20, "the student should have learned something for the bound to mean anything"
    assert abs(int8_top1 - fp32_top1) <= INT8_TOP1_BOUND, (fp32_top1, int8_top1)
    info = json.loads(Path(exported["out"], "student_best.json").read_text())
    check = next(e["check"] for e in info["files"] if e["format"] == "onnx-int8")
    assert check["top1"] == pytest.approx(int8_top1) and check["pytorch_top1"] == pytest.approx(fp32_top1)
    sizes = {e["format"]: e["size_mib"] for e in info["files"]}
    assert sizes["onnx-int8"] < 0.35 * sizes["onnx"]


def test_evaluate_adds_a_row_per_format_next_to_pytorch(exported, capsys):
    out = str(exported["root"] / "cards")
    assert kd_plugin(["evaluate", exported["ckpt"], "--data", exported["data"], "-o", out, "--repeats", "3",
                      "--export-formats", "onnx"]) == 0
    card = json.loads(Path(out, "student_best.json").read_text())
    pytorch, onnx_row = card["formats"]
    assert pytorch["format"] == "pytorch fp32" and onnx_row["format"] == "onnx"
    assert onnx_row["test_top1"] == pytest.approx(card["test_top1"])  # the same network in two runtimes
    assert onnx_row["size_mib"] == pytest.approx(os.path.getsize(onnx_row["file"]) / 2**20)
    assert onnx_row["batched_s_per_image"] > 0 and onnx_row["batch1_median_s"] > 0
    assert "| onnx | onnxruntime CPU" in Path(out, "student_best.md").read_text()


def test_missing_export_dependency_says_what_to_install(exported, capsys, monkeypatch, workdir):
    import importlib

    from kd_plugin.util import optional

    real_import = importlib.import_module

    def without_onnxscript(name, *args):
        if name.split(".")[0] == "onnxscript":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(optional.importlib, "import_module", without_onnxscript)
    assert_one_line_error(["export", exported["ckpt"], "--format", "onnx"],
                          "export to onnx needs the onnxscript package: pip install 'kd-plugin[export]'", capsys)
    assert not os.path.exists("exports")


def randomized_batchnorm(model, seed=0):
    """MODEL with BatchNorm statistics and affine parameters drawn away from their init values, so an export
    that folded or dropped BatchNorm wrongly would show in the logits."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(shape, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(shape, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(shape, generator=gen) * 0.1)
    return model.eval()


# The 5-CNN is exported (trained) by the ``exported`` fixture; these are the zoo's other families: VGG, ResNet and
# an ensemble (JointNet: ResNet18 + VGG16 + its head on their logits and softmax mix).
@pytest.mark.parametrize("arch", ["vgg7_bn_cifar", "resnet18_cifar", "jointnet_cifar"])
def test_every_zoo_family_exports_to_onnx_computing_what_pytorch_computes(arch, tmp_path, one_thread):
    torch.manual_seed(0)
    model = randomized_batchnorm(create_model(arch))
    path = onnx_files.export_onnx(model, str(tmp_path / f"{arch}.onnx"), model_identity(model, arch))
    inputs = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(inputs)
    got = onnx_files.run(onnx_files.session(str(path)), inputs)
    # fp32 kernels in two runtimes: round-off only (measured at most 6e-7 of the largest logit)
    assert (got - reference).abs().max() <= 1e-5 * reference.abs().max() + 1e-6
    assert torch.equal(got.argmax(1), reference.argmax(1))
    assert onnx_files.metadata(str(path))["arch"] == arch

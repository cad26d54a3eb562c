"""On a CUDA device (skipped elsewhere; benchmarks/gpu_check.sh runs them there): a KD run with the GPU speed
flags trains, its teacher-output cache is warm on a second run, and its checkpoint scores the same on the CPU."""
import glob
import json
import os

import pytest
import torch

from kd_plugin import create_model
from kd_plugin.checkpoint import load_model, save_checkpoint
from kd_plugin.cli.compress_classifier import main as compress_classifier
from kd_plugin.data import load_split

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(3)
    return save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="t", dir=str(tmp_path_factory.mktemp("t")))


def kd_run(data, teacher, out, name, *flags):
    assert compress_classifier([data, "-a", "cnn5", "--epochs", "2", "-b", "64", "--seed", "0", "-o", out, "-n",
                                name, "--kd-teacher", "cnn5", "--kd-resume", teacher, "--augment", "n",
                                "--no-progress", *flags]) == 0
    (run_dir,) = glob.glob(os.path.join(out, f"{name}___*"))
    with open(os.path.join(run_dir, "summary.json")) as fh:
        return run_dir, json.load(fh)


@torch.no_grad()
def cpu_top1(checkpoint, data):
    model = load_model(checkpoint, "cnn5_cifar")[0].eval()
    test = load_split(data, "test")
    mean = torch.tensor(model.normalization.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.normalization.std).view(1, 3, 1, 1)
    predicted = model((test.images.float() / 255 - mean) / std).argmax(1)
    return 100.0 * float((predicted == test.labels).sum()) / len(test.labels)


@pytest.mark.parametrize("flags", [[], ["--amp", "bf16", "--channels-last"]])
def test_kd_on_cuda_trains_and_its_checkpoint_scores_the_same_on_the_cpu(tiny_data, teacher, tmp_path, flags):
    run_dir, summary = kd_run(tiny_data, teacher, str(tmp_path / "logs"), "gpu", *flags)
    rows = summary["rows"]
    assert all(float(r["train Distill Loss"]) >= 0 and float(r["train Overall Loss"]) < 1e3 for r in rows)
    tolerance = 100.0 / summary["test_images"] + 1e-6  # GPU kernels (and bf16) may flip one borderline image
    assert abs(cpu_top1(summary["checkpoint"], tiny_data) - summary["test_top1"]) <= tolerance


def test_the_teacher_cache_is_warm_on_a_second_cuda_run(tiny_data, teacher, tmp_path):
    out = str(tmp_path / "logs")
    _, first = kd_run(tiny_data, teacher, out, "first")
    _, second = kd_run(tiny_data, teacher, out, "second")
    images = int(first["rows"][0]["teacher cache misses"])  # augmentation n: one view, all missed once
    assert images > 0 and int(first["rows"][1]["teacher cache misses"]) == 0
    assert [(int(r["teacher cache hits"]), int(r["teacher cache misses"])) for r in second["rows"]] == \
        [(images, 0), (images, 0)]

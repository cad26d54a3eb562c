"""Issue 11 with a real IntelLabs Distiller: the same numbers on both sides of the boundary.

Skips where Distiller is not importable (CI); run with a Distiller environment's python (README "Running
inside Distiller"), e.g. ``/path/to/distiller-venv/bin/python -m pytest tests/test_distiller_boundary.py``.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kd_plugin.bridge import distiller_available
from kd_plugin.checkpoint import load_checkpoint_file, load_model, save_checkpoint
from kd_plugin.data import TensorLoader, load_split, write_synthetic_cifar
from kd_plugin.distill.teacher import TeacherRunner
from kd_plugin.models import create_model
from kd_plugin.reporting.evaluation import evaluate_target
from kd_plugin.util.normalization import DISTILLER, normalization_of

pytestmark = pytest.mark.skipif(not distiller_available(), reason="IntelLabs Distiller is not importable here "
                                                                 "(see README 'Running inside Distiller')")
SCHEDULES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schedules")
TOP1 = re.compile(r"==> Top1: ([\d.]+)\s+Top5: ([\d.]+)\s+Loss: ([\d.]+)")


def script():
    import distiller

    path = os.path.join(os.path.dirname(os.path.dirname(distiller.__file__)), "examples", "classifier_compression",
                        "compress_classifier.py")
    if not os.path.isfile(path):
        pytest.skip(f"Distiller's example script is not next to the installed package ({path})")
    return path


def launch(args, cwd):
    command = [sys.executable, "-m", "kd_plugin.distiller_launcher", script(), *args, "--cpu", "-j", "0"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_cifar(str(tmp_path_factory.mktemp("cifar")), train_images=60, test_images=40, seed=5)


def distiller_test_numbers(checkpoint, arch, data, tmp_path):
    done = launch([data, "--arch", arch, "-e", "--exp-load-weights-from", checkpoint, "-o", str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return tuple(float(v) for v in TOP1.findall(done.stdout + done.stderr)[-1])


def test_same_numbers_in_both_tools_for_both_kinds_of_checkpoint(data, tmp_path):
    torch.manual_seed(0)
    ours = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), dir=str(tmp_path), name="ours")
    theirs = str(tmp_path / "distiller_written.pth.tar")  # Distiller's keys, no normalization record
    torch.save({"epoch": 0, "arch": "cnn5_cifar", "state_dict": create_model("cnn5").state_dict(),
                "extras": {}}, theirs)
    assert normalization_of(load_model(theirs)[0]) is DISTILLER
    for path in (ours, theirs):
        card = evaluate_target(path, data, out_dir=str(tmp_path / "cards"), repeats=1)
        top1, top5, loss = distiller_test_numbers(path, "cnn5_cifar", data, tmp_path)
        assert (top1, top5) == (round(card["test_top1"], 3), round(card["test_top5"], 3))
        assert loss == pytest.approx(card["test_loss"], abs=1e-3)


def test_distillers_kd_gets_the_teacher_outputs_kd_plugin_computes(data, tmp_path):
    import distiller
    from distiller.apputils import data_loaders

    import kd_plugin
    from kd_plugin.bridge.patches import distiller_runtime_patches

    torch.manual_seed(1)
    teacher_path = save_checkpoint(0, "resnet18_cifar", create_model("resnet18_cifar"), dir=str(tmp_path), name="t")
    kd_plugin.register_with_distiller()
    with distiller_runtime_patches():
        student = distiller.models.create_model(False, "cifar10", "cnn5_cifar", parallel=False)
        teacher = distiller.models.create_model(False, "cifar10", "resnet18_cifar", parallel=False)
        teacher = distiller.apputils.load_lean_checkpoint(teacher, teacher_path)
        weights = distiller.DistillationLossWeights(0.5, 0.5, 0)
        policy = distiller.KnowledgeDistillationPolicy(student, teacher, 2.0, weights)
        _, test_set = data_loaders.cifar10_get_datasets(data, load_train=False)
        inputs, _ = next(iter(torch.utils.data.DataLoader(test_set, batch_size=16, shuffle=False)))
        policy.active = True
        teacher.eval()
        policy.forward(inputs)
        in_distiller_eval = policy.last_teacher_logits
        teacher.train()  # what Distiller's policy does: the teacher stays in training mode
        policy.forward(inputs)
        in_distiller_train = policy.last_teacher_logits
    batch = next(TensorLoader(load_split(data, "test"), 16, "n").epoch(0))
    ours = load_model(teacher_path)[0]
    assert torch.allclose(in_distiller_eval, TeacherRunner(ours)(batch.inputs), atol=1e-5, rtol=1e-5)
    ours.train()
    with torch.no_grad():
        assert torch.allclose(in_distiller_train, ours(batch.inputs), atol=1e-5, rtol=1e-5)


def short_pruning_schedule(tmp_path, name, teacher_path, weights=None):
    sched = yaml.safe_load(Path(SCHEDULES, name).read_text())
    sched["policies"][0].update(starting_epoch=0, ending_epoch=2, frequency=1)
    for policy in sched["policies"][1:]:
        policy["ending_epoch"] = 2
    sched["extensions"]["distillation"].update(teacher_arch="cnn5_cifar", teacher_checkpoint=teacher_path)
    if weights is not None:
        sched["pruners"]["agp"]["weights"] = weights
    path = tmp_path / f"short_{name}"
    path.write_text(yaml.safe_dump(sched))
    return str(path), sched


def pruned_fraction(checkpoint, names):
    state = load_checkpoint_file(checkpoint).state_dict
    return sum(int((state[n] == 0).sum()) for n in names) / sum(state[n].numel() for n in names)


def test_agp_and_kd_really_prune_on_both_backends(data, tmp_path):
    teacher = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), dir=str(tmp_path), name="teacher")
    path, sched = short_pruning_schedule(tmp_path, "agp_kd_resnet18_to_vgg7_a0.5_t1.5.yaml", teacher)
    names = sched["pruners"]["agp"]["weights"]
    done = launch([data, "--arch", "vgg7_bn_cifar", "--compress", path, "--epochs", "2", "-b", "20", "-p", "1",
                   "-o", str(tmp_path / "d"), "-n", "agp"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (checkpoint,) = glob.glob(str(tmp_path / "d" / "agp___*" / "agp_checkpoint.pth.tar"))
    assert pruned_fraction(checkpoint, names) > 0.3
    (log,) = glob.glob(str(tmp_path / "d" / "agp___*" / "*.log"))
    assert "Distill Loss" in Path(log).read_text()

    from kd_plugin.compress_classifier import main as compress_classifier

    out = str(tmp_path / "k")
    assert compress_classifier([data, "--compress", path, "--backend", "distiller", "--epochs", "2", "-b", "20",
                                "--no-progress", "-o", out, "--seed", "0"]) == 0
    (checkpoint,) = glob.glob(os.path.join(out, "*___*", "*_checkpoint.pth.tar"))
    assert pruned_fraction(checkpoint, names) > 0.3

    bad, _ = short_pruning_schedule(tmp_path, "agp_kd_resnet18_to_vgg7_a0.5_t1.5.yaml", teacher,
                                    weights=["module.features.4.weight"])
    done = launch([data, "--arch", "vgg7_bn_cifar", "--compress", bad, "--epochs", "2", "-o", str(tmp_path)],
                  tmp_path)
    assert done.returncode == 2
    assert re.search(r"match no parameter.*module.features.4.weight \(closest: features.4.weight",
                     done.stderr.strip().splitlines()[-1])


def test_summaries_and_post_training_quantization_on_a_student(data, tmp_path):
    import distiller

    import kd_plugin
    from kd_plugin.bridge.patches import distiller_runtime_patches

    registration = kd_plugin.register_with_distiller()
    with distiller_runtime_patches():
        for arch in registration.models:  # --summary compute, in eval mode (cnn5: BatchNorm1d on one image)
            model = distiller.models.create_model(False, "cifar10", arch, parallel=False)
            table = distiller.model_summaries.model_performance_summary(
                model, distiller.get_dummy_input("cifar10"), 1)
            assert len(table) > 0 and model.training, arch
    student = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), dir=str(tmp_path), name="student")
    fp32 = distiller_test_numbers(student, "cnn5_cifar", data, tmp_path)
    done = launch([data, "--arch", "cnn5_cifar", "-e", "--quantize-eval", "--exp-load-weights-from", student,
                   "-o", str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    int8 = tuple(float(v) for v in TOP1.findall(done.stdout + done.stderr)[-1])
    assert abs(int8[2] - fp32[2]) < 0.5  # a quantized copy of the same network, not another one
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed: --summary png cannot draw (Distiller says so in one line)")
    done = launch([data, "--arch", "cnn5_cifar", "--summary", "png", "--exp-load-weights-from", student,
                   "-o", str(tmp_path)], tmp_path)
    assert done.returncode == 0 and "Network PNG image generation completed" in done.stdout, done.stderr[-3000:]
    assert os.path.getsize(tmp_path / "model.png") > 1000

import csv
import glob
import json
import os
from pathlib import Path

import pytest
import torch

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, save_checkpoint
from kd_plugin.cli.compress_classifier import main as compress_classifier
from kd_plugin.data import write_synthetic_cifar

SCHEDULES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "schedules", "*.yaml")))


def run(args, capsys=None):
    code = compress_classifier(args + ["--no-progress"])
    return code


def run_dir(out, name):
    (path,) = glob.glob(os.path.join(out, f"{name}___*"))
    return path


def test_plain_and_kd_runs_write_distiller_layout(tiny_data, tmp_path):
    out = str(tmp_path / "logs")
    assert run([tiny_data, "-a", "cnn5", "--epochs", "1", "-b", "32", "--seed", "1", "-o", out, "-n", "teacher"]) == 0
    teacher_dir = run_dir(out, "teacher")
    assert sorted(os.listdir(teacher_dir)) == ["summary.json", "teacher.log", "teacher_best.pth.tar",
                                               "teacher_checkpoint.pth.tar", "training.csv"]
    teacher = os.path.join(teacher_dir, "teacher_best.pth.tar")
    assert run([tiny_data, "-a", "vgg6as", "--epochs", "1", "-b", "32", "--seed", "1", "-o", out, "-n", "student",
                "--kd-teacher", "5-CNN", "--kd-resume", teacher, "--kd-temp", "1.5", "--kd-dw", "0.5",
                "--kd-sw", "0.5"]) == 0
    student_dir = run_dir(out, "student")
    with open(os.path.join(student_dir, "training.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    for column in ("train Overall Loss", "train Objective Loss", "train Distill Loss", "train top1", "train top5",
                   "valid top1", "lr", "images/s"):
        assert column in rows[0]
    log = Path(student_dir, "student.log").read_text()
    assert "Distillation: teacher cnn5_cifar, T=1.5" in log and "Epoch 0:" in log
    summary = json.loads(Path(student_dir, "summary.json").read_text())
    assert summary["test_images"] == 60 and 0 <= summary["test_top1"] <= 100
    assert len(summary["test_per_class"]) == 10
    checkpoint = load_checkpoint_file(os.path.join(student_dir, "student_checkpoint.pth.tar"))
    assert checkpoint.arch == "vgg6as_bn_cifar" and checkpoint.epoch == 0


def test_kd_starts_at_kd_start_epoch(tiny_data, tmp_path):
    out = str(tmp_path / "logs")
    teacher = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), dir=str(tmp_path))
    assert run([tiny_data, "-a", "vgg6as", "--epochs", "2", "-b", "64", "--seed", "1", "-o", out, "-n", "s",
                "--kd-teacher", "cnn5", "--kd-resume", teacher, "--kd-start-epoch", "1"]) == 0
    with open(os.path.join(run_dir(out, "s"), "training.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["train Distill Loss"] == "" and float(rows[1]["train Distill Loss"]) > 0


def final_weights(path):
    return load_checkpoint_file(path).state_dict


def test_resume_after_epoch_1_of_2_matches_uninterrupted_run(tiny_data, tmp_path):
    common = [tiny_data, "-a", "cnn5", "-b", "32", "--seed", "7", "--deterministic", "--lr", "0.05"]
    out = str(tmp_path / "logs")
    assert run(common + ["--epochs", "2", "-o", out, "-n", "full"]) == 0
    assert run(common + ["--epochs", "1", "-o", out, "-n", "first"]) == 0
    first = os.path.join(run_dir(out, "first"), "first_checkpoint.pth.tar")
    assert run(common + ["--epochs", "2", "-o", out, "-n", "resumed", "--resume-from", first]) == 0
    full = final_weights(os.path.join(run_dir(out, "full"), "full_checkpoint.pth.tar"))
    resumed = final_weights(os.path.join(run_dir(out, "resumed"), "resumed_checkpoint.pth.tar"))
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    return write_synthetic_cifar(str(tmp_path_factory.mktemp("micro")), train_images=40, test_images=20, seed=1)


@pytest.fixture(scope="module")
def micro_data100(tmp_path_factory):
    from kd_plugin.data import write_synthetic

    return write_synthetic(str(tmp_path_factory.mktemp("micro100")), 20, 10, seed=1, dataset="cifar100")


@pytest.fixture(scope="module")
def teacher_checkpoints(tmp_path_factory):
    from kd_plugin.data import default_classes

    folder = tmp_path_factory.mktemp("teachers")
    cifar100 = {arch: save_checkpoint(0, arch, create_model(arch, classes=default_classes("cifar100")), name=arch,
                                      dir=str(folder)) for arch in ("resnet32x4_cifar100", "wrn_40_2_cifar100")}
    return {**cifar100, **{arch: save_checkpoint(0, arch, create_model(arch), name=arch, dir=str(folder))
                           for arch in ("resnet18_cifar", "vgg16_bn_cifar", "avnet_cifar", "jointnet_cifar")}}


@pytest.mark.parametrize("schedule", SCHEDULES, ids=os.path.basename)
def test_every_schedule_runs_one_tiny_epoch(schedule, micro_data, micro_data100, teacher_checkpoints, tmp_path):
    from kd_plugin.protocol.config import read_schedule

    sched = read_schedule(schedule, distiller_components=True)
    data = micro_data100 if (sched.get("training") or {}).get("dataset") == "cifar100" else micro_data
    args = [data, "--compress", schedule, "--epochs", "1", "-b", "40" if data == micro_data else "20", "--vs", "0",
            "-o", str(tmp_path)]
    if "_crd_" in schedule:  # the reference's 16,384 negatives, here 16 (a tiny epoch on a CPU)
        args += ["--kd-loss-arg", "nce_k=16"]
    if sched.get("pruners") or sched.get("regularizers"):  # Distiller's components: its runtime builds them
        pytest.importorskip("distiller")
        args += ["--backend", "distiller"]
    teacher = (sched.get("extensions") or {}).get("distillation", {}).get("teacher_arch")
    if teacher:
        args += ["--kd-resume", teacher_checkpoints[teacher]]
    assert run(args) == 0
    (folder,) = glob.glob(str(tmp_path / "*___*"))
    assert os.path.exists(os.path.join(folder, "configs", os.path.basename(schedule)))

"""Ensemble teachers of any checkpoints (issue 24): the weighted average against a hand computation, the
command line, the YAML schedule and a sweep selecting the same teacher, the exact cache and resume with an
ensemble, and create-ensemble's checkpoint loaded like any network."""
import csv
import glob
import json
import os
from pathlib import Path

import pytest
import torch
from test_teacher_cache import FIRST_EPOCH_LOSS_RTOL, losses

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, load_model, save_checkpoint
from kd_plugin.cli.compress_classifier import main as compress_classifier
from kd_plugin.cli.kd_plugin import main as kd_plugin
from kd_plugin.data import TensorLoader, load_split
from kd_plugin.distill.teacher import build_teacher
from kd_plugin.engine.loop import evaluate_loader
from kd_plugin.spec import RunSpec
from kd_plugin.engine.trainer import run_training

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """A cnn5 and two VGG7 checkpoints with different weights (any zoo architectures may be members)."""
    root = tmp_path_factory.mktemp("members")
    paths = []
    for seed, arch in ((1, "cnn5_cifar"), (2, "vgg7_bn_cifar"), (3, "vgg7_bn_cifar")):
        torch.manual_seed(seed)
        paths.append((arch, save_checkpoint(0, arch, create_model(arch), name=f"m{seed}", dir=str(root))))
    return paths


def settings(data, out, members, **overrides):
    values = dict(data=data, arch="cnn5", epochs=2, batch_size=50, lr=0.05, seed=4, augment="n", out_dir=out,
                  kd_teacher=[a for a, _ in members], kd_resume=[p for _, p in members], kd_teacher_weights=[1, 3],
                  progress=False, verbose=False, validation_split=0.1, teacher_cache="off")
    values.update(overrides)
    return RunSpec.from_flags(**values)


def hand_average(members, weights, images, probabilities=False):
    """sum_i w_i * member_i(x) / sum_i w_i, each member loaded on its own; for probabilities, the log of the
    weighted average of the softmaxes."""
    total = sum(weights)
    outputs = []
    for arch, path in members:
        model = load_model(path, arch)[0].eval()
        with torch.no_grad():
            out = model(images)
        outputs.append(torch.softmax(out, 1) if probabilities else out)
    mixed = sum(w / total * o for w, o in zip(weights, outputs, strict=True))
    return mixed.log() if probabilities else mixed


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_ensemble_output_is_the_weighted_average_of_its_members(members, combine):
    torch.manual_seed(0)
    images = torch.randn(6, 3, 32, 32)
    weights = [0.5, 2.0, 1.5]
    teacher = build_teacher(create_model("cnn5"), [a for a, _ in members], [p for _, p in members],
                            weights=weights, combine=combine).eval()
    with torch.no_grad():
        got = teacher(images)
    expected = hand_average(members, weights, images, combine == "probs")
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, hand_average(members, [1.0, 1.0, 1.0], images, combine == "probs"), atol=1e-3)


def test_kd_from_an_ensemble_with_and_without_the_cache(tiny_data, members, tmp_path):
    out = str(tmp_path / "logs")
    plain = run_training(settings(tiny_data, out, members[:2], name="plain"))
    cold = run_training(settings(tiny_data, out, members[:2], teacher_cache="auto", name="cold"))
    warm = run_training(settings(tiny_data, out, members[:2], teacher_cache="auto", name="warm"))
    for column in ("train Overall Loss", "train Distill Loss", "valid Loss"):
        assert losses(cold, column)[0] == pytest.approx(losses(plain, column)[0], rel=FIRST_EPOCH_LOSS_RTOL)
        assert losses(warm, column) == losses(cold, column)
    hits = [int(row["teacher cache hits"]) for row in cold["rows"]]
    assert hits[0] == 0 and hits[1] > 0  # without augmentation epoch 1 reads what epoch 0 stored
    assert torch.equal(load_checkpoint_file(warm["checkpoint"]).state_dict["fc2.weight"],
                       load_checkpoint_file(cold["checkpoint"]).state_dict["fc2.weight"])
    # other member weights are another teacher: another cache file, never the first one's rows
    run_training(settings(tiny_data, out, members[:2], teacher_cache="auto", kd_teacher_weights=[3, 1], name="other"))
    assert len(glob.glob(os.path.join(out, "teacher_cache", "teacher-*.pt"))) == 2


def test_resumed_ensemble_kd_run_equals_the_unbroken_one(tiny_data, members, tmp_path):
    out = str(tmp_path / "logs")
    unbroken = run_training(settings(tiny_data, out, members, kd_teacher_weights=None, name="unbroken"))
    first = run_training(settings(tiny_data, out, members, kd_teacher_weights=None, epochs=1, name="first"))
    last = os.path.join(first["run_dir"], "first_checkpoint.pth.tar")
    resumed = run_training(settings(tiny_data, out, members, kd_teacher_weights=None, resume_from=last,
                                    name="resumed"))
    a = load_checkpoint_file(os.path.join(unbroken["run_dir"], "unbroken_checkpoint.pth.tar")).state_dict
    b = load_checkpoint_file(os.path.join(resumed["run_dir"], "resumed_checkpoint.pth.tar")).state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    changed = settings(tiny_data, out, members, kd_teacher_weights=[1, 1, 2], resume_from=last, name="changed")
    with pytest.raises(Exception, match="teacher weights"):
        run_training(changed)


def test_yaml_and_command_line_select_the_same_ensemble_run(tiny_data, members, tmp_path):
    common = [tiny_data, "-a", "cnn5", "--epochs", "1", "-b", "50", "--seed", "2", "--augment", "n", "--cpu",
              "--no-progress", "--teacher-cache", "off", "-o", str(tmp_path)]
    assert compress_classifier([*common, "-n", "flags", "--kd-teacher", *(a for a, _ in members[:2]), "--kd-resume",
                                *(p for _, p in members[:2]), "--kd-teacher-weights", "1", "3", "--kd-temp", "2"]) == 0
    yaml = tmp_path / "ensemble.yaml"
    yaml.write_text("extensions:\n  kd:\n    class: KnowledgeDistillationExtension\n"
                    f"    teacher_arch: [{members[0][0]}, {members[1][0]}]\n"
                    f"    teacher_checkpoint: [{members[0][1]}, {members[1][1]}]\n"
                    "    teacher_weights: [1, 3]\n    temperature: 2\n"
                    "policies:\n  - extension: {instance_name: kd}\n    starting_epoch: 0\n    ending_epoch: 1\n"
                    "    frequency: 1\n")
    assert compress_classifier([*common, "-n", "yaml", "--compress", str(yaml)]) == 0
    runs = {name: json.loads(Path(glob.glob(str(tmp_path / f"{name}___*" / "summary.json"))[0]).read_text())
            for name in ("flags", "yaml")}
    assert runs["flags"]["distillation"][0]["teacher_config"] == runs["yaml"]["distillation"][0]["teacher_config"]
    assert runs["flags"]["rows"][0]["train Overall Loss"] == runs["yaml"]["rows"][0]["train Overall Loss"]
    assert runs["flags"]["test_top1"] == runs["yaml"]["test_top1"]


def test_summary_records_the_teachers_accuracy_on_the_students_test_split(tiny_data, members, tmp_path):
    summary = run_training(settings(tiny_data, str(tmp_path), members, epochs=1, kd_teacher_weights=[1, 3, 0],
                                    name="acc"))
    teacher = build_teacher(create_model("cnn5"), [a for a, _ in members], [p for _, p in members],
                            weights=[1, 3, 0])
    hand = evaluate_loader(teacher, TensorLoader(load_split(tiny_data, "test"), 1024, "n"))["top1"]
    assert summary["distillation"][0]["teacher_test_top1"] == pytest.approx(hand)


def test_sweep_with_an_ensemble_teacher_value(tiny_data, members, tmp_path, capsys):
    (arch_a, a), (arch_b, b) = members[:2]
    out = tmp_path / "sweep"
    assert kd_plugin(["sweep", "--data", tiny_data, "--teacher", f"{arch_a}={a}@1,{arch_b}={b}@3", "--student",
                      "cnn5", "--epochs", "1", "-b", "50", "-o", str(out), "-j", "1",
                      "--extra-args=--cpu --augment n --teacher-cache off"]) == 0
    result = json.loads(Path(glob.glob(str(out / "runs" / "*" / "result.json"))[0]).read_text())
    assert result["teacher"] == "ensemble_cifar" and result["distillation"][0]["teacher_config"]["member_weights"] \
        == pytest.approx([0.25, 0.75])
    teacher = build_teacher(create_model("cnn5"), [arch_a, arch_b], [a, b], weights=[1, 3])
    hand = evaluate_loader(teacher, TensorLoader(load_split(tiny_data, "test"), 1024, "n"))["top1"]
    table = (out / "sweep.md").read_text()
    assert f"| ensemble(5-CNN + VGG7) → 5-CNN | {hand:.2f} |" in table
    assert json.loads(Path(out / "sweep.json").read_text())["rows"][0]["teacher_top1"] == pytest.approx(hand)


def test_create_ensemble_writes_a_checkpoint_loaded_like_any_network(tiny_data, members, tmp_path):
    path = str(tmp_path / "ens.pth.tar")
    assert kd_plugin(["create-ensemble", "ensemble", "-o", path, "--combine", "probs",
                      *(f for arch, p in members for f in ("--member", f"{arch}={p}"))]) == 0
    model, checkpoint = load_model(path)
    assert checkpoint.arch == "ensemble_cifar" and len(model.members) == 3
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(images), hand_average(members, [1, 1, 1], images, True), atol=1e-5)
    report = tmp_path / "eval"
    assert kd_plugin(["evaluate", path, "--data", tiny_data, "-o", str(report), "--repeats", "1"]) == 0
    assert json.loads(Path(report / "ens.json").read_text())["test_top1"] == pytest.approx(
        evaluate_loader(model, TensorLoader(load_split(tiny_data, "test"), 1024, "n"))["top1"])


def test_report_comparison_shows_each_students_teacher_top1(tiny_data, members, tmp_path):
    summary = run_training(settings(tiny_data, str(tmp_path / "logs"), members[:2], epochs=1, name="student"))
    baseline = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="alone", dir=str(tmp_path))
    out = tmp_path / "cards"
    assert kd_plugin(["report", summary["checkpoint"], baseline, "--data", tiny_data, "-o", str(out), "--repeats", "1",
                      "--no-train-accuracy"]) == 0
    teacher = build_teacher(create_model("cnn5"), [a for a, _ in members[:2]], [p for _, p in members[:2]],
                            weights=[1, 3])
    hand = evaluate_loader(teacher, TensorLoader(load_split(tiny_data, "test"), 1024, "n"))["top1"]
    rows = {row["model"]: row for row in csv_rows(out / "comparison.csv")}
    assert float(rows["student_best"]["teacher_test_top1"]) == pytest.approx(hand)
    assert rows["alone_checkpoint"]["teacher_test_top1"] == ""


def csv_rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))

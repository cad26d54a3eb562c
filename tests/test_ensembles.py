"""Issue 5: AvNet and JointNet built from member checkpoints, JointNet's joint training, ensembles as KD teachers."""
import glob
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ensemble_support import member_files_fixture, micro_fixture  # noqa: F401  (fixtures)

from kd_plugin import create_model
from kd_plugin.checkpoint import load_model
from kd_plugin.cli.compress_classifier import main as compress_classifier
from kd_plugin.cli.kd_plugin import main as kd_plugin
from kd_plugin.data import TensorLoader, load_split
from kd_plugin.distill.policy import KnowledgeDistillationPolicy
from kd_plugin.distill.teacher import build_teacher
from kd_plugin.engine.loop import train_epoch
from kd_plugin.spec import RunSpec
from kd_plugin.engine.trainer import build_optimizer
from kd_plugin.protocol.config import ScheduleError, dict_config
from kd_plugin.protocol.scheduler import CompressionScheduler

# VGG16's features: conv/BN/ReLU per number, one MaxPool per M; its last three convs sit at 34, 37, 40.
VGG16_LAST_CONV_BN = (34, 35, 37, 38, 40, 41)
JOINTNET_TRAINABLE = (
    {f"vgg.features.{i}.{p}" for i in VGG16_LAST_CONV_BN for p in ("weight", "bias")}
    | {"vgg.classifier.weight", "vgg.classifier.bias", "resnet.linear.weight", "resnet.linear.bias"}
    | {f"resnet.layer4.1.{m}.weight" for m in ("conv1", "bn1", "conv2", "bn2")}
    | {f"resnet.layer4.1.{m}.bias" for m in ("bn1", "bn2")}
    | {f"head_{h}.{p}" for h in ("vgg", "resnet", "mix") for p in ("weight", "bias")}
)


@pytest.fixture(scope="module")
def members(member_files):
    return ["--resnet18-ckpt", member_files["resnet18_cifar"], "--vgg16-ckpt", member_files["vgg16_bn_cifar"]]


def member_nets(members):
    return load_model(members[1], "resnet18")[0].eval(), load_model(members[3], "vgg16")[0].eval()


@pytest.fixture(scope="module")
def avnet_path(members, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("avnet") / "avnet.pth.tar")
    assert kd_plugin(["create-ensemble", "avg", "-o", path, "--resnet-weight", "0.6", "--vgg-weight", "0.4"]
                     + members) == 0
    return path


def test_avnet_output_is_weighted_sum_of_members(avnet_path, members):
    model, checkpoint = load_model(avnet_path, "avnet_cifar")
    assert checkpoint.arch == "avnet_cifar" and checkpoint.kind == "distiller"
    resnet, vgg = member_nets(members)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), 0.6 * resnet(x) + 0.4 * vgg(x), atol=1e-5)
        outputs = model.forward_all(x)
        assert torch.equal(outputs.resnet, resnet(x)) and torch.equal(outputs.vgg, vgg(x))
    assert sum(p.numel() for p in model.parameters()) == 25_902_228


def test_create_ensemble_refuses_to_overwrite_and_needs_members(avnet_path, members, capsys, monkeypatch):
    before = os.path.getmtime(avnet_path)
    assert kd_plugin(["create-ensemble", "avg", "-o", avnet_path] + members) == 2
    assert "already exists" in capsys.readouterr().err and os.path.getmtime(avnet_path) == before
    monkeypatch.delenv("KD_VGG16_CKPT", raising=False)
    assert kd_plugin(["create-ensemble", "jn", "-o", avnet_path + ".new"] + members[:2]) == 2
    assert "--vgg16-ckpt PATH or set KD_VGG16_CKPT" in capsys.readouterr().err
    assert kd_plugin(["create-ensemble", "vgg7", "-o", avnet_path + ".new"] + members) == 2
    swapped = ["--resnet18-ckpt", members[3], "--vgg16-ckpt", members[1]]
    assert kd_plugin(["create-ensemble", "avg", "-o", avnet_path + ".new"] + swapped) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not the requested resnet18_cifar" in err
    assert not os.path.exists(avnet_path + ".new")


def test_jointnet_trainable_parameters_are_exactly_the_named_layers():
    model = create_model("jn")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == JOINTNET_TRAINABLE
    assert model.freeze_for_joint_training() == sorted(JOINTNET_TRAINABLE)
    optimizer = build_optimizer(model, RunSpec.from_flags(data="unused", arch="jn"))
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == \
        {id(p) for n, p in model.named_parameters() if n in JOINTNET_TRAINABLE}
    assert sum(p.numel() for p in model.parameters()) == 25_902_558
    head = sum(getattr(model, f"head_{h}").weight.numel() + getattr(model, f"head_{h}").bias.numel()
               for h in ("vgg", "resnet", "mix"))
    assert head == 330


def test_jointnet_frozen_batchnorms_stay_in_eval_mode():
    model = create_model("jn").train()
    assert not model.resnet.bn1.training and not model.vgg.features[1].training
    assert model.vgg.features[35].training and model.resnet.layer4[1].bn2.training
    model.eval().train()
    assert not model.resnet.layer4[0].bn1.training


def test_joint_loss_is_the_weighted_sum_of_branch_ces_with_yaml_weights():
    model = create_model("jn")
    sched = {"extensions": {"joint": {"class": "JointNetLossWeights", "head_ce_weight": 2.0, "vgg_ce_weight": 0.5,
                                      "resnet_ce_weight": 0.0, "mix_ce_weight": 1.0}}}
    dict_config(model, None, sched)
    criterion = model.training_criterion()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    model.eval()
    with torch.no_grad():
        outputs = model.forward_all(x)
    model.train()
    model.vgg.features[35].eval()  # keep the comparison free of batch statistics
    model.vgg.features[38].eval()
    model.vgg.features[41].eval()
    model.resnet.layer4[1].eval()
    loss = criterion(model(x), y)
    expected = 2.0 * F.cross_entropy(outputs.head, y) + 0.5 * F.cross_entropy(outputs.vgg, y) \
        + F.cross_entropy(outputs.mix, y)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert set(criterion.last_terms) == {"vgg", "resnet", "mix", "head"}
    with pytest.raises(RuntimeError, match="latest training-mode forward"):
        criterion(torch.zeros(4, 10), y)


@pytest.mark.parametrize("definition,message", [
    ({"head_ce_weight": 0.0}, "head_ce_weight must be > 0"),
    ({"vgg_ce_weight": -1.0}, "must be a number >= 0"),
])
def test_joint_loss_weights_are_checked(definition, message):
    sched = {"extensions": {"joint": {"class": "JointNetLossWeights", **definition}}}
    with pytest.raises(ScheduleError, match=message):
        dict_config(create_model("jn"), None, sched)
    with pytest.raises(ScheduleError, match="applies to jointnet_cifar"):
        dict_config(create_model("cnn5"), None, {"extensions": {"joint": {"class": "JointNetLossWeights"}}})


def test_jointnet_training_steps_keep_frozen_weights_and_bn_stats(micro):
    model = create_model("jn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, RunSpec.from_flags(data="unused", arch="jn", lr=0.05, weight_decay=5e-4))
    loader = TensorLoader(load_split(micro, "train").subset(slice(0, 8)), 4, "y", shuffle=True)
    train_epoch(model, loader, model.training_criterion(), optimizer, CompressionScheduler(model), 0, progress=False)
    after = model.state_dict()
    trainable_modules = {name.rsplit(".", 1)[0] for name in JOINTNET_TRAINABLE}
    frozen = [k for k in before if k.rsplit(".", 1)[0] not in trainable_modules]
    assert len(frozen) > 150 and sum(k.endswith("running_mean") for k in frozen) > 20
    assert [k for k in frozen if not torch.equal(before[k], after[k])] == []
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert JOINTNET_TRAINABLE.issubset(changed)  # every trainable weight moved (weight decay at least)
    assert {"vgg.features.41.running_mean", "resnet.layer4.1.bn2.running_var"} <= changed


def test_train_jointnet_refuses_other_archs_and_missing_members(micro, members, capsys, monkeypatch):
    monkeypatch.delenv("KD_RESNET18_CKPT", raising=False)
    assert kd_plugin(["train-jointnet"] + members + [micro, "-a", "vgg7", "--epochs", "1"]) == 2
    assert "train-jointnet trains jointnet_cifar, not vgg7_bn_cifar" in capsys.readouterr().err
    assert kd_plugin(["train-jointnet"] + members[2:] + [micro, "--epochs", "1"]) == 2
    assert "--resnet18-ckpt PATH or set KD_RESNET18_CKPT" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["avnet_cifar", "jointnet_cifar"])
def test_ensemble_teacher_runs_each_member_once_per_batch_in_eval_mode_without_grad(arch, micro):
    student, teacher = create_model("cnn5"), create_model(arch)
    calls = {"resnet": [], "vgg": []}
    for name in calls:
        getattr(teacher, name).register_forward_hook(
            lambda module, i, o, name=name: calls[name].append((module.training, torch.is_grad_enabled())))
    policy = KnowledgeDistillationPolicy(student, teacher, 2.0)
    scheduler = CompressionScheduler(student)
    scheduler.add_policy(policy, starting_epoch=0, ending_epoch=1)
    loader = TensorLoader(load_split(micro, "train").subset(slice(0, 12)), 4, "y", shuffle=True)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    scheduler.on_epoch_begin(0, optimizer)
    train_epoch(student, loader, torch.nn.CrossEntropyLoss(), optimizer, scheduler, 0, progress=False)
    scheduler.on_epoch_end(0, optimizer)
    assert len(loader) == 3
    assert calls == {"resnet": [(False, False)] * 3, "vgg": [(False, False)] * 3}


def test_avnet_checkpoint_evaluates_and_teaches_through_the_distiller_flags(avnet_path, micro, tmp_path):
    assert kd_plugin(["evaluate", avnet_path, "--data", micro, "-o", str(tmp_path / "reports"), "--repeats", "1"]) == 0
    card = json.loads(Path(glob.glob(str(tmp_path / "reports" / "*.json"))[0]).read_text())
    assert card["arch"] == "avnet_cifar" and card["test_images"] == 20 and card["parameters"] == 25_902_228
    out = str(tmp_path / "logs")
    assert compress_classifier([micro, "-a", "vgg7", "--kd-teacher", "avnet_cifar", "--kd-resume", avnet_path,
                                "--epochs", "1", "-b", "20", "--vs", "0", "-o", out, "--no-progress"]) == 0
    (summary,) = glob.glob(os.path.join(out, "*", "summary.json"))
    assert "train Distill Loss" in json.loads(Path(summary).read_text())["rows"][0]


def test_jointnet_checkpoint_reports_branches_and_loads_as_teacher(micro, members, tmp_path):
    path = str(tmp_path / "jn.pth.tar")
    assert kd_plugin(["create-ensemble", "jn", "-o", path, "--data", micro] + members) == 0
    report = json.loads(Path(str(tmp_path / "jn_branches.json")).read_text())
    assert set(report["test_top1"]) == {"vgg", "resnet", "mix", "head"} and report["arch"] == "jointnet_cifar"
    teacher = build_teacher(create_model("cnn5"), "jn", path)
    resnet, _ = member_nets(members)
    assert torch.equal(teacher.resnet.linear.weight, resnet.linear.weight)

"""Issue 11: the same numbers on both sides of the Distiller boundary (no Distiller needed here).

Normalization is part of a model's identity (recorded, assumed, overridden, used by every feed), a teacher
normalized otherwise than its student sees its own view, schedules' relative paths, pruner weight names,
Distiller's closed-form LR steps and unhashable YAML keys.
"""
import os

import pytest
import torch

from kd_plugin.checkpoint import load_checkpoint_file, load_model, save_checkpoint
from kd_plugin.data import Normalizer, Renormalizer, TensorLoader, apply_views, load_split
from kd_plugin.distill.policy import KnowledgeDistillationPolicy
from kd_plugin.distill.teacher_cache import cache_key
from kd_plugin.engine.loop import evaluate_loader
from kd_plugin.spec import RunSpec
from kd_plugin.engine.trainer import run_training
from kd_plugin.models import create_model, default_cfg
from kd_plugin.protocol.config import ScheduleError, read_schedule
from kd_plugin.protocol.policy import LRPolicy
from kd_plugin.protocol.scheduler import CompressionScheduler
from kd_plugin.protocol.weight_names import check_weight_names
from kd_plugin.reporting.evaluation import evaluate_target
from kd_plugin.util.errors import KDPluginError
from kd_plugin.util.normalization import CIFAR, DISTILLER, normalization_of, parse_normalization, set_normalization
from kd_plugin.util.safe_yaml import load_yaml


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from kd_plugin.data import write_synthetic_cifar

    return write_synthetic_cifar(str(tmp_path_factory.mktemp("micro")), train_images=40, test_images=24, seed=3)


def _logits(model, images, normalization):
    model.eval()
    with torch.no_grad():
        return model(Normalizer.of(normalization)(images))


def test_zoo_models_carry_their_preprocessing():
    model = create_model("vgg7_bn_cifar")
    assert model.pretrained_cfg == {"normalization": "cifar", "mean": CIFAR.mean, "std": CIFAR.std,
                                    "input_size": (3, 32, 32)}
    assert default_cfg("cnn5")["normalization"] is CIFAR
    assert normalization_of(create_model("cnn5", normalization=DISTILLER)) is DISTILLER
    assert parse_normalization("0.5,0.5").same_as(DISTILLER)
    assert parse_normalization("0.4914,0.4822,0.4465,0.2023,0.1994,0.2010").same_as(CIFAR)


def test_renormalizing_recovers_the_other_view_exactly():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    as_cifar, as_distiller = Normalizer.of(CIFAR)(images), Normalizer.of(DISTILLER)(images)
    assert torch.equal(Renormalizer(DISTILLER, CIFAR)(as_distiller), as_cifar)
    assert torch.equal(Renormalizer(CIFAR, DISTILLER)(as_cifar), as_distiller)
    assert Renormalizer(CIFAR, CIFAR)(as_cifar) is as_cifar  # the fast path


def test_checkpoints_record_normalization_and_unrecorded_ones_use_the_documented_assumption(tmp_path):
    model = create_model("cnn5", normalization=DISTILLER)
    path = save_checkpoint(0, "cnn5_cifar", model, dir=str(tmp_path), name="m")
    loaded, checkpoint = load_model(path)
    assert normalization_of(loaded) is DISTILLER and checkpoint.normalization_note == "recorded in the checkpoint"
    state = model.state_dict()
    torch.save({"epoch": 1, "arch": "cnn5_cifar", "state_dict": state}, tmp_path / "distiller.pth.tar")
    torch.save(state, tmp_path / "original.pt")
    assert normalization_of(load_model(str(tmp_path / "distiller.pth.tar"))[0]) is DISTILLER
    assert normalization_of(load_model(str(tmp_path / "original.pt"), "cnn5")[0]) is CIFAR
    overridden, checkpoint = load_model(path, normalization="cifar")
    assert normalization_of(overridden) is CIFAR and checkpoint.normalization_note == "--normalization"


def test_evaluation_feeds_a_checkpoint_its_own_normalization(micro, tmp_path, capsys):
    """A checkpoint recorded as Distiller-normalized is evaluated on Distiller-normalized pixels, whatever
    loader it meets; the wrong normalization gives other numbers, so this test would catch it."""
    torch.manual_seed(0)
    path = save_checkpoint(0, "cnn5_cifar", create_model("cnn5", normalization=DISTILLER), dir=str(tmp_path))
    test = load_split(micro, "test")
    model = load_model(path)[0]
    right = torch.nn.functional.cross_entropy(_logits(model, test.images, DISTILLER), test.labels).item()
    wrong = torch.nn.functional.cross_entropy(_logits(model, test.images, CIFAR), test.labels).item()
    assert abs(right - wrong) > 1e-3
    for loader_normalization in (CIFAR, DISTILLER):  # a loader made for another network is converted
        loss = evaluate_loader(model, TensorLoader(test, 8, "n", normalization=loader_normalization))["Loss"]
        assert loss == pytest.approx(right, rel=1e-6)
    card = evaluate_target(path, micro, out_dir=str(tmp_path / "cards"), repeats=1)
    assert card["test_loss"] == pytest.approx(right, rel=1e-6) and card["normalization"]["name"] == "distiller"
    assert "normalization of cnn5_cifar: distiller" in capsys.readouterr().out


def test_teacher_normalized_otherwise_gets_its_own_view(micro):
    torch.manual_seed(1)
    student = create_model("cnn5", normalization=DISTILLER)
    teacher = create_model("cnn5")  # the zoo default: the original's mean/std
    policy = KnowledgeDistillationPolicy(student, teacher, 2.0)
    train = load_split(micro, "train")
    batch = next(TensorLoader(train, 16, "y", shuffle=True, normalization=DISTILLER).epoch(0))
    policy.on_epoch_begin(student, None, {})
    student.train()
    student(batch.inputs)
    alone = _logits(teacher, apply_views(train.images.index_select(0, batch.indices), batch.views), CIFAR)
    assert torch.equal(policy.last_teacher_logits, alone)
    other_view = set_normalization(create_model("cnn5"), DISTILLER)
    other_view.load_state_dict(teacher.state_dict())
    assert cache_key(teacher, train, Normalizer.of(DISTILLER), "y") != \
        cache_key(other_view, train, Normalizer.of(DISTILLER), "y")


def test_training_with_normalization_records_it_and_kd_teacher_keeps_its_own(micro, tmp_path):
    teacher = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), dir=str(tmp_path), name="teacher")
    summary = run_training(RunSpec.from_flags(data=micro, arch="cnn5", epochs=1, batch_size=20, seed=0,
                                       out_dir=str(tmp_path / "runs"), normalization="distiller",
                                       kd_teacher="cnn5", kd_resume=teacher, progress=False, verbose=False,
                                       backend="builtin"))
    checkpoint = load_checkpoint_file(summary["checkpoint"])
    assert checkpoint.normalization()[0] is DISTILLER
    model = load_model(summary["checkpoint"])[0]
    test = load_split(micro, "test")
    own = evaluate_loader(model, TensorLoader(test, 64, "n", normalization=DISTILLER))
    assert summary["test_loss"] == pytest.approx(own["Loss"], rel=1e-6)


def test_schedule_paths_are_relative_to_the_schedule_file(tmp_path, monkeypatch):
    folder = tmp_path / "schedules"
    folder.mkdir()
    (folder / "kd.yaml").write_text("extensions:\n  kd: {class: KnowledgeDistillationExtension, teacher_arch: cnn5,"
                                    " teacher_checkpoint: ../teachers/t.pth.tar}\n")
    monkeypatch.chdir(tmp_path / "schedules")
    sched = read_schedule(str(folder / "kd.yaml"))
    assert sched["extensions"]["kd"]["teacher_checkpoint"] == str(tmp_path / "teachers" / "t.pth.tar")
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schedules",
                           "kd_resnet18_to_vgg7_a0.5_t1.5.yaml")
    resolved = read_schedule(shipped)["extensions"]["distillation"]["teacher_checkpoint"]
    assert resolved == os.path.join(os.path.dirname(os.path.dirname(shipped)), "teachers",
                                    "resnet18_cifar_best.pth.tar")


def test_pruner_names_must_match_a_parameter():
    names = [n for n, _ in create_model("resnet18_cifar").named_parameters()]
    good = {"pruners": {"agp": {"class": "AutomatedGradualPruner", "weights": ["layer1.0.conv1.weight"]}}}
    check_weight_names(good, names)
    bad = {"pruners": {"agp": {"class": "AutomatedGradualPruner",
                               "weights": ["module.layer1.0.conv1.weight", "layer1.0.conv1.weight"]}},
           "regularizers": {}}
    with pytest.raises(ScheduleError, match=r"pruners.agp: 1 weight name\(s\) match no parameter.*"
                                            r"module.layer1.0.conv1.weight \(closest: layer1.0.conv1.weight"):
        check_weight_names(bad, names)
    regularizer = {"regularizers": {"l1": {"class": "L1Regularizer", "reg_regims": {"fc.weight": 1e-4, "*": 0}}}}
    with pytest.raises(ScheduleError, match=r"regularizers.l1: .*fc.weight \(closest: .*linear.weight"):
        check_weight_names(regularizer, names)


@pytest.mark.parametrize("schedule", ["agp_kd_resnet18_to_vgg7_a0.5_t1.5.yaml",
                                      "agp_kd_vgg16_to_resnet18_a0.5_t1.5.yaml"])
def test_shipped_pruning_schedules_name_real_weights(schedule):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schedules", schedule)
    sched = read_schedule(path, distiller_components=True)
    names = [n for n, _ in create_model(sched["training"]["arch"]).named_parameters()]
    check_weight_names(sched, names, path)
    assert len(sched["pruners"]["agp"]["weights"]) >= 4


def test_lr_policy_with_frequency_steps_in_distillers_closed_form():
    """Distiller calls step(epoch + 1): MultiStepLR(milestones=[2]) active at epochs 0, 2, 4 -> 1.0, 0.1, 0.1."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = CompressionScheduler(model)
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.1)
    scheduler.add_policy(LRPolicy(lr_scheduler), starting_epoch=0, ending_epoch=6, frequency=2)
    after = {}
    for epoch in range(6):
        scheduler.on_epoch_begin(epoch, optimizer)
        scheduler.on_epoch_end(epoch, optimizer, metrics={"min": 0.0, "max": 0.0})
        after[epoch] = optimizer.param_groups[0]["lr"]
    assert [after[e] for e in (0, 2, 4)] == pytest.approx([1.0, 0.1, 0.1])


def test_unhashable_yaml_key_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("? [1, 2]\n: 3\n")
    with pytest.raises(KDPluginError, match=r"mapping key \[1, 2\] is not a scalar") as err:
        load_yaml(str(path))
    assert "\n" not in str(err.value)

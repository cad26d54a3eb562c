"""Issue 26: feature-based distillation through forward hooks (FitNets, attention transfer, CRD), alone and with a
logit loss, with their trainable parts in the optimizer and the checkpoint (resume exact)."""
import csv
import glob
import os
from pathlib import Path

import pytest
import run_support as support
import torch
import torch.nn.functional as F
from run_support import restore_threads  # noqa: F401 (fixture)
from test_resume import Crash, crash_at_epoch

from kd_plugin.checkpoint import load_checkpoint_file
from kd_plugin.cli.compress_classifier import build_parser, settings_from_args
from kd_plugin.data import load_split
from kd_plugin.distill.features import FeatureTaps, embedding_point
from kd_plugin.distill.losses import create_loss, parse_loss_spec
from kd_plugin.distill.losses.crd import ContrastParts
from kd_plugin.distill.losses.fitnet import ConvRegressor
from kd_plugin.distill.policy import KnowledgeDistillationPolicy
from kd_plugin.engine.trainer import run_training
from kd_plugin.models import create_model
from kd_plugin.util.errors import KDPluginError

pytestmark = pytest.mark.usefixtures("restore_threads")


def test_taps_capture_named_outputs_and_inputs_before_in_place_changes():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(inplace=True), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 2 * 2, 3))
    taps = FeatureTaps(model, ["0", "3@in"]).attach()
    x = torch.randn(2, 3, 2, 2)
    model(x)
    got = taps.take()
    expected = F.conv2d(x, model[0].weight, model[0].bias)
    assert torch.allclose(got["0"], expected) and (got["0"] < 0).any()  # before the in-place ReLU
    assert torch.allclose(got["3@in"], expected.clamp(min=0).flatten(1))
    assert embedding_point(create_model("cnn5")) == "fc2@in"
    with pytest.raises(KDPluginError, match=r"'layer9' is not a module of the student cnn5_cifar \(its stages: "
                                            r"features.3, features.7, features.11\)"):
        FeatureTaps(create_model("cnn5"), ["layer9"])


def test_attention_transfer_matches_its_formula():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 8, 8)
    loss = create_loss("at", layers="a", teacher_layers="b")
    loss.pairs = [("a", "b")]
    (term,) = loss.feature_terms(type("F", (), {"student": {"a": s}, "teacher": {"b": t}})(), None, 0)
    # by hand: the teacher's 8x8 map is average-pooled to 4x4, maps are channel means of squares, L2-normalised
    t_small = t.reshape(2, 5, 4, 2, 4, 2).mean(dim=(3, 5))
    maps = [f.pow(2).mean(1).reshape(2, -1) for f in (s, t_small)]
    maps = [m / m.norm(dim=1, keepdim=True) for m in maps]
    assert term.name == "AT Loss" and term.weight == 1000.0
    assert torch.allclose(term.value, (maps[0] - maps[1]).pow(2).mean())


@pytest.mark.parametrize("student,teacher,kind", [((8, 16, 16), (4, 8, 8), torch.nn.Conv2d),
                                                  ((8, 8, 8), (4, 16, 16), torch.nn.ConvTranspose2d),
                                                  ((8, 6, 6), (4, 4, 4), torch.nn.Conv2d)])
def test_fitnet_regressor_maps_the_hint_to_the_guided_shape(student, teacher, kind):
    regressor = ConvRegressor(student, teacher)
    assert isinstance(regressor.conv, kind) and regressor(torch.randn(2, *student)).shape == (2, *teacher)


def test_crd_negatives_come_from_other_classes_and_memory_stays_normalized():
    labels = torch.arange(40) % 4
    parts = ContrastParts(6, 5, 8, 40, labels, nce_k=50, nce_t=0.07, nce_m=0.5)
    indices = torch.tensor([0, 5, 10, 39])
    negatives = parts.negatives(indices)
    assert negatives.shape == (4, 50) and (labels[negatives] != labels[indices][:, None]).all()
    assert len(set(negatives.flatten().tolist())) > 20  # spread over the other classes, not one image
    value = parts(torch.randn(4, 6), torch.randn(4, 5), indices)
    assert torch.isfinite(value) and value > 0
    assert torch.allclose(parts.memory_student[indices].norm(dim=1), torch.ones(4))
    state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in parts.state_dict().items()}
    after = parts.negatives(indices)
    parts.load_state_dict(state)
    assert torch.equal(parts.negatives(indices), after)  # the sampler's state is part of the checkpoint


def test_combined_loss_routes_arguments_and_specs_parse():
    loss = create_loss("kd+at", beta=10.0)
    assert [p.name for p in loss.parts] == ["kd", "at"] and loss.parts[1].beta == 10.0 and loss.uses_features
    with pytest.raises(KDPluginError, match="no part takes argument 'alpha'"):
        create_loss("kd+at", alpha=1.0)
    assert parse_loss_spec("dkd+fitnet:hint=layer2") == ("dkd+fitnet", {"hint": "layer2"}, False)
    with pytest.raises(KDPluginError, match="must be one module name"):
        create_loss("fitnet", hint=3)


def test_fitnet_stage_one_trains_only_the_hint():
    torch.manual_seed(0)
    student, teacher = create_model("cnn5"), create_model("cnn5")
    policy = KnowledgeDistillationPolicy(student, teacher, loss="fitnet", loss_args={"stage1_epochs": 1})
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    train = type("S", (), {"images": images, "labels": torch.arange(4), "__len__": lambda self: 4})()
    policy.feature_source.prepare(train, "cpu")
    for epoch, classifier_trains in ((0, False), (1, True)):
        student.zero_grad(set_to_none=True)
        policy.on_epoch_begin(student, None, None)
        out = student(torch.randn(4, 3, 32, 32))
        ce = F.cross_entropy(out, torch.arange(4))
        policy.before_backward_pass(student, epoch, 0, 1, ce, None).overall_loss.backward()
        policy.on_epoch_end(student, None, None)
        assert (student.fc2.weight.grad is not None) == classifier_trains
        assert student.features[0].weight.grad is not None and policy.loss_state[0].conv.weight.grad is not None


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return support.kd_inputs(tmp_path_factory)


def loss_state(path):
    (state,) = [s for s in load_checkpoint_file(path).content["compression_sched"]["policy_states"]
                if "last_epoch" not in s]
    return state


@pytest.mark.parametrize("loss", [["--kd-loss", "crd", "--kd-loss-arg", "nce_k=16", "--kd-loss-arg", "feat_dim=8"],
                                  ["--kd-loss", "kd+fitnet", "--kd-loss-arg", "hint=features.7"]])
def test_feature_losses_log_their_terms_and_resume_exactly(inputs, tmp_path, loss):
    run_training(settings_from_args(build_parser().parse_args(support.kd_argv(inputs, tmp_path / "whole", *loss))))
    with pytest.raises(Crash):
        run_training(settings_from_args(build_parser().parse_args(support.kd_argv(inputs, tmp_path / "cut", *loss))),
                     crash_at_epoch(4))  # after the LR milestone at 3: the regressor's group follows it
    cut = support.last_checkpoint(tmp_path / "cut")
    run_training(settings_from_args(build_parser().parse_args(
        support.kd_argv(inputs, tmp_path / "resumed", *loss, "--resume-from", cut))))
    whole, resumed = support.last_checkpoint(tmp_path / "whole"), support.last_checkpoint(tmp_path / "resumed")
    assert support.bit_identical(whole, resumed)
    a, b = loss_state(whole), loss_state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    groups = load_checkpoint_file(whole).content["optimizer_state_dict"]["param_groups"]
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(groups[0]["lr"]) == pytest.approx(0.05 * 0.2)
    with open(glob.glob(os.path.join(str(tmp_path / "whole"), "kd___*", "training.csv"))[0]) as fh:
        rows = list(csv.DictReader(fh))
    term = "train CRD Loss" if "crd" in loss else "train Hint Loss"
    assert all(float(row[term]) > 0 for row in rows)
    assert "kd+fitnet" not in loss or all(float(row["train Distill Loss"]) >= 0 for row in rows)
    log = Path(glob.glob(os.path.join(str(tmp_path / "whole"), "kd___*", "*.log"))[0]).read_text()
    assert log.count("the teacher runs live every step") == 1 and "Teacher-output cache " not in log


def test_cifar100_zoo_pair_distils_with_attention_transfer(tmp_path):
    from kd_plugin.checkpoint import save_checkpoint
    from kd_plugin.data import default_classes, write_synthetic

    data = write_synthetic(str(tmp_path / "d"), 50, 20, dataset="cifar100")
    teacher = save_checkpoint(0, "wrn_16_2_cifar100", create_model("wrn_16_2", classes=default_classes("cifar100")),
                              name="t", dir=str(tmp_path))
    argv = [data, "-a", "resnet8x4", "--epochs", "1", "-b", "25", "--no-progress", "-o", str(tmp_path / "o"),
            "--kd-teacher", "wrn_16_2", "--kd-resume", teacher, "--kd-loss", "at", "--seed", "0", "--vs", "0"]
    summary = run_training(settings_from_args(build_parser().parse_args(argv)))
    assert len(summary["test_per_class"]) == 100 and float(summary["rows"][0]["train AT Loss"]) > 0
    assert len(load_split(data, "test").classes) == 100


def test_yaml_names_several_losses_as_a_list(tmp_path):
    from kd_plugin.checkpoint import save_checkpoint
    from kd_plugin.distill.extension import KnowledgeDistillationExtension, with_loss_flags

    student, teacher = create_model("cnn5"), create_model("cnn5")
    path = save_checkpoint(0, "cnn5_cifar", teacher, name="t", dir=str(tmp_path))
    extension = KnowledgeDistillationExtension(student, "cnn5", path, loss=["kd", "at"], loss_args={"beta": 5.0})
    assert extension.distillation_loss.name == "kd+at" and extension.distillation_loss.parts[1].beta == 5.0
    sched = {"extensions": {"kd": {"class": "KnowledgeDistillationExtension", "loss": ["kd", "at"],
                                   "loss_args": {"beta": 5.0}}}}
    assert with_loss_flags(sched, None, {"p": 3.0})["extensions"]["kd"]["loss_args"] == {"beta": 5.0, "p": 3.0}

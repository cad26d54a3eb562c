"""Issue 13, part 2: Deep Mutual Learning. Two peers for two epochs equal a hand-written DML loop; a run killed
mid-epoch (SIGKILL, SIGTERM) and resumed equals the unbroken one bit for bit; each peer's best checkpoint loads
alone; the YAML form and the flag form build the same run."""
import glob
import json
import os
import signal
import subprocess
import sys

import pytest
import run_support as support
import torch
import torch.nn.functional as F
from run_support import restore_threads  # noqa: F401 (fixture)

from kd_plugin.checkpoint import load_checkpoint_file, load_model
from kd_plugin.cli.compress_classifier import build_parser, main, settings_from_args
from kd_plugin.data import (
    TensorLoader,
    load_split,
    validation_split,
    write_synthetic_cifar,
)
from kd_plugin.distill.mutual import mutual_losses, peer_labels
from kd_plugin.distill.teacher import build_teacher
from kd_plugin.engine.mutual import run_mutual_learning
from kd_plugin.models import create_model
from kd_plugin.util.errors import KDPluginError, TrainingInterrupted
from kd_plugin.util.normalization import DISTILLER, normalization_of

PEERS = ["cnn5_cifar", "vgg6as_bn_cifar"]
SEED, LR, BATCH, EPOCHS, STEPS = 3, 0.05, 8, 2, 4  # 40 images, 8 held out: 4 steps of 8 per epoch
LR_SCHEDULE = """\
lr_schedulers:
  halve: {class: MultiStepLR, milestones: [1], gamma: 0.5}
policies:
  - lr_scheduler: {instance_name: halve}
    starting_epoch: 0
    ending_epoch: 2
    frequency: 1
"""
MUTUAL_SCHEDULE = LR_SCHEDULE + """\
extensions:
  dml: {class: MutualLearning, peers: [cnn5, vgg6as]}
"""
# Kill the child just before step 2 of epoch 1: its last checkpoint is epoch 0's.
SIGKILL_CHILD = r"""
import os, signal, sys
from kd_plugin.cli.compress_classifier import build_parser, settings_from_args
from kd_plugin.engine.mutual import run_mutual_learning

def factory(run):
    seen = [0]
    def hook(batch):
        if seen[0] == len(run.train_loader) + 2:
            os.kill(os.getpid(), signal.SIGKILL)
        seen[0] += 1
    return hook

run_mutual_learning(settings_from_args(build_parser().parse_args(sys.argv[1:])), factory)
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutual")
    (root / "lr.yaml").write_text(LR_SCHEDULE)
    (root / "mutual.yaml").write_text(MUTUAL_SCHEDULE)
    data = write_synthetic_cifar(str(root / "data"), train_images=40, test_images=20, seed=4)
    return {"root": root, "data": data, "lr": str(root / "lr.yaml"), "mutual": str(root / "mutual.yaml")}


def argv(inputs, out, *extra, form="flags"):
    peers = ["--mutual", "cnn5", "vgg6as", "--compress", inputs["lr"]] if form == "flags" else \
        ["--compress", inputs["mutual"]]
    return [inputs["data"], *peers, "--epochs", str(EPOCHS), "-b", str(BATCH), "--lr", str(LR), "--seed", str(SEED),
            "--vs", "0.2", "--cpu", "--threads", "1", "--no-progress", "-n", "dml", "-o", str(out),
            *extra]


def settings(args):
    s = settings_from_args(build_parser().parse_args(args))
    s.command = ["compress_classifier", *args]
    return s


@pytest.fixture(scope="module")
def reference(inputs):
    """The unbroken run (flag form), in this process."""
    threads = torch.get_num_threads()
    try:
        summary = run_mutual_learning(settings(argv(inputs, inputs["root"] / "reference")))
    finally:
        torch.set_num_threads(threads)
    return summary


def group_checkpoint(out):
    (path,) = glob.glob(os.path.join(str(out), "dml___*", "dml_checkpoint.pth.tar"))
    return path


def resumable_state(path):
    """Everything that decides the rest of the run: every peer's weights, optimizer buffers, LR, LR scheduler
    state and best weights so far."""
    checkpoint = load_checkpoint_file(path)
    state = {f"model.{k}": v for k, v in checkpoint.state_dict.items()}
    for index, peer in enumerate(checkpoint.plugin_state["mutual"]["states"]):
        for param, buffers in peer["optimizer_state_dict"]["state"].items():
            state.update({f"{index}.optimizer.{param}.{k}": v for k, v in buffers.items()})
        state[f"{index}.lr"] = torch.tensor([g["lr"] for g in peer["optimizer_state_dict"]["param_groups"]])
        state[f"{index}.lr_schedule"] = torch.tensor(peer["compression_sched"]["policy_states"][0]["last_epoch"])
        state.update({f"{index}.best.{k}": v for k, v in peer["best_state_dict"].items()})
        state[f"{index}.best_epoch"] = torch.tensor(peer["best_epoch"])
    state["epoch"] = torch.tensor(checkpoint.epoch)
    return state


def assert_bit_identical(path_a, path_b):
    a, b = resumable_state(path_a), resumable_state(path_b)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


# --- the loss ------------------------------------------------------------------------------------------------
def test_mutual_losses_match_the_formula_and_leave_the_other_peers_without_gradient():
    torch.manual_seed(0)
    logits = [torch.randn(6, 10, requires_grad=True) for _ in range(3)]
    labels = torch.randint(0, 10, (6,))
    temperature = 2.0
    losses = mutual_losses(logits, labels, temperature)
    for k, loss in enumerate(losses):
        values = {name: float(value.detach()) for name, value in loss._asdict().items()}
        log_p = torch.log_softmax(logits[k] / temperature, dim=1)
        kls = [(torch.softmax(logits[j] / temperature, 1) * (torch.log_softmax(logits[j] / temperature, 1) - log_p))
               .sum(1).mean() for j in range(3) if j != k]
        expected_kl = sum(kls) / 2
        expected_ce = float(F.cross_entropy(logits[k], labels).detach())
        assert values["mutual"] == pytest.approx(float(expected_kl.detach()), rel=1e-6)
        assert values["objective"] == pytest.approx(expected_ce, rel=1e-6)
        assert values["overall"] == pytest.approx(expected_ce + 4.0 * float(expected_kl.detach()), rel=1e-6)
        grads = torch.autograd.grad(loss.overall, logits, allow_unused=True)
        assert all(g is None for i, g in enumerate(grads) if i != k) and grads[k] is not None


def test_peer_labels_number_repeated_archs():
    assert peer_labels(["cnn5_cifar", "vgg6as_bn_cifar"]) == ["cnn5_cifar", "vgg6as_bn_cifar"]
    assert peer_labels(["cnn5_cifar", "vgg6as_bn_cifar", "cnn5_cifar"]) == ["cnn5_cifar-1", "vgg6as_bn_cifar",
                                                                          "cnn5_cifar-2"]


# --- the run against a hand-written DML loop --------------------------------------------------------------------
def hand_written_dml(data):
    """Deep Mutual Learning for two peers written out with torch alone: the engine's data pipeline gives the
    batches; initial weights come from the seed, created in peer order."""
    torch.manual_seed(SEED)
    models = [create_model(arch) for arch in PEERS]
    optimizers = [torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4) for m in models]
    schedules = [torch.optim.lr_scheduler.MultiStepLR(o, milestones=[1], gamma=0.5) for o in optimizers]
    train, _ = validation_split(load_split(data, "train"), 0.2, seed=SEED)
    loader = TensorLoader(train, BATCH, "y", shuffle=True, seed=SEED)
    epoch_losses = []
    for epoch in range(EPOCHS):
        sums = [[0.0, 0.0] for _ in models]
        for model in models:
            model.train()
        for batch in loader.epoch(epoch):
            logits = [model(batch.inputs) for model in models]
            for k, (_model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
                other = logits[1 - k].detach()
                ce = F.cross_entropy(logits[k], batch.labels)
                kl = F.kl_div(F.log_softmax(logits[k], dim=1), F.softmax(other, dim=1), reduction="batchmean")
                optimizer.zero_grad()
                (ce + kl).backward()
                optimizer.step()
                sums[k][0] += float(ce.detach()) * len(batch.labels)
                sums[k][1] += float(kl.detach()) * len(batch.labels)
        for schedule in schedules:
            schedule.step()
        epoch_losses.append([(ce / len(train), kl / len(train)) for ce, kl in sums])
    return models, epoch_losses


@pytest.mark.usefixtures("restore_threads")
def test_two_peers_equal_a_hand_written_dml_loop(inputs, reference):
    torch.set_num_threads(1)  # as the run did (--threads 1): same reductions, so the same floats
    models, epoch_losses = hand_written_dml(inputs["data"])
    group = load_checkpoint_file(group_checkpoint(inputs["root"] / "reference"))
    worst = 0.0
    for k, model in enumerate(models):
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                worst = max(worst, float((group.state_dict[f"{k}.{name}"] - value).abs().max()))
    print(f"\nmutual learning vs hand-written DML: max |parameter difference| {worst}")
    assert worst <= 1e-6
    assert [int(row["epoch"]) for row in reference["rows"]] == [0, 1]
    for row, per_peer in zip(reference["rows"], epoch_losses, strict=True):
        for label, (ce, kl) in zip(PEERS, per_peer, strict=True):
            assert float(row[f"{label} train Objective Loss"]) == pytest.approx(ce, rel=1e-5)
            assert float(row[f"{label} train Mutual Loss"]) == pytest.approx(kl, rel=1e-5)
            assert float(row[f"{label} train Overall Loss"]) == pytest.approx(ce + kl, rel=1e-5)
            assert f"{label} valid top1" in row and f"{label} train top1" in row
    assert [float(r[f"{PEERS[1]} lr"]) for r in reference["rows"]] == [LR, LR / 2]  # each peer's own schedule


# --- exact resume ---------------------------------------------------------------------------------------------
def test_sigkill_mid_epoch_then_resume_equals_the_unbroken_run(inputs, reference, tmp_path):
    env = support.child_env()
    killed = subprocess.run([sys.executable, "-c", SIGKILL_CHILD, *argv(inputs, tmp_path / "killed", form="yaml")],
                            env=env, capture_output=True, text=True, timeout=240, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-500:]
    saved = group_checkpoint(tmp_path / "killed")
    assert load_checkpoint_file(saved).epoch == 0
    resumed = subprocess.run([sys.executable, "-m", "kd_plugin.compress_classifier",
                              *argv(inputs, tmp_path / "resumed", "--resume-from", saved)],
                             env=env, capture_output=True, text=True, timeout=240, check=False)
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert "Teacher-output cache: off (mutual learning" in resumed.stderr
    assert_bit_identical(group_checkpoint(inputs["root"] / "reference"), group_checkpoint(tmp_path / "resumed"))
    with open(glob.glob(str(tmp_path / "resumed" / "dml___*" / "summary.json"))[0]) as fh:
        summary = json.load(fh)
    assert [(p["arch"], p["best_epoch"], p["test_top1"]) for p in summary["peers"]] == \
        [(p["arch"], p["best_epoch"], p["test_top1"]) for p in reference["peers"]]


def sigterm_before(step):
    def factory(run):
        seen = [0]

        def hook(_batch):
            if seen[0] == step:
                os.kill(os.getpid(), signal.SIGTERM)
            seen[0] += 1

        return hook

    return factory


@pytest.mark.usefixtures("restore_threads")
def test_sigterm_mid_epoch_saves_a_checkpoint_that_resumes_bit_identically(inputs, reference, tmp_path):
    with pytest.raises(TrainingInterrupted) as info:
        run_mutual_learning(settings(argv(inputs, tmp_path / "stopped")), sigterm_before(1))
    assert info.value.exit_code == 143
    assert "SIGTERM at epoch 0, batch 2: resumable checkpoint saved to" in str(info.value)
    saved = group_checkpoint(tmp_path / "stopped")
    assert str(info.value).endswith(f"--resume-from {saved}")
    assert load_checkpoint_file(saved).plugin_state["resume_batch"] == 2
    run_mutual_learning(settings(argv(inputs, tmp_path / "resumed", "--resume-from", saved)))
    assert_bit_identical(group_checkpoint(inputs["root"] / "reference"), group_checkpoint(tmp_path / "resumed"))


# --- each peer's best checkpoint stands alone ----------------------------------------------------------------
def test_each_peer_best_checkpoint_loads_alone_and_evaluates_to_the_summary(inputs, reference, tmp_path, capsys):
    assert [p["arch"] for p in reference["peers"]] == PEERS and reference["best_chosen_on"] == "validation top1"
    for peer in reference["peers"]:
        path = peer["checkpoint"]
        assert os.path.basename(path) == f"dml_{peer['arch']}_best.pth.tar"
        _, checkpoint = load_model(path)
        assert checkpoint.arch == peer["arch"] and checkpoint.epoch == peer["best_epoch"]
        assert checkpoint.extras["best_top1"] == peer["best_valid_top1"]
        assert build_teacher(create_model("cnn5"), peer["arch"], path) is not None  # what --kd-resume does
        from kd_plugin.cli.kd_plugin import main as kd_plugin_main

        assert kd_plugin_main(["evaluate", path, "--data", inputs["data"], "-o", str(tmp_path), "--repeats", "1"]) == 0
        (card,) = glob.glob(str(tmp_path / f"dml_{peer['arch']}_best*.json"))
        with open(card) as fh:
            assert json.load(fh)["test_top1"] == peer["test_top1"]
    from kd_plugin.cli.kd_plugin import main as kd_plugin_main

    capsys.readouterr()
    paths = [peer["checkpoint"] for peer in reference["peers"]]
    assert kd_plugin_main(["report", *paths, "--data", inputs["data"], "-o", str(tmp_path / "report"), "--device",
                           "cpu", "--repeats", "1", "--no-train-accuracy"]) == 0
    printed = capsys.readouterr().out
    for peer in reference["peers"]:
        assert f"({peer['arch']}): test top-1 {peer['test_top1']:.2f}%" in printed
    group = load_checkpoint_file(reference["checkpoint"])
    assert group.arch is None and group.plugin_state["mutual"]["peers"] == PEERS


# --- the YAML form and refusals --------------------------------------------------------------------------------
def test_yaml_form_builds_the_same_settings_as_the_flags(inputs, tmp_path):
    from_flags, from_yaml = settings(argv(inputs, tmp_path)), settings(argv(inputs, tmp_path, form="yaml"))
    assert from_yaml.mutual.peers == ["cnn5_cifar", "vgg6as_bn_cifar"] and from_flags.mutual.peers == ["cnn5", "vgg6as"]
    assert from_yaml.mutual.temperature == 1.0 and from_flags.mutual.temperature is None
    overridden = settings(argv(inputs, tmp_path, "--mutual", "cnn5", "cnn5", "--mutual-temp", "3", form="yaml"))
    assert overridden.mutual.peers == ["cnn5", "cnn5"] and overridden.mutual.temperature == 3.0
    with_arch = tmp_path / "with_arch.yaml"
    with_arch.write_text("training: {arch: cnn5, epochs: 7}\n" + MUTUAL_SCHEDULE)
    from_file = settings([inputs["data"], "--compress", str(with_arch)])
    assert from_file.model.arch is None and from_file.schedule.epochs == 7 and from_file.mutual == from_yaml.mutual


@pytest.mark.parametrize("schedule,message", [
    ("extensions:\n  m: {class: MutualLearning, peers: [cnn5]}\n", "peers must be a list of two or more model names"),
    ("extensions:\n  m: {class: MutualLearning, peers: [cnn5, vgg6as], temperature: 0}\n",
     "temperature must be a number > 0"),
    (("extensions:\n  m: {class: MutualLearning, peers: [cnn5, vgg6as]}\npolicies:\n  - extension: {instance_name: m}\n"
      "    starting_epoch: 0\n    ending_epoch: 1\n    frequency: 1\n"), "MutualLearning covers the whole run"),
])
def test_bad_mutual_schedules_are_refused_in_one_line(inputs, tmp_path, capsys, schedule, message):
    path = tmp_path / "bad.yaml"
    path.write_text(schedule)
    assert main([inputs["data"], "--compress", str(path), "--epochs", "1", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "out").exists()


def test_a_single_model_run_refuses_the_mutual_extension(inputs, tmp_path):
    from kd_plugin.engine.trainer import run_training

    s = settings_from_args(build_parser().parse_args([inputs["data"], "-a", "cnn5", "-o", str(tmp_path)]))
    s.schedule.file = inputs["mutual"]
    with pytest.raises(KDPluginError, match="MutualLearning trains several peers together"):
        run_training(s)


def test_resume_with_other_peers_or_a_single_model_checkpoint_is_refused(inputs, reference, tmp_path, capsys):
    group = reference["checkpoint"]
    other = argv(inputs, tmp_path, "--resume-from", group)
    other[other.index("vgg6as")] = "vgg7"
    assert main(other) == 2
    assert "checkpoint holds peers cnn5_cifar vgg6as_bn_cifar, this run has cnn5_cifar vgg7_bn_cifar" in \
        capsys.readouterr().err
    assert main(argv(inputs, tmp_path, "--resume-from", reference["peers"][0]["checkpoint"])) == 2
    assert "a single-model checkpoint (cnn5_cifar), not a mutual-learning one" in capsys.readouterr().err
    assert main(argv(inputs, tmp_path, "--resume-from", group, "--seed", "4")) == 2
    assert "resuming would change the experiment (seed: 3 -> 4, " in capsys.readouterr().err


@pytest.mark.usefixtures("restore_threads")
def test_reset_optimizer_takes_every_peer_weights_and_starts_over(inputs, reference, tmp_path):
    summary = run_mutual_learning(settings(argv(inputs, tmp_path, "--resume-from", reference["checkpoint"],
                                                "--reset-optimizer", "--epochs", "1", "--seed", "5")))
    assert [int(row["epoch"]) for row in summary["rows"]] == [0]
    assert float(summary["rows"][0][f"{PEERS[0]} lr"]) == LR


def test_a_resume_that_changes_an_optimizer_setting_is_refused_as_for_one_model(inputs, reference, tmp_path, capsys):
    group = reference["checkpoint"]
    for flag, value, change in (("--lr", "0.2", f"lr: {LR} -> 0.2"), ("--wd", "0.01", "weight_decay: 0.0001 -> 0.01"),
                                ("--momentum", "0.5", "momentum: 0.9 -> 0.5")):
        assert main(argv(inputs, tmp_path / "refused", "--resume-from", group, flag, value)) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and change in err, err
    assert not (tmp_path / "refused").exists() or not list((tmp_path / "refused").glob("dml___*/*.pth.tar"))


@pytest.mark.parametrize("flags", [["--kd-loss", "dkd"], ["--kd-logit-standardize"], ["--kd-temp", "2"]])
def test_mutual_refuses_distillation_flags_it_would_ignore(inputs, tmp_path, capsys, flags):
    assert main(argv(inputs, tmp_path, *flags)) == 2
    assert f"it does not take {flags[0].replace('--kd-temp', '--kd-temperature')}" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_threads")
def test_the_group_is_fed_and_records_the_chosen_normalization(inputs, tmp_path):
    summary = run_mutual_learning(settings(argv(inputs, tmp_path, "--epochs", "1", "--normalization", "distiller")))
    for peer in summary["peers"]:
        model, checkpoint = load_model(peer["checkpoint"])
        assert checkpoint.normalization_note == "recorded in the checkpoint"
        assert normalization_of(model).same_as(DISTILLER)
    group = load_checkpoint_file(group_checkpoint(tmp_path))
    assert group.normalization()[0].same_as(DISTILLER)
    assert group.plugin_state["identity"]["normalization"].startswith("distiller (mean (0.5, 0.5, 0.5)")

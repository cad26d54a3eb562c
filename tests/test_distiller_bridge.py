"""kd-plugin inside a real IntelLabs Distiller (issue 4).

Tests marked ``needs_distiller`` skip where ``import distiller`` does not give IntelLabs Distiller (CI);
run them in an environment that has it, e.g. ``/path/to/distiller-venv/bin/python -m pytest
tests/test_distiller_bridge.py``. The others check what happens without Distiller and run everywhere.
"""
import glob
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import yaml

import kd_plugin
from kd_plugin import create_model, list_models
from kd_plugin.bridge import DistillerUnavailable, distiller_available
from kd_plugin.checkpoint import load_checkpoint_file, load_model, save_checkpoint
from kd_plugin.compress_classifier import main as compress_classifier
from kd_plugin.data import write_synthetic_cifar
from kd_plugin.distill.backend import BUILTIN
from kd_plugin.distill.policy import DistillationMixin, KnowledgeDistillationPolicy
from kd_plugin.spec import RunSpec
from kd_plugin.engine.trainer import TrainingRun, run_training
from kd_plugin.protocol.config import read_schedule
from kd_plugin.protocol.runtime import select_runtime

HAVE_DISTILLER = distiller_available()
needs_distiller = pytest.mark.skipif(not HAVE_DISTILLER,
                                     reason="IntelLabs Distiller is not importable here "
                                            "(it is not on PyPI; see README 'Running inside Distiller')")
SCHEDULES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "schedules")
VGG_BN_BOTH_OWN = ["vgg11_bn_cifar", "vgg13_bn_cifar", "vgg16_bn_cifar", "vgg19_bn_cifar"]
# Same engine, data, model init and KD arithmetic: only the scheduler/parser/policy base classes differ, so the
# two backends are expected to agree to float32 round-off; measured: identical (difference 0.0).
BACKEND_LOSS_RTOL = 1e-6


def compress_classifier_script():
    """Distiller's examples/classifier_compression/compress_classifier.py next to the imported package."""
    import distiller

    path = os.path.join(os.path.dirname(os.path.dirname(distiller.__file__)), "examples", "classifier_compression",
                        "compress_classifier.py")
    if not os.path.isfile(path):
        pytest.skip(f"Distiller's example script is not next to the installed package ({path})")
    return path


def without_distiller(monkeypatch):
    """Make ``distiller`` look uninstalled, also where it is installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distiller" else
                        find_spec(name, *a))


def settings(data, out, **overrides):
    values = dict(data=data, arch="cnn5", epochs=1, batch_size=50, lr=0.05, seed=7, out_dir=out, progress=False,
                  verbose=False, validation_split=0.2)
    values.update(overrides)
    return RunSpec.from_flags(**values)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """60 training and 20 test images: Distiller's loop and a ResNet18 teacher are slow on a CPU."""
    return write_synthetic_cifar(str(tmp_path_factory.mktemp("small_cifar")), train_images=60, test_images=20)


@pytest.fixture(scope="module")
def teacher_checkpoint(small_data, tmp_path_factory):
    """A resnet18_cifar teacher trained one epoch by kd-plugin's engine."""
    out = str(tmp_path_factory.mktemp("teacher"))
    summary = run_training(settings(small_data, out, arch="resnet18_cifar", batch_size=30, name="teacher",
                                    teacher_cache="off"))
    return summary["checkpoint"]


def kd_schedule(tmp_path, teacher_arch, teacher_checkpoint, source="kd_resnet18_to_vgg7_a0.5_t1.5.yaml",
                lr_schedule=True):
    """One of schedules/ with its teacher pointed at TEACHER_CHECKPOINT (None: a fresh teacher)."""
    sched = read_schedule(os.path.join(SCHEDULES, source), distiller_components=True)
    kd = next(d for d in sched["extensions"].values() if d["class"] == "KnowledgeDistillationExtension")
    kd.update(teacher_arch=teacher_arch, teacher_checkpoint=teacher_checkpoint)
    if teacher_checkpoint is None:
        kd["random_teacher"] = True  # a teacher without weights must be asked for (issue 12)
    if not lr_schedule:
        sched.pop("lr_schedulers")
        sched["policies"] = [p for p in sched["policies"] if "lr_scheduler" not in p]
    path = tmp_path / source
    path.write_text(yaml.safe_dump(sched, sort_keys=False))
    return str(path)


# --- without Distiller ------------------------------------------------------------------------------------

def test_without_distiller_backend_distiller_is_a_one_line_error(tiny_data, tmp_path, monkeypatch, capsys):
    without_distiller(monkeypatch)
    code = compress_classifier([tiny_data, "-a", "cnn5", "--epochs", "1", "-o", str(tmp_path), "--backend",
                                "distiller", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "--backend distiller: Distiller is not installed" in err
    assert not glob.glob(str(tmp_path / "*"))  # nothing started


def test_without_distiller_auto_is_builtin_and_registration_says_why(monkeypatch):
    without_distiller(monkeypatch)
    assert select_runtime("auto") is BUILTIN
    assert select_runtime("builtin") is BUILTIN
    with pytest.raises(DistillerUnavailable, match="not installed.*README"):
        kd_plugin.register_with_distiller()


def test_without_distiller_the_launcher_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from kd_plugin.distiller_launcher import main as launcher

    without_distiller(monkeypatch)
    script = tmp_path / "compress_classifier.py"
    script.write_text("raise SystemExit('must not run')\n")
    assert launcher([str(script), "DATA"]) == 2
    assert "Distiller is not installed" in capsys.readouterr().err
    assert launcher([str(tmp_path / "missing.py")]) == 2
    assert launcher([]) == 2


# --- registration -----------------------------------------------------------------------------------------

@needs_distiller
def test_every_plugin_arch_is_created_by_distillers_create_model_and_accepted_by_its_parser():
    import distiller.models

    names = distiller.models.ALL_MODEL_NAMES
    kd_plugin.register_with_distiller()
    registration = kd_plugin.register_with_distiller()  # idempotent
    assert distiller.models.ALL_MODEL_NAMES is names and names == sorted(set(names))
    assert sorted(registration.models + registration.distillers_own) == list_models()
    assert registration.distillers_own == VGG_BN_BOTH_OWN
    for name in list_models():
        assert name in names
        model = distiller.models.create_model(False, "cifar10", name, parallel=False)
        assert (model.arch, model.dataset) == (name, "cifar10")
        if name not in VGG_BN_BOTH_OWN:
            assert type(model) is type(create_model(name))
    sys.path.insert(0, os.path.dirname(compress_classifier_script()))
    try:  # the parser compress_classifier.py builds, from its sibling parser.py
        import parser as example_parser
        from distiller.apputils import image_classifier

        args = example_parser.add_cmdline_args(image_classifier.init_classifier_compression_arg_parser(True)) \
            .parse_args(["DATA", "--arch", "VGG7_bn_cifar", "--kd-teacher", "resnet18_cifar"])
    finally:
        sys.path.pop(0)
    assert (args.arch, args.kd_teacher) == ("vgg7_bn_cifar", "resnet18_cifar")


@needs_distiller
@pytest.mark.parametrize("arch", VGG_BN_BOTH_OWN)
def test_distillers_vgg_bn_keep_distillers_class_and_take_our_weights_strictly(arch):
    import distiller.models

    kd_plugin.register_with_distiller()
    theirs = distiller.models.create_model(False, "cifar10", arch, parallel=False)
    assert type(theirs).__module__.startswith("distiller.models.")
    ours = create_model(arch).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(theirs.eval()(x), ours(x))


# --- YAML schedules in Distiller's own parser -------------------------------------------------------------

@needs_distiller
@pytest.mark.parametrize("source", sorted(os.listdir(SCHEDULES)))
def test_our_schedules_build_in_distillers_file_config(source, tmp_path):
    import distiller
    import distiller.config

    from kd_plugin.bridge.policies import KnowledgeDistillationExtension

    kd_plugin.register_with_distiller()
    sched = read_schedule(os.path.join(SCHEDULES, source), distiller_components=True)  # the AGP ones prune
    path = os.path.join(SCHEDULES, source)
    if "KnowledgeDistillationExtension" in str(sched.get("extensions")):
        # a fresh teacher instead of the conventional checkpoint path; everything else as shipped
        kd = next(d for d in sched["extensions"].values() if d["class"] == "KnowledgeDistillationExtension")
        path = kd_schedule(tmp_path, kd["teacher_arch"], None, source)
    model = distiller.models.create_model(False, "cifar10", sched["training"]["arch"], parallel=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = distiller.file_config(model, optimizer, path)  # Distiller's YAML loader and parser
    policies = list(scheduler.sched_metadata)
    assert isinstance(scheduler, distiller.CompressionScheduler)
    assert all(isinstance(p, distiller.ScheduledTrainingPolicy) for p in policies)
    assert any(isinstance(p, distiller.LRPolicy) for p in policies)
    kd = [p for p in policies if isinstance(p, DistillationMixin)]
    assert len(kd) == ("KnowledgeDistillationExtension" in str(sched.get("extensions")))
    assert all(type(p) is KnowledgeDistillationExtension for p in kd)


@needs_distiller
def test_distillers_scheduler_drives_our_policy_teacher_in_eval_mode():
    import distiller

    runtime = select_runtime("distiller")
    torch.manual_seed(0)
    student, teacher = create_model("cnn5"), create_model("vgg6as")
    teacher.train()  # Distiller's create_model returns training-mode networks
    running_mean = teacher.features[1].running_mean.clone()
    policy = runtime.KnowledgeDistillationPolicy(student, teacher, 2.0, (0.7, 0.3, 0.0))
    builtin_policy = KnowledgeDistillationPolicy(student, teacher, 2.0, (0.7, 0.3, 0.0))
    scheduler = distiller.CompressionScheduler(student, device=torch.device("cpu"))
    scheduler.add_policy(policy, starting_epoch=0, ending_epoch=1, frequency=1)
    inputs, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    scheduler.on_epoch_begin(0)
    scheduler.on_minibatch_begin(0, 0, 1)
    torch.manual_seed(1)  # the same dropout masks for both policies' forward passes
    output = policy.forward(inputs)  # as Distiller's training loop calls args.kd_policy.forward
    assert not teacher.training and torch.equal(teacher.features[1].running_mean, running_mean)
    loss = torch.nn.functional.cross_entropy(output, labels)
    agg = scheduler.before_backward_pass(0, 0, 1, loss, return_loss_components=True)
    assert isinstance(agg, distiller.policy.PolicyLoss)
    (component,) = agg.loss_components
    assert isinstance(component, distiller.policy.LossComponent) and component.name == "Distill Loss"
    with torch.no_grad():
        kl = torch.nn.functional.kl_div(torch.log_softmax(output / 2, 1), torch.softmax(teacher(inputs) / 2, 1),
                                        reduction="batchmean")
    assert torch.allclose(agg.overall_loss, 0.3 * loss + 0.7 * 4 * kl)
    builtin_policy.on_epoch_begin(student, None, {})
    torch.manual_seed(1)
    student(inputs)
    same = builtin_policy.before_backward_pass(student, 0, 0, 1, loss, None)
    assert torch.equal(same.overall_loss, agg.overall_loss)
    scheduler.on_epoch_end(0)
    builtin_policy.on_epoch_end(student, None, {})
    assert not policy.active and policy._hook is None


# --- checkpoints both ways --------------------------------------------------------------------------------

@needs_distiller
def test_our_checkpoints_load_with_distillers_loaders(teacher_checkpoint, tmp_path):
    import distiller.apputils as apputils
    import distiller.models

    from kd_plugin.bridge.patches import distiller_runtime_patches

    kd_plugin.register_with_distiller()
    ours = load_model(teacher_checkpoint)[0]
    fresh = distiller.models.create_model(False, "cifar10", "resnet18_cifar", parallel=False)
    loaded = apputils.load_lean_checkpoint(fresh, teacher_checkpoint)  # no fix needed: weights-only content
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in loaded.state_dict().items())
    with distiller_runtime_patches():  # optimizer_type is a name in our files; Distiller calls it
        model, scheduler, optimizer, start_epoch = apputils.load_checkpoint(
            distiller.models.create_model(False, "cifar10", "resnet18_cifar", parallel=False), teacher_checkpoint)
    assert type(optimizer) is torch.optim.SGD and start_epoch == 1 and scheduler is not None
    vgg = create_model("vgg16_bn_cifar")
    path = save_checkpoint(0, "vgg16_bn_cifar", vgg, torch.optim.SGD(vgg.parameters(), lr=0.1), name="v",
                           dir=str(tmp_path))
    theirs = apputils.load_lean_checkpoint(distiller.models.create_model(False, "cifar10", "vgg16_bn_cifar",
                                                                         parallel=False), path)
    assert type(theirs).__module__.startswith("distiller.models.")
    assert theirs.state_dict().keys() == vgg.state_dict().keys()
    assert all(torch.equal(v, vgg.state_dict()[k]) for k, v in theirs.state_dict().items())


@needs_distiller
def test_distillers_checkpoints_load_in_ours(tmp_path):
    import distiller
    import distiller.apputils as apputils
    import distiller.models

    model = distiller.models.create_model(False, "cifar10", "vgg16_bn_cifar", parallel=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    apputils.save_checkpoint(3, "vgg16_bn_cifar", model, optimizer, distiller.CompressionScheduler(model),
                             {"current_top1": 1.0, "best_top1": 1.0, "best_epoch": 3}, name="d", dir=str(tmp_path))
    path = str(tmp_path / "d_checkpoint.pth.tar")
    checkpoint = load_checkpoint_file(path)
    assert (checkpoint.kind, checkpoint.arch, checkpoint.epoch) == ("distiller", "vgg16_bn_cifar", 3)
    assert checkpoint.content["optimizer_type"] == "SGD"  # a pickled class, read through the allow-list
    ours = load_model(path)[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ours.state_dict().items())


# --- Distiller's own compress_classifier.py through the launcher -------------------------------------------

def launch(args, cwd):
    command = [sys.executable, "-m", "kd_plugin.distiller_launcher", compress_classifier_script(), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)


def epoch_lines(out_dir, name):
    (log,) = glob.glob(os.path.join(out_dir, f"{name}___*", f"{name}___*.log"))
    with open(log) as fh:
        return [line for line in fh if "Epoch: [" in line]


@needs_distiller
def test_launcher_runs_distillers_compress_classifier_with_plugin_networks_kd_and_yaml(
        small_data, teacher_checkpoint, tmp_path):
    out = str(tmp_path / "logs")
    common = [small_data, "-b", "20", "--cpu", "-j", "0", "-p", "2", "--vs", "0.2", "-o", out, "--seed", "1"]
    first = launch([*common, "--arch", "vgg7_bn_cifar", "--kd-teacher", "resnet18_cifar", "--kd-resume",
                    teacher_checkpoint, "--kd-temp", "1.5", "--epochs", "1", "-n", "kd"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "registered with Distiller" in first.stderr
    lines = epoch_lines(out, "kd")
    assert lines and all("Distill Loss" in line for line in lines if "Overall Loss" in line)
    (student_checkpoint,) = glob.glob(os.path.join(out, "kd___*", "kd_checkpoint.pth.tar"))
    assert load_model(student_checkpoint)[1].arch == "vgg7_bn_cifar"  # written by Distiller's loop

    # Distiller resumes from its own checkpoint and distils with kd-plugin's YAML extension. (Without an LR
    # scheduler: Distiller cannot add one on resume when the checkpoint's optimizer never had one; torch's
    # "param 'initial_lr' is not specified" KeyError, with any schedule.)
    schedule = kd_schedule(tmp_path, "resnet18_cifar", teacher_checkpoint, lr_schedule=False)
    second = launch([*common, "--arch", "vgg7_bn_cifar", "--resume-from", student_checkpoint, "--compress",
                     schedule, "--epochs", "2", "-n", "yaml"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    lines = [line for line in epoch_lines(out, "yaml") if "Overall Loss" in line]
    assert lines and all(line.split("Epoch: [")[1].startswith("1]") and "Distill Loss" in line for line in lines)


# --- compress_classifier --backend ------------------------------------------------------------------------

@needs_distiller
def test_backends_run_the_same_experiment_with_their_own_classes(tiny_data, tmp_path):
    import distiller

    schedule = kd_schedule(tmp_path, "vgg6as", None, source="kd_vgg16_to_vgg7_a0.5_t1.5.yaml")
    sched = read_schedule(schedule)
    sched["lr_schedulers"]["original_steps"]["milestones"] = [1]  # the LR steps between the two epochs
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(sched, sort_keys=False))
    results = {}
    for backend in ("builtin", "distiller"):
        run = TrainingRun(settings(tiny_data, str(tmp_path / backend), compress=str(tmp_path / "two.yaml"), epochs=2,
                                   backend=backend)).setup()
        policies = list(run.scheduler.sched_metadata)
        if backend == "distiller":
            assert isinstance(run.scheduler, distiller.CompressionScheduler)
            assert all(isinstance(p, distiller.ScheduledTrainingPolicy) for p in policies)
            assert any(isinstance(p, distiller.LRPolicy) for p in policies)
        else:
            assert not any(isinstance(p, distiller.ScheduledTrainingPolicy) for p in policies)
        results[backend] = record_losses(run.scheduler)
        results[backend]["rows"] = run.fit()["rows"]
        results[backend]["lr_state"] = run.scheduler.state_dict()["policy_states"]  # checkpointed for resume
    builtin, other = results["builtin"], results["distiller"]
    assert [float(row["lr"]) for row in other["rows"]] == [float(row["lr"]) for row in builtin["rows"]] == [0.05, 0.005]
    assert other["lr_state"] == builtin["lr_state"] and builtin["lr_state"][0]["last_epoch"] == 2
    assert len(other["overall"]) == len(builtin["overall"]) == 2 * 4  # 2 epochs of 160 images / 50 per batch
    for key in ("overall", "distill"):
        assert other[key] == pytest.approx(builtin[key], rel=BACKEND_LOSS_RTOL)
    assert float(other["rows"][0]["valid Loss"]) == pytest.approx(float(builtin["rows"][0]["valid Loss"]),
                                                                   rel=BACKEND_LOSS_RTOL)


def record_losses(scheduler):
    """Every step's overall loss and Distill Loss at full precision, as the scheduler hands them to the loop."""
    recorded = {"overall": [], "distill": []}
    before_backward_pass = scheduler.before_backward_pass

    def recording(*args, **kwargs):
        agg = before_backward_pass(*args, **kwargs)
        recorded["overall"].append(agg.overall_loss.item())
        recorded["distill"] += [c.value.item() for c in agg.loss_components if c.name == "Distill Loss"]
        return agg

    scheduler.before_backward_pass = recording
    return recorded

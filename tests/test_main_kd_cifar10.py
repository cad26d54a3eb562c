"""Issue 5: the original's positional command line (``main_KD_CIFAR10``) on the engine."""
import csv
import glob
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from ensemble_support import member_files_fixture, micro_fixture  # noqa: F401  (fixtures)

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, load_model
from kd_plugin.cli.main_kd_cifar10 import main, original_lr
from kd_plugin.protocol.config import read_schedule

QUIET = ["--no-progress", "--vs", "0"]


def only_run_dir(out):
    (path,) = glob.glob(os.path.join(out, "*___*"))
    return path


def plain_state_dict(path):
    content = torch.load(path, weights_only=True)
    assert "state_dict" not in content and all(isinstance(v, torch.Tensor) for v in content.values())
    return content


def test_trn_n_then_tst(micro, workdir, capsys):
    assert main([micro, "trn", "n", "adam", "1", "0", "20", "n", "5-CNN", "cnn5.pt", "-o", "logs"] + QUIET) == 0
    create_model("cnn5").load_state_dict(plain_state_dict("cnn5.pt"))
    run_dir = only_run_dir("logs")
    sched = read_schedule(os.path.join(run_dir, "configs", "main_kd_cifar10_schedule.yaml"))
    assert sched["training"]["optimizer"] == "adam" and sched["training"]["lr"] == 1e-3
    assert sched["training"]["weight_decay"] == 5e-4 and sched["training"]["augment"] == "n"
    assert "lr_schedulers" not in sched
    capsys.readouterr()
    assert main([micro, "tst", "5-cnn", "cnn5.pt", "-o", "reports", "--repeats", "1"]) == 0
    assert "cnn5_cifar: test top-1" in capsys.readouterr().out
    assert json.loads(Path("reports/cnn5.json").read_text())["test_images"] == 20


def test_begin_epoch_continues_from_checkpoint_with_the_schedule_positioned(micro, workdir):
    torch.save(create_model("cnn5").state_dict(), "start.pt")
    start = plain_state_dict("start.pt")
    assert main([micro, "trn", "y", "SGD", "151", "150", "20", "n", "5-cnn", "start.pt", "-o", "logs"] + QUIET) == 0
    run_dir = only_run_dir("logs")
    with open(os.path.join(run_dir, "training.csv")) as lines:
        rows = list(csv.DictReader(lines))
    assert len(rows) == 1 and float(rows[0]["lr"]) == pytest.approx(0.01)
    sched = read_schedule(os.path.join(run_dir, "configs", "main_kd_cifar10_schedule.yaml"))
    assert sched["lr_schedulers"]["original_steps"]["milestones"] == [100]
    assert sched["training"]["momentum"] == 0.9 and sched["training"]["augment"] == "y"
    trained = plain_state_dict("start.pt")
    assert not torch.equal(trained["fc2.weight"], start["fc2.weight"])


@pytest.mark.parametrize("scheme,begin,expected", [
    ("sgd", 0, (0.1, [150, 250])), ("sgd", 149, (0.1, [1, 101])), ("sgd", 150, (0.01, [100])),
    ("sgd", 250, (0.001, [])), ("adam", 0, (1e-3, [])), ("adam", 200, (1e-3, []))])
def test_original_lr_schedule(scheme, begin, expected):
    assert original_lr(scheme, begin) == expected


def test_avg_created_from_env_members_then_teaches(micro, member_files, workdir, monkeypatch, capsys):
    monkeypatch.setenv("KD_RESNET18_CKPT", member_files["resnet18_cifar"])
    monkeypatch.setenv("KD_VGG16_CKPT", member_files["vgg16_bn_cifar"])
    assert main([micro, "trn", "n", "sgd", "0", "0", "128", "n", "AVG", "avg.pt", "--repeats", "1", "-o", "out"]) == 0
    assert "per branch" in capsys.readouterr().out
    avnet, _ = load_model("avg.pt", "avg")
    resnet, _ = load_model(member_files["resnet18_cifar"], "resnet18")
    vgg, _ = load_model(member_files["vgg16_bn_cifar"], "vgg16")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(avnet.eval()(x), 0.72 * resnet.eval()(x) + 0.28 * vgg.eval()(x), atol=1e-5)
    assert not glob.glob("out/*___*")  # nothing trained

    argv = [micro, "trn", "n", "adam", "1", "0", "20", "y", "0.7", "2", "5-CNN", "kd.pt", "avg", "avg.pt",
            "-o", "logs", "-n", "kd"] + QUIET
    assert main(argv) == 0
    run_dir = only_run_dir("logs")
    log = Path(run_dir, "kd.log").read_text()
    assert "teacher avnet_cifar, T=2, weights distill=0.7 student=0.3" in log
    assert "train Distill Loss" in json.loads(Path(run_dir, "summary.json").read_text())["rows"][0]
    create_model("cnn5").load_state_dict(plain_state_dict("kd.pt"))


def test_jn_trains_from_members_and_reports_branches(micro, member_files, workdir):
    argv = [micro, "trn", "n", "sgd", "1", "0", "20", "n", "jn", "jn.pt", "--jn-loss-weights", "1,0.5,0.5,0.5",
            "--resnet18-ckpt", member_files["resnet18_cifar"], "--vgg16-ckpt", member_files["vgg16_bn_cifar"],
            "-o", "logs"] + QUIET
    assert main(argv) == 0
    run_dir = only_run_dir("logs")
    report = json.loads(Path(run_dir, "branch_accuracy.json").read_text())
    assert set(report["before"]) == set(report["after"]) == {"vgg", "resnet", "mix", "head"}
    extension = read_schedule(os.path.join(run_dir, "configs", "main_kd_cifar10_schedule.yaml"))["extensions"]
    assert extension["joint_loss"] == {"class": "JointNetLossWeights", "head_ce_weight": 1.0, "vgg_ce_weight": 0.5,
                                       "resnet_ce_weight": 0.5, "mix_ce_weight": 0.5}
    trained = plain_state_dict("jn.pt")
    members = {name: load_checkpoint_file(member_files[arch]).state_dict
               for name, arch in (("resnet", "resnet18_cifar"), ("vgg", "vgg16_bn_cifar"))}
    unfrozen = tuple(f"{prefix}." for prefix in create_model("jn").unfrozen_modules())
    frozen = [k for k in trained if k.startswith(("resnet.", "vgg.")) and not k.startswith(unfrozen)]
    assert len(frozen) > 150  # weights and BatchNorm statistics the engine must not have touched
    assert all(torch.equal(trained[k], members[k.split(".")[0]][k.split(".", 1)[1]]) for k in frozen)
    assert not torch.equal(trained["resnet.linear.weight"], members["resnet"]["linear.weight"])


@pytest.mark.parametrize("argv,message", [
    ([], "expected DATA and a mode"),
    (["D"], "expected DATA and a mode"),
    (["D", "run", "x", "y"], "mode must be tst or trn"),
    (["D", "tst", "vgg7"], "'tst' takes DATA tst TYPE CHECKPOINT"),
    (["D", "tst", "vgg7", "a.pt", "extra"], "'tst' takes DATA tst TYPE CHECKPOINT"),
    (["D", "tst", "vgg17", "a.pt"], "TYPE: unknown model 'vgg17'"),
    (["D", "trn", "y", "sgd", "1", "0", "8"], "'trn' takes 10 arguments"),
    (["D", "trn", "y", "sgd", "1", "0", "8", "n", "vgg7"], "'trn ... n' takes 10 arguments, got 9"),
    (["D", "trn", "y", "sgd", "1", "0", "8", "y", "0.5", "1", "vgg7", "s.pt"], "'trn ... y' takes 14 arguments"),
    (["D", "trn", "y", "sgd", "1", "0", "8", "maybe", "vgg7", "a.pt"], "the KD flag (8th argument) must be n or y"),
    (["D", "trn", "x", "sgd", "1", "0", "8", "n", "vgg7", "a.pt"], "AUG must be y or n"),
    (["D", "trn", "y", "rmsprop", "1", "0", "8", "n", "vgg7", "a.pt"], "SCHEME must be sgd or adam"),
    (["D", "trn", "y", "sgd", "ten", "0", "8", "n", "vgg7", "a.pt"], "TOTAL_EPOCHS must be an integer >= 0"),
    (["D", "trn", "y", "sgd", "1", "-1", "8", "n", "vgg7", "a.pt"], "BEGIN_EPOCH must be an integer >= 0"),
    (["D", "trn", "y", "sgd", "1", "0", "0", "n", "vgg7", "a.pt"], "BATCH must be an integer >= 1"),
    (["D", "trn", "y", "sgd", "1", "0", "8", "y", "1.5", "1", "vgg7", "s.pt", "vgg16", "t.pt"], "ALPHA must be"),
    (["D", "trn", "y", "sgd", "1", "0", "8", "y", "0.5", "0", "vgg7", "s.pt", "vgg16", "t.pt"], "T must be"),
    (["D", "trn", "y", "sgd", "1", "0", "8", "y", "0.5", "nan", "vgg7", "s.pt", "vgg16", "t.pt"], "T must be"),
    (["D", "trn", "y", "sgd", "1", "0", "8", "y", "0.5", "1", "vgg7", "s.pt", "vgg99", "t.pt"], "TEACHER_TYPE"),
    (["D", "trn", "y", "sgd", "2", "0", "8", "n", "avg", "a.pt"], "avg (AvNet) has fixed weights"),
    (["D", "trn", "y", "sgd", "2", "0", "8", "n", "vgg7", "a.pt", "--jn-loss-weights", "1,1,1,1"],
     "--jn-loss-weights applies only when training jn"),
    (["D", "trn", "y", "sgd", "2", "0", "8", "n", "jn", "a.pt", "--jn-loss-weights", "1,1"], "four comma-separated"),
    (["D", "tst", "vgg7", "a.pt", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_forms_print_the_usage_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "usage: main_KD_CIFAR10 DATA tst TYPE CHECKPOINT" in captured.out
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err


def test_bad_values_found_later_are_one_line_errors(micro, workdir, capsys, monkeypatch):
    monkeypatch.delenv("KD_RESNET18_CKPT", raising=False)
    assert main([micro, "trn", "n", "sgd", "0", "0", "8", "n", "avg", "a.pt"]) == 2
    assert "pass --resnet18-ckpt PATH or set KD_RESNET18_CKPT" in capsys.readouterr().err
    assert main([micro, "trn", "n", "sgd", "5", "3", "8", "n", "vgg7", "missing.pt"]) == 2
    assert "continues from missing.pt, which does not exist" in capsys.readouterr().err
    assert main([micro, "trn", "n", "sgd", "1", "0", "8", "y", "0.5", "1", "cnn5", "s.pt", "avg", "none.pt"]) == 2
    assert "teacher checkpoint none.pt not found" in capsys.readouterr().err
    assert main([micro, "tst", "vgg7", "missing.pt"]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err
    assert not os.path.exists("a.pt") and not os.path.exists("s.pt")


def test_console_script_and_module_entry():
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "main_KD_CIFAR10"]
    assert script.value == "kd_plugin.cli.main_kd_cifar10:main"
    result = subprocess.run([sys.executable, "-m", "kd_plugin.main_kd_cifar10", "D", "tst"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "usage: main_KD_CIFAR10" in result.stdout and "Traceback" not in result.stderr


def test_the_resume_hint_it_prints_is_a_command_it_accepts(micro, workdir, capsys):
    import shlex

    from kd_plugin.engine.trainer import resume_command

    argv = [micro, "trn", "n", "sgd", "2", "0", "20", "n", "5-CNN", "cnn5.pt", "-o", "logs", "--seed", "2"] + QUIET
    assert main(argv) == 0
    first = only_run_dir("logs")
    (checkpoint,) = glob.glob(os.path.join(first, "*_checkpoint.pth.tar"))
    hint = shlex.split(resume_command(["main_KD_CIFAR10", *argv], checkpoint))
    assert hint[0] == "main_KD_CIFAR10" and hint[-2:] == ["--resume-from", checkpoint]
    capsys.readouterr()
    assert main(hint[1:]) == 0, capsys.readouterr().err  # the same experiment: accepted, nothing left to train
    (second,) = [d for d in glob.glob(os.path.join("logs", "*___*")) if d != first]
    with open(os.path.join(second, "summary.json")) as fh:
        assert json.load(fh)["checkpoint_epoch"] == 1

"""The original's schedules ship with the package (issue 15): found by name from any directory, overridable."""
import glob
import os

from kd_plugin.cli.compress_classifier import main as compress_classifier
from kd_plugin.experiments.reproduce.stages import Pipeline
from kd_plugin.protocol.shipped import resolve_schedule, shipped_schedule_names, shipped_schedules_dir

REPO_SCHEDULES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schedules")


def test_every_schedule_of_the_repository_ships():
    names = sorted(os.path.basename(p)[:-len(".yaml")] for p in glob.glob(os.path.join(REPO_SCHEDULES, "*.yaml")))
    assert shipped_schedule_names() == names and len(names) == 33  # 19 of the original's, 14 CIFAR-100 (c100_*)


def test_a_shipped_schedule_resolves_by_name_from_another_directory(workdir):
    folder = shipped_schedules_dir()
    expected = os.path.join(folder, "kd_resnet18_to_vgg7_a0.5_t1.5.yaml")
    for spelling in ("kd_resnet18_to_vgg7_a0.5_t1.5", "kd_resnet18_to_vgg7_a0.5_t1.5.yaml",
                     "schedules/kd_resnet18_to_vgg7_a0.5_t1.5.yaml"):
        assert resolve_schedule(spelling) == expected
    assert resolve_schedule("elsewhere/kd_resnet18_to_vgg7_a0.5_t1.5.yaml") == \
        "elsewhere/kd_resnet18_to_vgg7_a0.5_t1.5.yaml"  # a path into another folder is not a name
    assert resolve_schedule("no_such_schedule") == "no_such_schedule"
    (workdir / "kd_resnet18_to_vgg7_a0.5_t1.5.yaml").write_text("training: {epochs: 2}\n")
    assert resolve_schedule("kd_resnet18_to_vgg7_a0.5_t1.5.yaml") == "kd_resnet18_to_vgg7_a0.5_t1.5.yaml"  # a file wins


def test_compress_classifier_trains_with_a_shipped_schedule_by_name(tiny_data, workdir, capsys):
    assert compress_classifier([tiny_data, "--compress", "baseline_cnn5_cifar", "--epochs", "1", "-b", "50",
                                "--no-progress", "-o", "logs", "-n", "shipped"]) == 0
    run_dir = glob.glob(os.path.join("logs", "shipped___*"))[0]
    assert os.path.isfile(os.path.join(run_dir, "shipped_best.pth.tar"))
    assert "Training cnn5_cifar" in capsys.readouterr().err
    assert os.path.isfile(os.path.join(run_dir, "configs", "baseline_cnn5_cifar.yaml"))  # the schedule it ran


def test_reproduce_uses_the_shipped_folder_unless_told_otherwise(tmp_path):
    assert Pipeline(str(tmp_path), "data", None).schedules_dir == os.path.abspath(shipped_schedules_dir())
    own = tmp_path / "mine"
    own.mkdir()
    assert Pipeline(str(tmp_path), "data", None, schedules_dir=str(own)).schedules_dir == str(own)

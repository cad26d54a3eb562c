import csv
import json
import os
from pathlib import Path

import pytest
import torch
from cli_support import assert_one_line_error

from kd_plugin import create_model
from kd_plugin.checkpoint import load_model, save_checkpoint
from kd_plugin.cli.compress_classifier import main as compress_classifier
from kd_plugin.cli.kd_plugin import main as kd_plugin
from kd_plugin.data import CLASS_NAMES, MEAN, STD, load_split


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    cnn5 = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="small", dir=str(folder))
    vgg = save_checkpoint(0, "vgg6as_bn_cifar", create_model("vgg6as"), name="other", dir=str(folder))
    return cnn5, vgg


@pytest.fixture(scope="module")
def one_card(tiny_data, two_checkpoints, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("reports"))
    assert kd_plugin(["report", two_checkpoints[0], "--data", tiny_data, "-o", out, "--repeats", "3"]) == 0
    return out


def test_report_card_fields(one_card):
    out = one_card
    card = json.loads(Path(out, "small_checkpoint.json").read_text())
    assert card["arch"] == "cnn5_cifar" and card["parameters"] == 357_514
    assert card["size_mib"] == pytest.approx(357_514 * 4 / 2**20, abs=1e-3)  # the original's "memory"
    assert card["macs"] > 10_000_000
    assert card["train_images"] == 200 and card["test_images"] == 60
    assert 0 <= card["train_top1"] <= 100 and 0 <= card["test_top1"] <= 100
    assert list(card["test_per_class"]) == list(CLASS_NAMES)
    cpu = card["latency"]["cpu"]
    assert cpu["batched_s_per_image"] > 0 and 0 < cpu["batch1_median_s"] <= cpu["batch1_p90_s"]
    markdown = Path(out, "small_checkpoint.md").read_text()
    assert "| parameters | 357,514 |" in markdown and "airplane" in markdown and "batch 1 median / p90" in markdown
    assert not os.path.exists(os.path.join(out, "comparison.md"))  # one checkpoint: no comparison


def test_report_card_accuracies_equal_a_plain_evaluation(one_card, tiny_data, two_checkpoints):
    """The card's top-1 (test and train) and per-class accuracies against a hand-written evaluation: the pixels
    normalized by hand with the original's mean/std, the network in eval mode, argmax against the labels."""
    card = json.loads(Path(one_card, "small_checkpoint.json").read_text())
    model, _ = load_model(two_checkpoints[0])
    model.eval()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    for split, key in (("test", "test_top1"), ("train", "train_top1")):
        images = load_split(tiny_data, split)
        with torch.no_grad():
            predicted = model((images.images.float() / 255 - mean) / std).argmax(1)
        correct = predicted == images.labels
        assert card[key] == pytest.approx(100.0 * int(correct.sum()) / len(correct), abs=1e-9), split
        if split == "test":
            for index, name in enumerate(CLASS_NAMES):
                of_class = images.labels == index
                assert card["test_per_class"][name] == pytest.approx(
                    100.0 * int(correct[of_class].sum()) / int(of_class.sum()), abs=1e-9), name


def test_report_card_per_class_plot(one_card):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: the per-class chart is not drawn")
    assert os.path.getsize(os.path.join(one_card, "small_checkpoint_per_class.png")) > 1000
    assert "![per-class test accuracy](small_checkpoint_per_class.png)" in \
        Path(one_card, "small_checkpoint.md").read_text()


def test_report_compares_several_checkpoints(tiny_data, two_checkpoints, tmp_path):
    out = str(tmp_path / "reports")
    assert kd_plugin(["report", *two_checkpoints, "--data", tiny_data, "-o", out, "--repeats", "2",
                      "--no-train-accuracy"]) == 0
    with open(os.path.join(out, "comparison.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["arch"] for r in rows] == ["cnn5_cifar", "vgg6as_bn_cifar"]
    assert rows[0]["train_top1"] == "" and float(rows[1]["cpu_batched_s_per_image"]) > 0
    table = Path(out, "comparison.md").read_text()
    assert "| small_checkpoint | cnn5_cifar | 357,514 |" in table


def test_plot_training_curves(tiny_data, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: kd-plugin plot cannot draw")
    out = str(tmp_path / "logs")
    assert compress_classifier([tiny_data, "-a", "cnn5", "--epochs", "2", "-b", "64", "--seed", "0", "-o", out,
                                "-n", "run", "--no-progress"]) == 0
    (run_dir,) = [os.path.join(out, d) for d in os.listdir(out)]
    assert kd_plugin(["plot", run_dir]) == 0
    assert os.path.getsize(os.path.join(run_dir, "training_curves.png")) > 1000
    assert kd_plugin(["plot", os.path.join(run_dir, "training.csv"), "-o", str(tmp_path / "pngs")]) == 0
    assert os.listdir(tmp_path / "pngs") == [f"{os.path.basename(run_dir)}_curves.png"]


@pytest.mark.parametrize("argv, message", [
    (["report", "missing.pth.tar", "--data", "{data}"], "missing.pth.tar: checkpoint file not found"),
    (["report", "{ckpt}", "--data", "{data}", "--repeats", "0"], "--repeats must be >= 1"),
    (["report", "{ckpt}", "--data", "{data}", "--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["report", "{ckpt}", "--data", "no-such-dir"], "no-such-dir"),
    (["report", "{ckpt}"], "--data"),
    (["plot", "{data}"], "no training.csv there"),
])
def test_bad_inputs_exit_2_with_one_line(argv, message, tiny_data, two_checkpoints, workdir, capsys):
    assert_one_line_error([a.format(data=tiny_data, ckpt=two_checkpoints[0]) for a in argv], message, capsys)


def test_tensorboard_events_when_installed(tiny_data, tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    out = str(tmp_path / "logs")
    assert compress_classifier([tiny_data, "-a", "cnn5", "--epochs", "1", "-b", "100", "--seed", "0", "-o", out,
                                "-n", "tb", "--no-progress"]) == 0
    (run_dir,) = [os.path.join(out, d) for d in os.listdir(out)]
    assert any(name.startswith("events.out.tfevents.") for name in os.listdir(run_dir))

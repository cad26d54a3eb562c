"""``kd-plugin reproduce --profile smoke`` end to end, reduced to stay fast: two of the twelve KD rows and
120 / 60 generated images instead of 200 / 100. The full smoke command (README's main job) runs the same code
for ten more rows on a little more data.
"""
import dataclasses
import json
import os
import shutil

import pytest
from cli_support import assert_one_line_error, exit_code

from kd_plugin.cli.kd_plugin import main as kd_plugin
from kd_plugin.experiments.reproduce.profiles import PROFILES

SCHEDULES = os.path.join(os.path.dirname(__file__), "..", "schedules")
KEPT_KD_ROWS = ("kd_resnet18_to_vgg7_a0.5_t1.5", "kd_jointnet_to_cnn5_a0.5_t1.36")


@pytest.fixture(scope="module")
def reduced_schedules(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schedules")
    for name in os.listdir(SCHEDULES):
        if not name.startswith("kd_") or name[:-len(".yaml")] in KEPT_KD_ROWS:
            shutil.copy(os.path.join(SCHEDULES, name), folder)
    return str(folder)


def test_smoke_pipeline_end_to_end_then_resumes(reduced_schedules, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(PROFILES, "smoke", dataclasses.replace(PROFILES["smoke"], synthetic=(120, 60)))
    out = str(tmp_path / "smoke")
    argv = ["reproduce", "-o", out, "--schedules", reduced_schedules]
    assert kd_plugin(argv) == 0
    report = open(os.path.join(out, "REPORT.md")).read()
    assert "profile `smoke`" in report and "(generated): 120 training images (108 trained on, 12 held out" in report
    for row in ("| ResNet18 | 260 / 1 | 99.976 |", "| VGG16 | 275 / 1 |", "| AvNet | — / — |", "| JointNet | 250 / 1 |",
                "| VGG7 | 350 / 1 |", "| 5-CNN | 200 / 1 |", "| ResNet18 | original | 97 |"):
        assert row in report
    assert "| 11,173,962 | 11,173,962 | +0 |" in report and "| 25,902,558 | 25,902,558 | +0 |" in report
    measured = [line for line in report.splitlines() if line.startswith(("| ResNet18 → VGG7 | 0.5 | 1.5 | 90.94 |",
                                                                          "| JointNet → 5-CNN | 0.5 | 1.36 | 85.60 |"))]
    assert len(measured) == 2 and all("| — |" not in line.split("|", 5)[5] for line in measured), measured
    assert "| ResNet18 → VGG7 | 0.5 | 1 | 90.82 | — | — | — |" in report  # a row this reduced run left out
    state = json.load(open(os.path.join(out, "state.json")))
    assert state["profile"] == "smoke" and all(s["status"] == "done" for s in state["stages"].values())
    assert len(state["stages"]) == 4 + 2 + 2 + 6 + 1  # networks, ensembles, KD rows, cards, REPORT.md
    assert sorted(os.listdir(os.path.join(out, "cards"))) == sorted(
        f"{m}{ext}" for m in ("resnet18", "vgg16_bn", "avnet", "jointnet", "vgg7_bn", "cnn5")
        for ext in (".json", ".md", "_per_class.png"))
    plots = os.listdir(os.path.join(out, "plots"))
    assert {"per_class.png", "accuracy_vs_T_resnet18_to_vgg7_bn.png", "curves_jointnet.png"} <= set(plots)
    assert "![KD: student accuracy against T, ResNet18 → VGG7](plots/accuracy_vs_T_resnet18_to_vgg7_bn.png)" in report
    capsys.readouterr()

    os.remove(os.path.join(out, "REPORT.md"))
    assert kd_plugin(["reproduce", "--report-only", "-o", out, "--schedules", reduced_schedules]) == 0
    assert open(os.path.join(out, "REPORT.md")).read().split("## Models")[1] == report.split("## Models")[1]
    assert "Partial" not in report
    assert kd_plugin(argv) == 0  # every stage is found done; only the report is written again
    printed = capsys.readouterr().out
    for line in ("4 of 4 runs already done", "2 of 2 runs already done", "2 of 2 runs already done"):
        assert line in printed
    assert "running" not in printed and "card " not in printed
    assert os.path.isfile(os.path.join(out, "REPORT.md"))
    assert len(json.load(open(os.path.join(out, "state.json")))["invocations"]) == 2

    assert exit_code([*argv, "--seed", "1"]) == 2  # the directory belongs to another run
    assert "holds a reproduce run with seed=0, not 1" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--profile", "subset"], "--profile subset needs --data DIR"),
    (["--profile", "full"], "--profile full needs --data DIR"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--data", "no-such-dir"], "--data no-such-dir: no such directory"),
    (["--profile", "huge"], "invalid choice: 'huge'"),
    (["--extra-args", "'open"], "--extra-args"),
    (["--report-only"], "out: no reproduce run there (state.json missing)"),
])
def test_bad_inputs_exit_2_with_one_line(extra, message, workdir, capsys):
    assert_one_line_error(["reproduce", "-o", "out", *extra], message, capsys)

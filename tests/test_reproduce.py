"""``kd-plugin reproduce --profile smoke`` end to end, reduced to stay fast: two of the twelve KD rows on the
smoke profile's own generated data and epochs (its teachers must learn). The full smoke command (README's main
job) runs the same code for ten more rows.
"""
import json
import os
import shutil
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, exit_code

from kd_plugin.cli.kd_plugin import main as kd_plugin
from kd_plugin.experiments.reproduce.command import finished_results
from kd_plugin.experiments.reproduce.report_md import kd_verdict, teacher_warnings

SCHEDULES = os.path.join(os.path.dirname(__file__), "..", "schedules")
KEPT_KD_ROWS = ("kd_resnet18_to_vgg7_a0.5_t1.5", "kd_jointnet_to_cnn5_a0.5_t1.36")


@pytest.fixture(scope="module")
def reduced_schedules(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schedules")
    for name in os.listdir(SCHEDULES):
        if not name.startswith("kd_") or name[:-len(".yaml")] in KEPT_KD_ROWS:
            shutil.copy(os.path.join(SCHEDULES, name), folder)
    return str(folder)


def _expected_verdicts(out):
    """From the runs' own result files: per student, (baseline, KD rows above it, KD rows)."""
    results = finished_results(out).values()
    baselines = {r["arch"]: r["test_top1"] for r in results if not r.get("teacher") and r["arch"] in
                 ("vgg7_bn_cifar", "cnn5_cifar")}
    verdicts = {}
    for student, base in baselines.items():
        rows = [r["test_top1"] for r in results if r.get("student") == student]
        verdicts[student] = (base, sum(top1 > base for top1 in rows), len(rows))
    return verdicts


def test_smoke_pipeline_end_to_end_then_resumes(reduced_schedules, tmp_path, capsys):
    out = str(tmp_path / "smoke")
    argv = ["reproduce", "-o", out, "--schedules", reduced_schedules]
    assert kd_plugin(argv) == 0
    report = Path(out, "REPORT.md").read_text()
    assert "profile `smoke`" in report and "(generated): 200 training images (180 trained on, 20 held out" in report
    for row in ("| ResNet18 | 260 / 5 | 99.976 |", "| VGG16 | 275 / 5 |", "| AvNet | — / — |", "| JointNet | 250 / 3 |",
                "| VGG7 | 350 / 3 |", "| 5-CNN | 200 / 3 |", "| ResNet18 | original | 97 |"):
        assert row in report
    for teacher in ("resnet18", "vgg16_bn", "avnet", "jointnet"):  # seed 0: every teacher learned
        assert json.loads(Path(out, "cards", f"{teacher}.json").read_text())["test_top1"] >= 20, teacher
    assert "**Warning**" not in report
    for stage in ("resnet18", "jointnet", "kd_resnet18_to_vgg7_a0.5_t1.5"):  # every training stage ran from its spec
        result = json.loads(Path(out, "runs", stage, "result.json").read_text())
        assert result["command"][-2:] == ["--spec", f"{{root}}/runs/{stage}/spec.json"], result["command"]
        assert result["spec"]["model"]["arch"] and Path(out, "runs", stage, "spec.json").is_file()
    verdict = report.splitlines()[2]
    assert verdict.startswith("**KD against the student baselines in this run:** KD ")
    for student, (base, wins, rows) in _expected_verdicts(out).items():
        name = {"vgg7_bn_cifar": "VGG7", "cnn5_cifar": "5-CNN"}[student]
        noun = "row" if rows == 1 else "rows"
        claim = (f"beat {name}'s baseline ({base:.2f}%) in {wins} of {rows} {noun}" if wins else
                 f"did not beat {name}'s baseline ({base:.2f}%) in any of its {rows} {noun}")
        assert claim in verdict, (claim, verdict)
    assert "| 11,173,962 | 11,173,962 | +0 |" in report and "| 25,902,558 | 25,902,558 | +0 |" in report
    cards = {m: json.loads(Path(out, "cards", f"{m}.json").read_text())["test_top1"] for m in ("resnet18", "jointnet")}
    # each KD row shows its teacher's test top-1 as the run recorded it: the teacher's own card, same test split
    measured = [line for line in report.splitlines() if line.startswith((
        f"| ResNet18 → VGG7 | {cards['resnet18']:.2f} | 0.5 | 1.5 | 90.94 |",
        f"| JointNet → 5-CNN | {cards['jointnet']:.2f} | 0.5 | 1.36 | 85.60 |"))]
    assert len(measured) == 2 and all("| — |" not in line.split("|", 6)[6] for line in measured), measured
    assert "| ResNet18 → VGG7 | — | 0.5 | 1 | 90.82 | — | — | — |" in report  # a row this reduced run left out
    state = json.loads(Path(out, "state.json").read_text())
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
    assert Path(out, "REPORT.md").read_text().split("## Models")[1] == report.split("## Models")[1]
    assert "Partial" not in report
    assert kd_plugin(argv) == 0  # every stage is found done; only the report is written again
    printed = capsys.readouterr().out
    for line in ("4 of 4 runs already done", "2 of 2 runs already done", "2 of 2 runs already done"):
        assert line in printed
    assert "running" not in printed and "card " not in printed
    assert os.path.isfile(os.path.join(out, "REPORT.md"))
    assert len(json.loads(Path(out, "state.json").read_text())["invocations"]) == 2

    assert exit_code([*argv, "--seed", "1"]) == 2  # the directory belongs to another run
    assert "holds a reproduce run with seed=0, not 1" in capsys.readouterr().err


def test_verdict_sentence_and_teacher_warning_follow_the_numbers():
    kd = [{"student": "vgg7_bn_cifar", "test_top1": 41.0}, {"student": "vgg7_bn_cifar", "test_top1": 38.0},
          {"student": "cnn5_cifar", "test_top1": 20.0}]
    assert kd_verdict(kd, {"vgg7_bn_cifar": 40.0, "cnn5_cifar": 25.0}) == (
        "**KD against the student baselines in this run:** KD beat VGG7's baseline (40.00%) in 1 of 2 rows (best row "
        "+1.00 points) and did not beat 5-CNN's baseline (25.00%) in any of its 1 row (best row -5.00 points).")
    assert kd_verdict([], {"vgg7_bn_cifar": 40.0}) is None
    warnings = teacher_warnings({"resnet18_cifar": {"test_top1": 10.0}, "vgg16_bn_cifar": {"test_top1": 20.0}}, {})
    assert len(warnings) == 2 and "teacher ResNet18 scores 10.00% on the test images, below 2x chance (20%)" in \
        warnings[0]


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

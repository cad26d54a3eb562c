import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_support import assert_one_line_error, exit_code

from kd_plugin import create_model
from kd_plugin.checkpoint import save_checkpoint
from kd_plugin.cli.kd_plugin import main as kd_plugin
from kd_plugin.experiments.schedule_scaling import scale_schedule, strip_distillation
from kd_plugin.experiments.sweep import table_rows
from kd_plugin.protocol.config import read_schedule

SCHEDULES = os.path.join(os.path.dirname(__file__), "..", "schedules")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="teacher",
                           dir=str(tmp_path_factory.mktemp("teacher")))


@pytest.fixture
def kd_schedule(tmp_path, teacher):
    sched = read_schedule(os.path.join(SCHEDULES, "kd_resnet18_to_vgg7_a0.5_t1.5.yaml"))
    sched["training"]["arch"] = "cnn5_cifar"
    sched["extensions"]["distillation"].update(teacher_arch="cnn5_cifar", teacher_checkpoint=teacher)
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(sched))
    return str(path)


def test_scale_schedule_keeps_the_recipe_shape():
    sched = read_schedule(os.path.join(SCHEDULES, "kd_resnet18_to_vgg7_a0.5_t1.5.yaml"))
    scaled = scale_schedule(sched, 10)
    assert scaled["training"]["epochs"] == 10
    assert scaled["lr_schedulers"]["original_steps"]["milestones"] == [4, 7]  # 150, 250 of 350
    assert [(p["starting_epoch"], p["ending_epoch"]) for p in scaled["policies"]] == [(0, 10), (0, 10)]
    one = scale_schedule(sched, 1)  # every milestone falls outside: constant LR, the KD policy stays
    assert "original_steps" not in one["lr_schedulers"] and len(one["policies"]) == 1
    assert sched["training"]["epochs"] == 350  # the input is not modified
    plain = strip_distillation(sched)
    assert "extensions" not in plain and [list(p)[0] for p in plain["policies"]] == ["lr_scheduler"]


def test_table_rows_aggregate_seeds_against_the_baseline():
    results = [{"teacher": "resnet18_cifar", "teacher_label": "resnet18", "student": "vgg7_bn_cifar", "alpha": 0.5,
                "temperature": 1.5, "seed": s, "test_top1": v} for s, v in ((0, 90.0), (1, 92.0))]
    results.append({"teacher": None, "student": "vgg7_bn_cifar", "alpha": None, "temperature": None, "seed": 0,
                    "test_top1": 89.0})
    baseline, kd = table_rows(results, {"vgg7_bn_cifar": 89.0})
    assert baseline["teacher_arch"] == "" and baseline["delta"] is None
    assert kd["seeds"] == 2 and kd["mean"] == 91.0 and kd["std"] == pytest.approx(2 ** 0.5)
    assert kd["delta"] == pytest.approx(2.0)


def _results(out):
    return {os.path.basename(os.path.dirname(p)): (os.stat(p).st_mtime_ns, Path(p).read_text())
            for p in glob.glob(os.path.join(out, "runs", "*", "result.json"))}


def test_killed_sweep_resumes_with_only_the_missing_runs(tiny_data, kd_schedule, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    argv = ["sweep", "--data", tiny_data, "--schedule", kd_schedule, "--alpha", "0.3", "0.5", "0.7",
            "--temperature", "2", "--epochs", "2", "-b", "64", "-j", "1", "-o", out]
    with open(tmp_path / "first.out", "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "kd_plugin", *argv], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while not _results(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    done_before = _results(out)
    assert 1 <= len(done_before) < 3, Path(tmp_path / "first.out").read_text()

    assert kd_plugin(argv) == 0  # waits for the killed sweep's running child (it holds the lock) to stop
    printed = capsys.readouterr().out
    assert f"{len(done_before)} of 3 runs already done, skipped" in printed
    started = {line.split()[1] for line in printed.splitlines() if line.startswith("started ")}
    after = _results(out)
    assert set(after) == {f"cnn5-to-cnn5_a{a}_T2_s0" for a in ("0.3", "0.5", "0.7")}
    assert started == set(after) - set(done_before)
    for name, before in done_before.items():
        assert after[name] == before  # finished runs were not touched
    for name in after:  # one finished run per cell (a killed attempt's run dir stays only if it was resumed)
        assert len(glob.glob(os.path.join(out, "runs", name, f"{name}___*", "summary.json"))) == 1
        assert len(glob.glob(os.path.join(out, "runs", name, f"{name}___*"))) <= 2

    derived = read_schedule(os.path.join(out, "schedule.yaml"))
    assert derived["training"]["epochs"] == 2 and derived["lr_schedulers"]["original_steps"]["milestones"] == [1]
    result = json.loads(after["cnn5-to-cnn5_a0.3_T2_s0"][1])
    assert result["alpha"] == 0.3 and result["temperature"] == 2.0 and 0 <= result["test_top1"] <= 100
    kd = result["spec"]["distillation"]
    assert (kd["distill_weight"], kd["student_weight"], kd["temperature"]) == (0.3, 0.7, 2.0)
    assert result["command"] == ["kd_plugin.compress_classifier", "--spec",
                                 "{root}/runs/cnn5-to-cnn5_a0.3_T2_s0/spec.json"]
    table = Path(out, "sweep.md").read_text()
    assert f"| 5-CNN → 5-CNN | {result['teacher_top1']:.2f} | kd | 0.3 | 0.7 | 2 | 1 |" in table
    assert Path(out, "sweep.csv").read_text().count("\n") == 4


def test_sweep_with_seeds_baseline_and_plot(tiny_data, teacher, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    assert kd_plugin(["sweep", "--data", tiny_data, "--teacher", f"cnn5={teacher}", "--student", "cnn5",
                      "--alpha", "0.5", "--temperature", "1", "--seeds", "0", "1", "--epochs", "1", "-b", "100",
                      "-j", "2", "--train-baseline", "-o", out]) == 0
    rows = Path(out, "sweep.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and all(",2," in row for row in rows[1:])  # baseline + KD, 2 seeds each
    assert "(baseline) 5-CNN" in Path(out, "sweep.md").read_text()
    assert " ± " in Path(out, "sweep.md").read_text()
    # visible in the summary when it cannot be checked (the table checks above have run by then)
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: the sweep's plot is not drawn")
    assert os.path.getsize(os.path.join(out, "accuracy_vs_T_cnn5_to_cnn5.png")) > 1000


@pytest.mark.parametrize("extra, message", [
    (["--alpha", "1.5"], "--alpha values must be in [0, 1]"),
    (["--temperature", "0"], "--temperature values must be > 0"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--teacher", "cnn5"], "expected ARCH=CHECKPOINT"),
    (["--teacher", "cnn5=missing.pth.tar"], "checkpoint 'missing.pth.tar' not found"),
    (["--teacher", "nonet=x"], "unknown model 'nonet'"),
    (["--schedule", "missing.yaml"], "missing.yaml: YAML file not found"),
    (["--baseline", "missing.json"], "missing.json: --baseline file not found"),
    (["--train-baseline", "--baseline", "x.json"], "either --baseline or --train-baseline"),
    (["--extra-args", "'unclosed"], "--extra-args"),
])
def test_bad_inputs_exit_2_with_one_line(extra, message, tiny_data, teacher, workdir, capsys):
    argv = ["sweep", "--data", tiny_data, "--student", "cnn5", "-o", "sw"]
    if not any(a.startswith("--teacher") or a == "--schedule" for a in extra):
        argv += ["--teacher", f"cnn5={teacher}"]
    assert_one_line_error(argv + extra, message, capsys)


def test_sweep_needs_a_student_and_a_teacher(tiny_data, workdir, capsys):
    assert exit_code(["sweep", "--data", tiny_data, "--teacher", "cnn5=x"]) == 2
    assert "no student" in capsys.readouterr().err
    assert exit_code(["sweep", "--data", tiny_data, "--student", "cnn5"]) == 2
    assert "no teacher" in capsys.readouterr().err

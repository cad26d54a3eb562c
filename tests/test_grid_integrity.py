"""Sweep cells named and de-duplicated exactly, --extra-args cannot set a spec field the sweep sets,
tables from what each run used; --kd-start-epoch over a schedule's KD; explicit random teachers; CIFAR labels;
a last batch of one; corrupt sweep/reproduce state files refused without losing anything."""
import glob
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from cli_support import assert_one_line_error

from kd_plugin import create_model
from kd_plugin.checkpoint import save_checkpoint
from kd_plugin.cli.kd_plugin import build_parser
from kd_plugin.cli.kd_plugin import main as kd_plugin
from kd_plugin.data import TensorLoader, load_split, write_synthetic_cifar
from kd_plugin.spec import RunSpec
from kd_plugin.engine.trainer import build_optimizer, build_schedule, distillation_policies
from kd_plugin.cli.training_args import RunArgs
from kd_plugin.experiments.grid import cell_result, exact
from kd_plugin.experiments.jobs import Job
from kd_plugin.experiments.sweep import plan_from_args, sweep_jobs, table_rows
from kd_plugin.protocol.config import read_schedule
from kd_plugin.util.errors import KDPluginError


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="teacher",
                           dir=str(tmp_path_factory.mktemp("teacher")))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return write_synthetic_cifar(str(tmp_path_factory.mktemp("small")), train_images=30, test_images=10, seed=3)


# --- sweep grid ---------------------------------------------------------------------------------------------

def sweep_plan(data, teacher, out, *extra):
    args = build_parser().parse_args(["sweep", "--data", data, "--teacher", f"cnn5={teacher}", "--student", "cnn5",
                                      "-o", str(out), *extra])
    return plan_from_args(args, RunArgs)


def test_values_that_print_alike_get_distinct_cells_and_repeats_run_once(small_data, teacher, tmp_path, capsys):
    assert [exact(v) for v in (0.5, 2.0, 2.0000001, 1e-07, 0.1 + 0.2)] == \
        ["0.5", "2", "2.0000001", "1e-07", "0.30000000000000004"]
    plan = sweep_plan(small_data, teacher, tmp_path / "sw", "--alpha", "0.5", "0.5", "--temperature", "2",
                      "2.0000001", "2.0", "--seeds", "0", "0", "1", "--student", "cnn5_cifar",
                      "--teacher", f"cnn5={teacher}")
    assert (plan.alphas, plan.temperatures, plan.seeds, plan.students) == ([0.5], [2.0, 2.0000001], [0, 1],
                                                                          ["cnn5_cifar"])
    assert len(plan.teachers) == 1
    printed = capsys.readouterr().out
    assert "--seeds 0 given more than once" in printed and "--temperature 2.0 given more than once" in printed
    jobs = sweep_jobs(plan, RunArgs)
    names = sorted(job.name for job in jobs)
    assert names == ["cnn5-to-cnn5_a0.5_T2.0000001_s0", "cnn5-to-cnn5_a0.5_T2.0000001_s1",
                     "cnn5-to-cnn5_a0.5_T2_s0", "cnn5-to-cnn5_a0.5_T2_s1"]
    assert len({job.directory for job in jobs}) == 4
    temps = {job.name: job.spec.distillation.temperature for job in jobs}
    assert temps["cnn5-to-cnn5_a0.5_T2.0000001_s0"] == 2.0000001 and temps["cnn5-to-cnn5_a0.5_T2_s0"] == 2


@pytest.mark.parametrize("extra, flag", [
    ("--kd-temp 4", "--kd-temperature"), ("--seed=9", "--seed"), ("--kd-tempe 4", "--kd-temperature"),
    ("-avgg7_bn_cifar", "--arch"), ("--lr 0.01 -n other", "--name"), ("--compress x.yaml", "--compress"),
    ("--kd-teacher vgg7", "--kd-teacher"), ("--kd-dw 0.9", "--kd-distill-wt"), ("--kd-sw 0.1", "--kd-student-wt"),
    ("--kd-resume t.pth.tar", "--kd-resume"), ("--out-dir elsewhere", "--out-dir"), ("--epochs 9", "--epochs"),
    ("--kd-loss dkd", "--kd-loss"), ("--kd-logit-standardize", "--kd-logit-standardize"),
    ("--kd-loss-arg beta=2", "--kd-loss-arg"), ("--resume-from x", "--resume-from"),
])
def test_extra_args_cannot_set_what_the_grid_sets(extra, flag, small_data, teacher, workdir, capsys):
    axes = ["--alpha", "0.5", "--temperature", "2", "--kd-loss", "kd", "dkd", "--epochs", "1"]
    assert_one_line_error(["sweep", "--data", small_data, "--teacher", f"cnn5={teacher}", "--student", "cnn5",
                           "-o", "sw", *axes, f"--extra-args={extra}"], f"--extra-args may not set {flag}: ", capsys)
    assert not os.path.exists("sw")


def test_extra_args_may_set_what_the_grid_leaves_alone_and_the_table_shows_it(small_data, teacher, tmp_path):
    extra = "--lr 0.01 --momentum 0.8 --wd 5e-4 --augment n --vs 0.2 --kd-temp 3 --kd-loss dkd --kd-dw 0.7"
    plan = sweep_plan(small_data, teacher, tmp_path / "sw", f"--extra-args={extra}")
    (job,) = sweep_jobs(plan, RunArgs)
    spec = job.spec
    assert (spec.optimizer.lr, spec.optimizer.momentum, spec.data.augment, spec.data.validation_split) == \
        (0.01, 0.8, "n", 0.2)
    assert (spec.distillation.temperature, spec.distillation.loss, spec.distillation.distill_weight) == \
        (3.0, "dkd", 0.7)


def _finished_cell(tmp_path, name, meta, summary):
    job = Job.training_run(name, str(tmp_path / name), [], meta=meta, collect=cell_result)
    run_dir = tmp_path / name / f"{name}___2026.01.01-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return job.complete(1.0)


def test_tables_take_each_cells_values_from_the_runs_summary(tmp_path):
    kd = {"teacher_arch": "resnet18_cifar", "teacher_checkpoint": "t.pth.tar", "temperature": 4.0,
          "distill_weight": 0.7, "student_weight": 0.3, "teacher_weight": 0.0, "starting_epoch": 0, "ending_epoch": 1}
    planned = {"teacher": "resnet18_cifar", "teacher_label": "resnet18", "student": "vgg7_bn_cifar", "alpha": 0.5,
               "temperature": 1.0, "seed": 0}
    result = _finished_cell(tmp_path, "cell", planned, {"arch": "vgg7_bn_cifar", "seed": 9, "test_top1": 50.0,
                                                        "distillation": [kd]})
    assert (result["alpha"], result["temperature"], result["seed"]) == (0.7, 4.0, 9)
    assert (result["planned_alpha"], result["planned_temperature"], result["planned_seed"]) == (0.5, 1.0, 0)
    baseline = _finished_cell(tmp_path, "base", {"teacher": None, "student": "vgg7_bn_cifar", "alpha": None,
                                                 "temperature": None, "seed": 0},
                              {"arch": "vgg7_bn_cifar", "seed": 0, "test_top1": 40.0, "distillation": []})
    assert baseline["teacher"] is None and baseline["alpha"] is None
    (row,) = [r for r in table_rows([result, baseline], {"vgg7_bn_cifar": 40.0}) if r["teacher_arch"]]
    assert (row["alpha"], row["temperature"], row["delta"]) == (0.7, 4.0, 10.0)


# --- KD flags over a schedule, random teachers ------------------------------------------------------------

KD_YAML = """\
extensions:
  kd: {{class: KnowledgeDistillationExtension, teacher_arch: cnn5, {extra}}}
policies:
  - extension: {{instance_name: kd}}
    starting_epoch: 0
    ending_epoch: 4
    frequency: 1
"""


def _schedule(tmp_path, extra, **settings):
    path = tmp_path / "kd.yaml"
    path.write_text(KD_YAML.format(extra=extra))
    s = RunSpec.from_flags(data="unused", arch="cnn5", epochs=4, compress=str(path), **settings)
    model = create_model("cnn5")
    return build_schedule(model, build_optimizer(model, s), s, read_schedule(str(path)))


def _kd_epochs(scheduler):
    (policy,) = distillation_policies(scheduler)
    return sorted(e for e, ps in scheduler.policies.items() if policy in ps), policy


def test_kd_start_epoch_moves_the_schedules_kd_policy(tmp_path, teacher):
    assert _kd_epochs(_schedule(tmp_path, f"teacher_checkpoint: {teacher}"))[0] == [0, 1, 2, 3]
    scheduler = _schedule(tmp_path, f"teacher_checkpoint: {teacher}", kd_start_epoch=2, kd_temperature=3.0)
    epochs, policy = _kd_epochs(scheduler)
    assert epochs == [2, 3] and scheduler.sched_metadata[policy]["starting_epoch"] == 2
    assert policy.temperature == 3.0  # the other KD flags override the schedule too


def test_a_teacher_without_weights_must_be_asked_for(tmp_path, capsys):
    with pytest.raises(KDPluginError, match="--kd-random-teacher"):
        _schedule(tmp_path, "temperature: 2")
    for extra, flag in (("random_teacher: true", False), ("temperature: 2", True)):
        _, policy = _kd_epochs(_schedule(tmp_path, extra, kd_random_teacher=flag))
        assert policy.used_settings()["teacher_checkpoint"] is None
    s = RunSpec.from_flags(data="unused", arch="cnn5", kd_teacher="cnn5")
    model = create_model("cnn5")
    with pytest.raises(KDPluginError, match="--kd-teacher cnn5: no teacher weights"):
        build_schedule(model, build_optimizer(model, s), s)
    s.distillation.random_teacher = True
    (policy,) = distillation_policies(build_schedule(model, build_optimizer(model, s), s))
    assert policy.used_settings()["teacher_checkpoint"] is None


def test_random_teacher_run_says_so_and_summary_records_what_it_used(small_data, tmp_path):
    from kd_plugin.cli.compress_classifier import main

    out = str(tmp_path / "o")
    assert main([small_data, "-a", "cnn5", "--epochs", "1", "-b", "29", "--vs", "0", "--no-progress", "-o", out,
                 "-n", "r", "--kd-teacher", "cnn5", "--kd-random-teacher", "--kd-temp", "2.5", "--seed", "4"]) == 0
    (run_dir,) = glob.glob(os.path.join(out, "r___*"))
    assert "teacher cnn5_cifar has random weights (--kd-random-teacher)" in Path(run_dir, "r.log").read_text()
    summary = json.loads(Path(run_dir, "summary.json").read_text())
    assert summary["seed"] == 4 and summary["arch"] == "cnn5_cifar"
    assert summary["best_chosen_on"] == "training top1 (no validation split)"  # --vs 0: never the test split
    (kd,) = summary["distillation"]
    assert (kd["teacher_arch"], kd["temperature"], kd["distill_weight"], kd["teacher_checkpoint"]) == \
        ("cnn5_cifar", 2.5, 0.5, None)
    # 30 images at -b 29: the last batch of one is dropped, so one step of 29 images trained (no BatchNorm error)
    with open(os.path.join(run_dir, "training.csv")) as lines:
        rows = list(lines)
    assert len(rows) == 2


# --- data ---------------------------------------------------------------------------------------------------

def _tamper(data, tmp_path, change):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    source = os.path.join(data, "cifar-10-batches-py")
    for name in os.listdir(source):
        (folder / name).write_bytes(Path(source, name).read_bytes())
    batch = pickle.loads(Path(folder / "test_batch").read_bytes(), encoding="bytes")
    change(batch)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    return str(tmp_path / "data")


@pytest.mark.parametrize("change, message", [
    (lambda b: b.__setitem__(b"labels", list(b["labels"])), "holds both 'labels' and b'labels'"),
    (lambda b: b.__setitem__("labels", [1.7] * len(b["labels"])), "'labels' must be integers, found float"),
    (lambda b: b.__setitem__("labels", [True] * len(b["labels"])), "'labels' must be integers, found bool"),
    (lambda b: b.__setitem__("labels", [0.0] + b["labels"][1:]), "'labels' must be integers, found float"),
    (lambda b: b.__setitem__("labels", __import__("numpy").ones(len(b["labels"]))), "must be integers, found float64"),
    (lambda b: b.__setitem__("labels", [10] * len(b["labels"])), "labels out of range 0..9"),
])
def test_cifar_reader_refuses_ambiguous_or_non_integer_labels(change, message, small_data, tmp_path):
    with pytest.raises(KDPluginError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_split(_tamper(small_data, tmp_path, change), "test")


def test_only_a_last_training_batch_of_one_is_dropped(small_data):
    train = load_split(small_data, "train")  # 30 images
    for batch_size, sizes in ((29, [29]), (10, [10, 10, 10]), (7, [7, 7, 7, 7, 2]), (1, [1] * 30)):
        loader = TensorLoader(train, batch_size, "y", shuffle=True, seed=1, drop_single_last=True)
        assert [len(b.labels) for b in loader.epoch(3)] == sizes and len(loader) == len(sizes)
    plain = TensorLoader(train, 29, "y", shuffle=True, seed=1)
    assert [len(b.labels) for b in plain.epoch(3)] == [29, 1]  # evaluation keeps every image
    kept = next(TensorLoader(train, 29, "y", shuffle=True, seed=1, drop_single_last=True).epoch(3))
    assert torch.equal(kept.indices, next(plain.epoch(3)).indices)  # same (seed, epoch) order


# --- corrupt state files between resumes --------------------------------------------------------------------

def _files(root):
    return {p: Path(p).read_bytes() for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
            if os.path.isfile(p) and not p.endswith(".lock")}


def test_fault_corrupt_sweep_and_reproduce_state_is_refused_and_nothing_is_lost(small_data, teacher, tmp_path,
                                                                               capsys):
    out = str(tmp_path / "sweep")
    argv = ["sweep", "--data", small_data, "--teacher", f"cnn5={teacher}", "--student", "cnn5", "--alpha", "0.3",
            "0.7", "--epochs", "1", "-b", "29", "-j", "1", "-o", out, "--extra-args=--vs 0"]
    assert kd_plugin(argv) == 0
    capsys.readouterr()
    markers = sorted(glob.glob(os.path.join(out, "runs", "*", "result.json")))
    assert len(markers) == 2
    for corrupt in (lambda text: text[:len(text) // 2], lambda text: "[1, 2]", lambda text: '{"command": 3}'):
        original = Path(markers[0]).read_text()
        Path(markers[0]).write_text(corrupt(original))
        before = _files(out)
        assert_one_line_error(argv, f"{markers[0]}: ", capsys)
        assert _files(out) == before  # refused before anything was replaced or removed
        Path(markers[0]).write_text(original)
    kept = Path(markers[1]).read_text()
    os.rename(markers[0], markers[0] + ".bad")  # what the message says to do: the cell runs again
    assert kd_plugin(argv) == 0
    assert "1 of 2 runs already done, skipped" in capsys.readouterr().out
    assert Path(markers[1]).read_text() == kept and os.path.isfile(markers[0])

    repro = tmp_path / "repro"
    repro.mkdir()
    for text in ('{"profile": "smoke", "data": ', '{"profile": 5}', "[]"):
        (repro / "state.json").write_text(text)
        assert_one_line_error(["reproduce", "--profile", "smoke", "--data", small_data, "-o", str(repro)],
                              f"{repro / 'state.json'}: the reproduce state file", capsys)
        assert_one_line_error(["reproduce", "--report-only", "-o", str(repro)],
                              f"{repro / 'state.json'}: the reproduce state file", capsys)
        assert (repro / "state.json").read_text() == text


def test_a_done_marker_without_test_top1_is_refused_in_one_line(tmp_path):
    job = Job.training_run("cell", str(tmp_path / "cell"), [])
    os.makedirs(job.directory)
    with open(job.result_path, "w") as fh:
        json.dump({"command": job.portable_command()}, fh)
    with pytest.raises(KDPluginError, match="done marker of cell is malformed .*'test_top1' a number"):
        job.result()


def test_glob_characters_in_a_sweep_directory_are_plain_characters(tmp_path):
    directory = tmp_path / "sw[1]*?" / "runs" / "cell"
    run_dir = directory / "cell___2026.01.01-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"arch": "cnn5_cifar", "test_top1": 50.0}))
    (run_dir / "cell_checkpoint.pth.tar").write_bytes(b"")
    job = Job.training_run("cell", str(directory), [])
    assert job.collect(job)["test_top1"] == 50.0
    assert job.resumable_checkpoint() == str(run_dir / "cell_checkpoint.pth.tar")


@pytest.mark.parametrize("extra, message", [
    ("-e", "--extra-args: --evaluate is not a training option"),
    ("--summary sparsity", "--extra-args: --summary is not a training option"),
    ("--kd-pretrained", "--extra-args: --kd-pretrained is not a training option"),
    ("--mutual cnn5 cnn5", "--extra-args may not set --mutual: each sweep cell sets it"),
])
def test_extra_args_that_would_not_train_the_cell_are_refused(extra, message, small_data, teacher, workdir, capsys):
    assert_one_line_error(["sweep", "--data", small_data, "--teacher", f"cnn5={teacher}", "--student", "cnn5",
                           "-o", "sw", f"--extra-args={extra}"], message, capsys)
    assert not os.path.exists("sw")

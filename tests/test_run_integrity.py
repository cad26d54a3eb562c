"""A teacher cache is verified before use, run names stay names, a resume continues the
same experiment (or says what it changes), and summary.json describes the checkpoint that was tested."""
import contextlib
import glob
import io
import json
import os
from pathlib import Path

import pytest
import run_support as support
import torch
from bad_input_cases import _flip_inside_tensor_data
from run_support import restore_threads  # noqa: F401 (fixture)

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, load_model, save_checkpoint
from kd_plugin.cli.compress_classifier import main
from kd_plugin.data import TensorLoader, load_split, write_synthetic_cifar
from kd_plugin.distill.cache_check import payload_digest
from kd_plugin.distill.teacher import weights_digest
from kd_plugin.engine.loop import evaluate_loader
from kd_plugin.engine.rundir import check_run_name
from kd_plugin.util.errors import KDPluginError

pytestmark = pytest.mark.usefixtures("restore_threads")
SCHEDULE = """\
lr_schedulers:
  steps: {{class: MultiStepLR, milestones: [1], gamma: {gamma}}}
policies:
  - lr_scheduler: {{instance_name: steps}}
    starting_epoch: 0
    ending_epoch: 4
    frequency: 1
"""


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    """Inputs of a tiny KD run (36 training images in 3 batches) and one finished 1-epoch run of it."""
    root = tmp_path_factory.mktemp("trust")
    inputs = {"root": root, "data": write_synthetic_cifar(str(root / "data"), train_images=48, test_images=12, seed=1)}
    for seed in (1, 2):
        torch.manual_seed(seed)
        inputs[f"teacher{seed}"] = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name=f"t{seed}",
                                                   dir=str(root))
    for gamma in ("0.5", "0.2"):
        (root / f"steps{gamma}.yaml").write_text(SCHEDULE.format(gamma=gamma))
    inputs["first"] = root / "first"
    code, err = run(argv(inputs, inputs["first"]))
    assert code == 0, err[-3:]
    inputs["checkpoint"] = checkpoint_in(inputs["first"])
    return inputs


def argv(inputs, out, *extra):
    return [inputs["data"], "-a", "cnn5", "--epochs", "1", "-b", "12", "--lr", "0.05", "--seed", "3", "--cpu",
            "--threads", "1", "--vs", "0.25", "--compress", str(inputs["root"] / "steps0.5.yaml"), "--kd-teacher",
            "cnn5", "--kd-resume", inputs["teacher1"], "--kd-temp", "2", "--no-progress", "-n", "kd", "-o", str(out),
            *extra]


def run(args):
    """(exit code, stderr lines) of compress_classifier in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue().splitlines()


def checkpoint_in(out):
    (path,) = glob.glob(os.path.join(str(out), "kd___*", "kd_checkpoint.pth.tar"))
    return path


def run_log(out):
    (path,) = glob.glob(os.path.join(str(out), "kd___*", "kd.log"))
    return Path(path).read_text()


def cache_file(directory):
    (path,) = glob.glob(os.path.join(str(directory), "teacher-*.pt"))
    return path


def warnings_in(lines):
    return [line for line in lines if line.startswith("warning: teacher cache")]


def files_under(root):
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]


# --- 1. teacher-cache integrity ---------------------------------------------------------------------------------
def test_a_bit_flipped_cache_file_is_set_aside_and_the_run_equals_a_cold_one(kd, tmp_path):
    cache = tmp_path / "cache"
    assert run(argv(kd, tmp_path / "a", "--teacher-cache", cache))[0] == 0
    path = cache_file(cache)
    _flip_inside_tensor_data(path, path)
    code, err = run(argv(kd, tmp_path / "b", "--teacher-cache", cache))
    assert code == 0
    (warning,) = warnings_in(err)
    assert "CRC mismatch" in warning and "set aside as" in warning and "cold cache" in warning
    assert len(glob.glob(f"{path}.corrupt-*")) == 1
    assert (": 0 of 5832 (image, view) rows filled (a file that failed its checks was set aside"
            in run_log(tmp_path / "b"))
    assert support.bit_identical(checkpoint_in(tmp_path / "a"), checkpoint_in(tmp_path / "b"))
    code, err = run(argv(kd, tmp_path / "c", "--teacher-cache", cache))  # the rewritten file is sound
    assert code == 0 and not warnings_in(err) and ": 36 of 5832 (image, view)" in run_log(tmp_path / "c")


def test_planted_logits_with_a_valid_digest_are_caught_by_the_sample_recheck(kd, tmp_path):
    cache = tmp_path / "cache"
    assert run(argv(kd, tmp_path / "a", "--teacher-cache", cache))[0] == 0
    path = cache_file(cache)
    payload = torch.load(path, weights_only=True)
    assert payload["digest"] == payload_digest(payload["logits"], payload["filled"])
    payload["logits"] = payload["logits"].roll(1, dims=2)  # plausible logits, other classes
    payload["digest"] = payload_digest(payload["logits"], payload["filled"])
    torch.save(payload, path)
    code, err = run(argv(kd, tmp_path / "b", "--teacher-cache", cache))
    assert code == 0
    (warning,) = warnings_in(err)
    assert "36 of 36 re-computed rows differ from the cached ones" in warning and "set aside as" in warning
    assert len(glob.glob(f"{path}.corrupt-*")) == 1
    assert support.bit_identical(checkpoint_in(tmp_path / "a"), checkpoint_in(tmp_path / "b"))


def test_a_cache_recorded_outside_out_dir_is_ignored_unless_named(kd, tmp_path):
    recorded = load_checkpoint_file(kd["checkpoint"]).plugin_state["teacher_cache_dir"]
    assert recorded == str(kd["first"] / "teacher_cache")
    resume = ["--resume-from", kd["checkpoint"], "--epochs", "2"]
    assert run(argv(kd, tmp_path / "elsewhere", *resume))[0] == 0
    log = run_log(tmp_path / "elsewhere")
    assert f"The checkpoint's teacher cache {recorded} lies outside -o {tmp_path / 'elsewhere'}: not used" in log
    assert f"Teacher-output cache {tmp_path / 'elsewhere' / 'teacher_cache'}/teacher-" in log
    assert run(argv(kd, tmp_path / "named", *resume, "--teacher-cache", recorded))[0] == 0
    assert f"Teacher-output cache {recorded}/teacher-" in run_log(tmp_path / "named")
    assert run(argv(kd, kd["root"], *resume))[0] == 0  # -o above the recorded cache: it is followed
    assert f"Teacher-output cache {recorded}/teacher-" in run_log(kd["root"])


# --- 2. run names -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["kd", "kd_T1.5_seed0", "vgg7-bn.a"])
def test_plain_run_names_are_accepted(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "a\\b", "..", " ", ""])
def test_paths_as_run_names_are_refused(name):
    with pytest.raises(KDPluginError, match="-n/--name must be"):
        check_run_name(name)


# --- 3. resume identity -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["T and lr", "teacher checkpoint", "schedule file", "loss", "normalization"])
def test_a_resume_that_changes_the_experiment_is_refused_naming_each_difference(kd, tmp_path, change):
    extra = {"T and lr": ["--kd-temp", "4", "--lr", "0.1"], "teacher checkpoint": ["--kd-resume", kd["teacher2"]],
             "schedule file": ["--compress", kd["root"] / "steps0.2.yaml"],
             "loss": ["--kd-loss", "dist", "--kd-temp", "2", "--kd-dw", "0.5"],
             "normalization": ["--normalization", "distiller"]}[change]
    code, err = run(argv(kd, tmp_path / "out", "--resume-from", kd["checkpoint"], "--epochs", "2", *extra))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"compress_classifier: error: {kd['checkpoint']}: resuming would change the experiment (")
    assert "pass --resume-accept-changes to continue with these changes" in err[0]
    if change == "T and lr":
        assert "(lr: 0.05 -> 0.1, T: 2.0 -> 4.0)" in err[0]
    elif change == "teacher checkpoint":
        digests = [weights_digest(load_model(kd[t])[0]) for t in ("teacher1", "teacher2")]
        assert f"(teacher weights: {digests[0]} -> {digests[1]})" in err[0]
    elif change == "loss":
        assert "loss: kd -> dist (beta=1, gamma=1)" in err[0]
    elif change == "normalization":
        assert "(normalization: cifar (mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.201)) -> distiller " \
               "(mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)))" in err[0]
    else:
        assert "(schedule: " in err[0] and err[0].count(" -> ") == 1
    assert files_under(tmp_path / "out") == []


def test_resume_accept_changes_continues_and_logs_what_changed(kd, tmp_path):
    code, err = run(argv(kd, tmp_path / "out", "--resume-from", kd["checkpoint"], "--epochs", "2", "--kd-temp", "4",
                         "--resume-accept-changes"))
    assert code == 0, err[-3:]
    assert "Resumed with changes accepted by --resume-accept-changes: T: 2.0 -> 4.0\n" in run_log(tmp_path / "out")
    resumed = load_checkpoint_file(checkpoint_in(tmp_path / "out"))
    assert resumed.epoch == 1 and resumed.plugin_state["identity"]["T"] == 4.0


def test_resume_accept_changes_refuses_a_schedule_change_it_cannot_apply(kd, tmp_path):
    code, err = run(argv(kd, tmp_path / "out", "--resume-from", kd["checkpoint"], "--epochs", "2", "--compress",
                         kd["root"] / "steps0.2.yaml", "--resume-accept-changes"))
    assert code == 2 and len(err) == 1, err
    assert "--resume-accept-changes cannot apply a change of schedule: the checkpoint's LR-scheduler state holds " \
           "the old schedule" in err[0]
    assert files_under(tmp_path / "out") == []


def test_summary_describes_the_tested_checkpoint_after_a_resume_without_improvement(kd, tmp_path):
    """The resumed checkpoint's best (epoch 0) is recorded as 100% valid top1, so no later epoch can beat it."""
    first = load_checkpoint_file(kd["checkpoint"])
    start = tmp_path / "start"
    start.mkdir()
    content = dict(first.content, extras={"current_top1": 100.0, "best_top1": 100.0, "best_epoch": 0})
    for name in ("kd_checkpoint.pth.tar", "kd_best.pth.tar"):
        torch.save(content, start / name)
    code, err = run(argv(kd, tmp_path / "out", "--resume-from", start / "kd_checkpoint.pth.tar", "--epochs", "2"))
    assert code == 0, err[-3:]
    (summary_path,) = glob.glob(str(tmp_path / "out" / "kd___*" / "summary.json"))
    summary = json.loads(Path(summary_path).read_text())
    assert summary["best_epoch"] == summary["checkpoint_epoch"] == 0
    assert summary["best_valid_top1"] == summary["checkpoint_valid_top1"] == 100.0
    assert summary["best_chosen_on"] == "validation top1"
    assert summary["checkpoint"].endswith("kd_best.pth.tar") and os.path.dirname(summary["checkpoint"]) == \
        os.path.dirname(summary_path)
    test = TensorLoader(load_split(kd["data"], "test"), 1024, "n")
    best_weights = evaluate_loader(load_model(str(start / "kd_best.pth.tar"))[0], test)
    last_weights = evaluate_loader(load_model(checkpoint_in(tmp_path / "out"))[0], test)
    assert summary["test_top1"] == best_weights["top1"] and summary["test_loss"] == best_weights["Loss"]
    assert summary["test_loss"] != last_weights["Loss"]  # the last epoch's weights would give another result

"""Issue 8, clause 5: SIGINT/SIGTERM save a resumable checkpoint and say how to resume; a non-finite loss
stops the run without touching saved checkpoints; an unwritable output directory fails before training."""
import glob
import hashlib
import os
import re
import shlex
import signal

import pytest
import run_support as support
from run_support import restore_threads  # noqa: F401 (fixture)

from kd_plugin.cli.compress_classifier import build_parser, main, settings_from_args
from kd_plugin.engine.trainer import run_training
from kd_plugin.util.errors import NonFiniteLoss, TrainingInterrupted

pytestmark = pytest.mark.usefixtures("restore_threads")
INTERRUPTED = re.compile(r"^compress_classifier: interrupted: (SIGINT|SIGTERM) at (epoch \d+, batch \d+|the end of "
                         r"epoch \d+): resumable checkpoint saved to (\S+); resume with: (.+)$")


def resume_from_message(line, tmp_path):
    """Run the command the message prints (the console script, into a fresh -o) and return its last checkpoint."""
    match = INTERRUPTED.match(line)
    assert match, line
    command = shlex.split(match.group(4))
    assert command[0] == "compress_classifier" and command[-2:] == ["--resume-from", match.group(3)]
    out = command.index("-o") + 1
    command[out] = str(tmp_path / "resumed")
    result = support.run_cli(command[1:])
    assert result.returncode == 0, result.stderr
    return support.last_checkpoint(tmp_path / "resumed")


def test_sigint_during_training_saves_prints_how_to_resume_and_exits_130(tmp_path_factory, tmp_path):
    inputs = support.kd_inputs(tmp_path_factory)
    child = support.Child(support.console_script("compress_classifier") + support.kd_argv(inputs, tmp_path / "run"))
    assert child.wait_for("Epoch 0:")
    child.proc.send_signal(signal.SIGINT)
    code, lines = child.finish()
    assert code == 130, lines[-3:]
    assert INTERRUPTED.match(lines[-1]) and "Traceback" not in "\n".join(lines)
    assert not glob.glob(str(tmp_path / "run" / "*" / ".*.tmp"))
    resumed = resume_from_message(lines[-1], tmp_path)
    assert support.bit_identical(support.reference_checkpoint(tmp_path_factory), resumed)


def sigterm_at(epoch, batch):
    """A batch hook factory that sends this process SIGTERM just before step BATCH of EPOCH."""

    def factory(run):
        seen = [0]

        def hook(_batch):
            if seen[0] == epoch * len(run.train_loader) + batch:
                os.kill(os.getpid(), signal.SIGTERM)
            seen[0] += 1

        return hook

    return factory


def test_sigterm_mid_epoch_finishes_the_step_and_resumes_bit_identically(tmp_path_factory, tmp_path, capsys):
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path / "run")
    settings = settings_from_args(build_parser().parse_args(argv))
    settings.command = ["compress_classifier", *argv]
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        run_training(settings, sigterm_at(epoch=1, batch=4))
    assert signal.getsignal(signal.SIGTERM) is before
    assert info.value.exit_code == 143
    line = f"compress_classifier: interrupted: {info.value}"
    assert "SIGTERM at epoch 1, batch 5:" in line  # the step that was running (batch 4) completed
    resumed = resume_from_message(line, tmp_path)
    assert support.bit_identical(support.reference_checkpoint(tmp_path_factory), resumed)


def test_sigterm_through_main_exits_143_with_one_message_line(tmp_path_factory, tmp_path, capsys, monkeypatch):
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path, "--epochs", "1")
    monkeypatch.setattr("kd_plugin.cli.compress_classifier.run_training",
                        lambda settings: run_training(settings, sigterm_at(epoch=0, batch=2)))
    assert main(argv) == 143
    err = capsys.readouterr().err.splitlines()
    assert INTERRUPTED.match(err[-1]) and "batch 3" in err[-1] and "Traceback" not in "\n".join(err)


def digests(folder):
    return {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in glob.glob(os.path.join(folder, "*", "*.pth.tar"))}


def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_checkpoints(tmp_path_factory, tmp_path):
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path)
    snapshot = {}

    def poison_at_epoch_2_batch_4(run):
        seen = [0]

        def hook(batch):
            if seen[0] == 2 * len(run.train_loader) + 4:
                snapshot.update(digests(tmp_path))
                batch.inputs.fill_(float("nan"))
            seen[0] += 1

        return hook

    with pytest.raises(NonFiniteLoss, match="loss became nan at epoch 2, batch 4; stopped without saving") as info:
        run_training(settings_from_args(build_parser().parse_args(argv)), poison_at_epoch_2_batch_4)
    assert info.value.exit_code == 3
    assert set(snapshot) == {"kd_checkpoint.pth.tar", "kd_best.pth.tar"} and digests(tmp_path) == snapshot
    assert not glob.glob(str(tmp_path / "*" / ".*.tmp"))


def test_diverging_lr_exits_3_through_the_command_line(tiny_data, tmp_path, capsys):
    code = main([tiny_data, "-a", "cnn5", "--epochs", "2", "-b", "50", "--lr", "1e12", "--seed", "1", "--no-progress",
                 "-o", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert code == 3
    assert re.match(r"compress_classifier: error: (loss became (nan|inf|-inf) at epoch \d+, batch \d+|weights of \S+ "
                    r"became NaN or Inf in epoch \d+); stopped without saving", err[-1]), err[-1]
    assert "Traceback" not in "\n".join(err)
    for path in glob.glob(str(tmp_path / "*" / "*.pth.tar")):  # whatever was saved before is loadable
        from kd_plugin.checkpoint import load_checkpoint_file
        load_checkpoint_file(path)


def test_weights_that_turn_non_finite_are_never_saved(tmp_path_factory, tmp_path):
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path, "--epochs", "2")

    def corrupt_last_step_of_epoch_1(run):
        seen = [0]

        def hook(batch):
            seen[0] += 1
            if seen[0] == 2 * len(run.train_loader):  # the last step: its loss is still finite
                snapshot.update(digests(tmp_path))
                run.model.features[1].running_var.fill_(float("inf"))  # train-mode loss stays finite

        return hook

    snapshot = {}
    with pytest.raises(NonFiniteLoss, match="features.1.running_var became NaN or Inf in epoch 1; stopped without"):
        run_training(settings_from_args(build_parser().parse_args(argv)), corrupt_last_step_of_epoch_1)
    assert digests(tmp_path) == snapshot and snapshot


def test_unwritable_output_fails_before_training(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code = main([tiny_data, "-a", "cnn5", "--epochs", "1", "--no-progress", "-o", str(blocker / "sub")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == [f"compress_classifier: error: output directory {blocker / 'sub'} is not writable "
                                 f"(Not a directory)"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_read_only_output_directory_fails_before_training(tiny_data, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = main([tiny_data, "-a", "cnn5", "--epochs", "1", "--no-progress", "-o", str(locked / "sub")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "is not writable" in err[0]

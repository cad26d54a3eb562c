"""Issue 8, clause 4: a checkpoint holds everything needed to continue a run exactly, and a resume that
would silently train something else is refused."""
import csv
import os

import pytest
import run_support as support
from run_support import restore_threads  # noqa: F401 (fixture)

from kd_plugin.cli.compress_classifier import build_parser, main, settings_from_args
from kd_plugin.engine.trainer import run_training

pytestmark = pytest.mark.usefixtures("restore_threads")


class Crash(Exception):
    pass


def crash_at_epoch(epoch):
    """A batch hook factory that aborts the run before the first step of EPOCH (after the previous save)."""

    def factory(run):
        seen = [0]

        def hook(batch):
            if seen[0] == epoch * len(run.train_loader):
                raise Crash
            seen[0] += 1

        return hook

    return factory


@pytest.fixture(scope="module")
def boundary_checkpoint(tmp_path_factory):
    """The shared run's checkpoint after epoch 2 (the epoch whose end passes the LR milestone), from a run
    that died right after saving it."""
    out = tmp_path_factory.mktemp("crashed")
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), out)
    with pytest.raises(Crash):
        run_training(settings_from_args(build_parser().parse_args(argv)), crash_at_epoch(3))
    return support.last_checkpoint(out)


def csv_rows(out):
    with open(os.path.join(support.run_dir(out), "training.csv")) as fh:
        return list(csv.DictReader(fh))


def test_resume_at_an_epoch_boundary_in_a_new_process_is_bit_identical(tmp_path_factory, boundary_checkpoint,
                                                                       tmp_path):
    from kd_plugin.checkpoint import load_checkpoint_file

    saved = load_checkpoint_file(boundary_checkpoint)
    assert saved.epoch == 2 and saved.plugin_state["resume_batch"] is None
    assert {"rng", "run"} <= set(saved.plugin_state) and {"torch", "python", "numpy"} <= set(saved.plugin_state["rng"])
    assert saved.content["compression_sched"]["policy_states"][0]["last_epoch"] == 3
    assert saved.content["optimizer_state_dict"]["param_groups"][0]["lr"] == pytest.approx(0.01)

    reference = support.reference_checkpoint(tmp_path_factory)
    # another -o: the checkpoint's cache (outside it) is used only when named; it is what keeps the rows exact
    result = support.run_cli(support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path, "--resume-from",
                                             boundary_checkpoint, "--teacher-cache",
                                             saved.plugin_state["teacher_cache_dir"]))
    assert result.returncode == 0, result.stderr
    assert f"Teacher-output cache {saved.plugin_state['teacher_cache_dir']}/" in result.stderr
    resumed = support.last_checkpoint(tmp_path)
    assert support.max_difference(reference, resumed) == 0.0
    assert support.bit_identical(reference, resumed)
    reference_rows = csv_rows(os.path.dirname(os.path.dirname(reference)))
    assert [r["epoch"] for r in csv_rows(tmp_path)] == ["3", "4", "5"]
    assert without_timing(csv_rows(tmp_path)) == without_timing(reference_rows[3:])


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in ("images/s", "seconds") and "cache" not in k} for row in rows]


def refusal(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_resume_with_another_arch_is_refused(tmp_path_factory, boundary_checkpoint, tmp_path, capsys):
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path, "-a", "vgg6as",
                           "--resume-from", boundary_checkpoint)
    message = refusal(argv, capsys)
    assert "checkpoint is a cnn5_cifar, not the requested vgg6as_bn_cifar" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("change,named", [(["-b", "16"], "(batch_size: 8 -> 16)"),
                                          (["--seed", "4"], "(seed: 3 -> 4, train_data_hash: "),
                                          (["--vs", "0.3"], "(num_train: 77 -> 68, train_data_hash: "),
                                          (["--augment", "n"], "(augment: y -> n)")])
def test_resume_with_other_data_order_is_refused_unless_reset(tmp_path_factory, boundary_checkpoint, tmp_path,
                                                              capsys, change, named):
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path, *change, "--resume-from", boundary_checkpoint)
    message = refusal(argv, capsys)
    assert named in message and "--reset-optimizer" in message and boundary_checkpoint in message


def test_resume_on_other_data_of_the_same_size_is_refused(tmp_path_factory, boundary_checkpoint, tmp_path, capsys):
    from kd_plugin.data import write_synthetic_cifar

    other = write_synthetic_cifar(str(tmp_path / "other"), train_images=96, test_images=20, seed=6)
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path / "out", "--resume-from", boundary_checkpoint)
    argv[0] = other
    assert "(train_data_hash: " in refusal(argv, capsys)


def test_reset_optimizer_takes_the_weights_and_starts_over(tmp_path_factory, boundary_checkpoint, tmp_path, capsys):
    argv = support.kd_argv(support.kd_inputs(tmp_path_factory), tmp_path, "-b", "16", "--epochs", "1",
                           "--resume-from", boundary_checkpoint, "--reset-optimizer")
    assert main(argv) == 0
    assert [r["epoch"] for r in csv_rows(tmp_path)] == ["0"]

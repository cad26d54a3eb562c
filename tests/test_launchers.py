"""Issue 14, part 2: where a sweep's runs go. The local launcher resumes an interrupted cell from its
checkpoint and its done check survives a moved directory and another interpreter; Ray Tune runs the same cells
(skipped when Ray is not importable; .ci/run installs the [ray] extra so they run in CI)."""
import contextlib
import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import run_support as support
from run_support import restore_threads  # noqa: F401 (fixture)
from test_signals import sigterm_at

from kd_plugin import create_model
from kd_plugin.checkpoint import save_checkpoint
from kd_plugin.cli.compress_classifier import build_parser, settings_from_args
from kd_plugin.data import write_synthetic_cifar
from kd_plugin.engine.trainer import run_training
from kd_plugin.experiments.jobs import Job, JobRunner
from kd_plugin.util.errors import KDPluginError, TrainingInterrupted

pytestmark = pytest.mark.usefixtures("restore_threads")


def cell(root, data, epochs=2):
    argv = [data, "-a", "cnn5", "--epochs", str(epochs), "-b", "8", "--lr", "0.05", "--seed", "1", "--cpu",
            "--threads", "1", "--deterministic", "--vs", "0.2"]
    return Job.training_run("cell", os.path.join(root, "runs", "cell"), argv)


def test_local_launcher_resumes_an_interrupted_cell_and_its_done_check_is_portable(tmp_path, monkeypatch):
    data = write_synthetic_cifar(str(tmp_path / "data"), train_images=40, test_images=10, seed=3)
    said = []
    unbroken = cell(str(tmp_path / "unbroken"), data)
    JobRunner(parallel=0, say=said.append).run([unbroken])
    job = cell(str(tmp_path / "sweep"), data)
    os.makedirs(job.directory)
    settings = settings_from_args(build_parser().parse_args(job.argv))
    with pytest.raises(TrainingInterrupted):  # an attempt stopped in epoch 1, batch 2, leaving its checkpoint
        run_training(settings, sigterm_at(epoch=1, batch=2))
    results = JobRunner(parallel=0, say=said.append).run([job])
    assert any("cell: resuming from" in line for line in said), said
    assert support.bit_identical(results["cell"]["checkpoint"].replace("best", "checkpoint"),
                                 unbroken.result()["checkpoint"].replace("best", "checkpoint"))
    assert "--resume-from" not in results["cell"]["command"] and "{root}" in " ".join(results["cell"]["command"])

    # Moved to another directory and run by another interpreter: still done, nothing runs again.
    shutil.move(str(tmp_path / "sweep"), str(tmp_path / "moved"))
    monkeypatch.setattr(sys, "executable", "/elsewhere/bin/python3")
    said.clear()
    JobRunner(parallel=0, say=said.append).run([cell(str(tmp_path / "moved"), data)])
    assert said == ["1 of 1 runs already done, skipped"]
    with pytest.raises(KDPluginError, match="holds a finished run of another command"):
        JobRunner(parallel=0, say=said.append).run([cell(str(tmp_path / "moved"), data, epochs=3)])


# --- Ray ---------------------------------------------------------------------------------------------------

def sweep_argv(data, teacher, out, *extra):
    return ["sweep", "--data", data, "--teacher", f"cnn5={teacher}", "--student", "cnn5", "--alpha", "0.3", "0.7",
            "--temperature", "1", "2", "--epochs", "1", "-b", "16", "-o", str(out), *extra]


def table(out):
    """sweep.csv's rows, whole (teacher, student, alpha, T, seeds and the accuracies: mean, std, values, delta)."""
    with open(os.path.join(out, "sweep.csv")) as fh:
        return list(csv.DictReader(fh))


def cell_results(out):
    """Per cell: the test top-1 (and best epoch, where recorded) of its result.json."""
    results = {}
    for path in glob.glob(os.path.join(out, "runs", "*", "result.json")):
        with open(path) as fh:
            result = json.load(fh)
        results[os.path.basename(os.path.dirname(path))] = (result["test_top1"], result.get("best_epoch"))
    return results


def test_ray_sweep_matches_the_local_launcher_and_resumes_after_the_driver_is_killed(tmp_path):
    pytest.importorskip("ray.tune")
    data = write_synthetic_cifar(str(tmp_path / "data"), train_images=40, test_images=10, seed=4)
    teacher = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="teacher", dir=str(tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    kd_plugin = [sys.executable, "-m", "kd_plugin"]

    began = time.perf_counter()
    local = subprocess.run(kd_plugin + sweep_argv(data, teacher, tmp_path / "local", "-j", "2"), env=env,
                           capture_output=True, text=True, timeout=600)
    local_s = time.perf_counter() - began
    assert local.returncode == 0, local.stderr[-2000:]

    out = tmp_path / "ray"
    ray_argv = kd_plugin + sweep_argv(data, teacher, out, "--launcher", "ray", "--ray-num-cpus", "2")
    began = time.perf_counter()
    driver = subprocess.Popen(ray_argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not glob.glob(str(out / "runs" / "*" / "result.json")) and time.monotonic() < deadline:
        assert driver.poll() is None, "the Ray sweep ended before any cell finished"
        time.sleep(0.1)
    ray_processes = support.descendants(driver.pid)
    driver.kill()  # SIGKILL: no cleanup code of the driver runs
    driver.wait()
    for pid in ray_processes:  # what outlives the driver of a local instance (Ray's agents) goes too
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    done_before = glob.glob(str(out / "runs" / "*" / "result.json"))
    assert 1 <= len(done_before) < 4
    rerun = subprocess.run(ray_argv, env=env, capture_output=True, text=True, timeout=600)
    ray_s = time.perf_counter() - began
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(done_before)} of 4 runs already done, skipped" in rerun.stdout
    # Every cell ran the same single-threaded job under either launcher (one killed and resumed exactly): the
    # same accuracies, not only the same table keys.
    assert cell_results(out) == cell_results(tmp_path / "local") and len(cell_results(out)) == 4
    assert table(out) == table(tmp_path / "local") and len(table(out)) == 4
    assert len({row["values"] for row in table(out)}) > 1  # the cells differ: equal tables mean something
    print(f"2x2 sweep: local launcher (-j 2) {local_s:.1f} s, Ray (num_cpus=2, killed and rerun) {ray_s:.1f} s")

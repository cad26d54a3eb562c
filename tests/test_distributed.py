"""Issue 14, part 1: one run on several processes with torchrun (DDP on gloo, 2 CPU processes).

The KD run of run_support (96 generated images, a MultiStepLR step, cnn5 <- cnn5 teacher) with -b 8 per rank,
so 16 images per global step: one run directory, global meters, every rank's teacher-cache rows kept, exact
resume after SIGKILL of the whole job and after SIGTERM of one rank, a different world size refused, and a
model without BatchNorm/dropout whose per-step global loss matches a single process with the global batch.
"""
import csv
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import run_support as support
import torch
from run_support import restore_threads  # noqa: F401 (fixture)

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, save_checkpoint
from kd_plugin.data import TensorLoader, load_split, validation_split, write_synthetic_cifar

HERE = os.path.dirname(os.path.abspath(__file__))
LOSS_TOLERANCE = 1e-5  # absolute, per step: float32 sums in another order (two half-batch means vs one mean)
DDP_WEIGHT_RTOL = 1e-5  # final weights after 12 steps, relative to the largest: float32 round-off (measured 9e-8)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
            *args]


def env():
    return {**support.child_env(), "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE])}


def run(command, timeout=300):
    return subprocess.run(command, env=env(), capture_output=True, text=True, timeout=timeout)


def wait_for_first_checkpoint(out, procs, timeout=240):
    """Poll (no pipe in between) until the run under OUT saved epoch 0's checkpoint; 5 epochs are left then."""
    deadline = time.monotonic() + timeout
    while support.last_checkpoint(out) is None:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no checkpoint"
        time.sleep(0.02)


def ddp_argv(tmp_path_factory, out, *extra):
    return ["-m", "kd_plugin.compress_classifier", *support.kd_argv(support.kd_inputs(tmp_path_factory), out, *extra)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 2-process KD run done in one go."""
    out = tmp_path_factory.mktemp("ddp_reference")
    result = run(torchrun(ddp_argv(tmp_path_factory, out)))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_two_gloo_processes_write_one_run_directory_with_global_meters_and_every_rank_cache_rows(
        reference, tmp_path_factory):
    out, result = reference
    (run_dir,) = glob.glob(str(out / "kd___*"))
    assert sorted(os.listdir(out)) == ["kd___" + run_dir.split("kd___")[1], "teacher_cache"]
    log = Path(run_dir, "kd.log").read_text()
    assert log.count("Epoch 0:") == 1 and log.count(f"Epoch {support.EPOCHS - 1}:") == 1  # rank 0 alone logs
    assert result.stdout.count("Log directory:") == 1
    checkpoint = load_checkpoint_file(support.last_checkpoint(out))
    assert checkpoint.plugin_state["run"]["world_size"] == 2 and len(checkpoint.plugin_state["ranks"]) == 2
    inputs = support.kd_inputs(tmp_path_factory)
    rows = Path(run_dir, "training.csv").read_text().splitlines()
    assert len(rows) == support.EPOCHS + 1
    # Every (image, view) any rank trained on is in the cache file: the union of all epochs' plans.
    train = load_split(inputs["data"], "train")
    train, _ = validation_split(train, 0.2, seed=3)
    loader = TensorLoader(train, 8, "y", shuffle=True, seed=3)
    seen = set()
    for epoch in range(support.EPOCHS):
        order, views = loader.plan(epoch)
        seen |= set(zip(order.tolist(), views.tolist(), strict=True))
    (cache_file,) = glob.glob(str(out / "teacher_cache" / "*.pt"))
    filled = torch.load(cache_file, weights_only=True)["filled"]
    assert int(filled.sum()) == len(seen) and all(bool(filled[i, v]) for i, v in seen)


def test_sigkill_of_the_whole_job_resumes_exactly_with_the_same_world_size(reference, tmp_path_factory, tmp_path):
    command = torchrun(ddp_argv(tmp_path_factory, tmp_path / "run"))
    job = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_first_checkpoint(tmp_path / "run", [job])
    for pid in [*support.descendants(job.pid), job.pid]:  # every rank and torchrun, as when a node is lost
        os.kill(pid, signal.SIGKILL)
    job.wait()
    last = support.last_checkpoint(tmp_path / "run")
    assert load_checkpoint_file(last).epoch < support.EPOCHS - 1
    resumed = run(torchrun(ddp_argv(tmp_path_factory, tmp_path / "resumed", "--resume-from", last)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert support.bit_identical(support.last_checkpoint(reference[0]), support.last_checkpoint(tmp_path / "resumed"))
    one = run([sys.executable, *ddp_argv(tmp_path_factory, tmp_path / "alone", "--resume-from", last)])
    assert one.returncode == 2 and one.stderr.count("\n") == 1 and "world_size=2" in one.stderr, one.stderr


def test_sigterm_to_one_rank_stops_both_with_143_and_a_checkpoint_that_resumes_exactly(
        reference, tmp_path_factory, tmp_path):
    port, ranks = free_port(), []
    for rank in range(2):  # the environment torchrun gives its workers, so each rank's exit code is visible
        rank_env = {**env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                    "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
        ranks.append(subprocess.Popen([sys.executable, *ddp_argv(tmp_path_factory, tmp_path / "run")], env=rank_env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    wait_for_first_checkpoint(tmp_path / "run", ranks)
    ranks[1].send_signal(signal.SIGTERM)
    lines = ranks[0].communicate(timeout=120)[1].strip().splitlines()
    ranks[1].communicate(timeout=120)
    codes = [proc.returncode for proc in ranks]
    assert codes == [143, 143], lines[-3:]
    assert "interrupted: SIGTERM at " in lines[-1] and "torchrun --nproc_per_node=2" in lines[-1], lines[-1]
    path = lines[-1].split("resumable checkpoint saved to ")[1].split(";")[0]
    resumed = run(torchrun(ddp_argv(tmp_path_factory, tmp_path / "resumed", "--resume-from", path)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert support.bit_identical(support.last_checkpoint(reference[0]), support.last_checkpoint(tmp_path / "resumed"))


@pytest.mark.usefixtures("restore_threads")
def test_ddp_step_losses_equal_a_single_process_with_the_global_batch(tmp_path, monkeypatch):
    """No BatchNorm, no dropout (tests/ddp_worker.py): each DDP step must see the global batch's images and
    apply the global batch's mean gradient. 45 images, 4 per rank: five 8-image steps and a 5-image last step
    split 3/2 (gradient weights 1.2 and 0.8)."""
    data = write_synthetic_cifar(str(tmp_path / "data"), train_images=45, test_images=10, seed=2)
    common = [data, "-a", "plain_cnn_test_cifar", "--epochs", "2", "--lr", "0.05", "--seed", "4", "--vs", "0",
              "--cpu", "--threads", "1", "--deterministic", "--no-progress", "-n", "plain"]
    ddp = run(torchrun([os.path.join(HERE, "ddp_worker.py"), str(tmp_path / "ddp"), *common, "-b", "4",
                        "-o", str(tmp_path / "ddp_out")]))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # The single process runs as a subprocess too, so the worker's test model never enters this process's zoo.
    single_run = run([sys.executable, os.path.join(HERE, "ddp_worker.py"), str(tmp_path / "single"), *common,
                      "-b", "8", "-o", str(tmp_path / "single_out")])
    assert single_run.returncode == 0, single_run.stderr[-3000:]
    ranks = [json.loads(Path(tmp_path / f"ddp.rank{r}.json").read_text()) for r in range(2)]
    single = json.loads(Path(tmp_path / "single.rank0.json").read_text())
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 12
    global_steps = [((n0 * l0 + n1 * l1) / (n0 + n1), n0 + n1) for (n0, l0), (n1, l1) in zip(*ranks, strict=True)]
    assert [n for _, n in global_steps] == [n for n, _ in single] == [8, 8, 8, 8, 8, 5] * 2
    difference = max(abs(g - s) for (g, _), (_, s) in zip(global_steps, single, strict=True))
    print(f"max |DDP - single| per-step loss: {difference:.3g}")
    assert difference < LOSS_TOLERANCE
    # The logged epoch loss is the global one: all 45 images of both ranks.
    (csv_path,) = glob.glob(str(tmp_path / "ddp_out" / "plain___*" / "training.csv"))
    with open(csv_path) as rows:
        logged = [float(row["train Overall Loss"]) for row in csv.DictReader(rows)]
    for epoch in range(2):
        steps = global_steps[6 * epoch:6 * epoch + 6]
        assert logged[epoch] == pytest.approx(sum(loss * n for loss, n in steps) / 45, rel=1e-5)


@pytest.mark.usefixtures("restore_threads")
def test_ddp_with_batchnorm_and_kd_ends_with_the_weights_of_one_process(tmp_path):
    """A BatchNorm student (no dropout) distilled from a cnn5 teacher (eval mode, teacher cache on): 2 gloo ranks
    with -b 4 against one process with -b 8 and the same seed, data order and augmentation. Each rank's BatchNorm
    normalises its own 4 images (torch's DDP without SyncBatchNorm), so the one process runs the same network
    with "ghost" BatchNorm (tests/ddp_worker.py: statistics per chunk of 4, running statistics from the first
    chunk, as DDP keeps rank 0's). Then every step's gradient is the same, and so are the final weights and
    BatchNorm buffers, to float32 round-off (DDP_WEIGHT_RTOL of the largest value)."""
    data = write_synthetic_cifar(str(tmp_path / "data"), train_images=48, test_images=10, seed=6)
    torch.manual_seed(5)
    teacher = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="teacher", dir=str(tmp_path))
    common = [data, "--epochs", "2", "--lr", "0.05", "--seed", "4", "--vs", "0", "--cpu", "--threads", "1",
              "--deterministic", "--no-progress", "-n", "kd", "--kd-teacher", "cnn5", "--kd-resume", teacher,
              "--kd-temp", "2", "--kd-dw", "0.7", "--kd-sw", "0.3"]
    ddp = run(torchrun([os.path.join(HERE, "ddp_worker.py"), str(tmp_path / "ddp"), *common, "-a", "bn_cnn_test_cifar",
                        "-b", "4", "-o", str(tmp_path / "ddp_out")]))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run([sys.executable, os.path.join(HERE, "ddp_worker.py"), str(tmp_path / "single"), *common,
                  "-a", "ghost_bn_cnn_test_cifar", "-b", "8", "-o", str(tmp_path / "single_out")])
    assert single.returncode == 0, single.stderr[-3000:]
    # the test models are in the workers' zoo only: read the files as plain torch checkpoints
    files = [torch.load(support.last_checkpoint(tmp_path / out), weights_only=True)
             for out in ("ddp_out", "single_out")]
    assert [f["epoch"] for f in files] == [1, 1]
    ddp_weights, single_weights = (f["state_dict"] for f in files)
    assert sorted(ddp_weights) == sorted(single_weights)
    largest = max(float(w.abs().max()) for w in single_weights.values() if w.is_floating_point())
    worst = max(float((ddp_weights[k] - w).abs().max()) for k, w in single_weights.items() if w.is_floating_point())
    print(f"\nDDP (BatchNorm, KD) vs one process: max |weight difference| {worst:.3g} (largest value {largest:.3g})")
    assert worst <= DDP_WEIGHT_RTOL * largest
    assert all(torch.equal(ddp_weights[k], w) for k, w in single_weights.items() if not w.is_floating_point())


EXITING_RANK = """
import atexit, sys
from kd_plugin.cli.args import cli_entry
from kd_plugin.engine.distributed import Distributed
from kd_plugin.util.errors import TrainingInterrupted

atexit.register(print, "finalized")

@cli_entry("probe")
def main(argv):
    group = Distributed("cpu", 0, 1, 0)
    print("result line")
    group.close()
    raise TrainingInterrupted("SIGTERM at step 3", 143)

main() if sys.argv[1] == "program" else print("returned", main([]))
"""


def test_a_rank_ends_as_a_program_with_its_own_code_and_output_and_skips_finalization():
    """A process that joined a group must not reach interpreter finalization (where freeing gloo's work objects
    can abort it after its result was printed, see engine.distributed.exit_process); called from Python, the
    same entry point just returns its code."""
    def rank_env():
        return {**env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"}

    program = subprocess.run([sys.executable, "-c", EXITING_RANK, "program"], env=rank_env(), capture_output=True,
                             text=True, timeout=120)
    assert program.returncode == 143, program.stderr[-2000:]
    assert program.stdout == "result line\n"
    assert program.stderr.strip().splitlines()[-1] == "probe: interrupted: SIGTERM at step 3", program.stderr
    called = subprocess.run([sys.executable, "-c", EXITING_RANK, "call"], env=rank_env(), capture_output=True,
                            text=True, timeout=120)
    assert (called.returncode, called.stdout) == (0, "result line\nreturned 143\nfinalized\n"), called.stderr

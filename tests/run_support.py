"""Shared by the resume, signal and fault tests (issue 8): one small, deterministic KD run with a MultiStepLR
milestone inside it, started as a separate process, and bit-for-bit comparison of its checkpoints."""
import glob
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from kd_plugin import create_model
from kd_plugin.checkpoint import load_checkpoint_file, save_checkpoint
from kd_plugin.data import write_synthetic_cifar

EPOCHS = 6
SCHEDULE = """\
lr_schedulers:
  steps: {class: MultiStepLR, milestones: [3], gamma: 0.2}
policies:
  - lr_scheduler: {instance_name: steps}
    starting_epoch: 0
    ending_epoch: 6
    frequency: 1
"""
_CACHE = {}


def kd_inputs(tmp_path_factory):
    """{data, teacher, schedule}: 96 generated training images, a cnn5 teacher checkpoint, a schedule file."""
    if "inputs" not in _CACHE:
        root = tmp_path_factory.mktemp("kd_inputs")
        torch.manual_seed(11)
        teacher = save_checkpoint(0, "cnn5_cifar", create_model("cnn5"), name="teacher", dir=str(root))
        schedule = root / "steps.yaml"
        schedule.write_text(SCHEDULE)
        data = write_synthetic_cifar(str(root / "data"), train_images=96, test_images=20, seed=5)
        _CACHE["inputs"] = {"data": data, "teacher": teacher, "schedule": str(schedule)}
    return _CACHE["inputs"]


def kd_argv(inputs, out, *extra):
    """compress_classifier arguments of the shared run: 10 batches of 8 per epoch, KD from epoch 0, CPU, one
    thread (the same float results in every process, and no spinning OpenMP threads on a busy machine)."""
    return [inputs["data"], "-a", "cnn5", "--epochs", str(EPOCHS), "-b", "8", "--lr", "0.05", "--seed", "3",
            "--deterministic", "--cpu", "--threads", "1", "--vs", "0.2", "--compress", inputs["schedule"],
            "--kd-teacher", "cnn5", "--kd-resume", inputs["teacher"], "--kd-temp", "2", "--no-progress", "-n", "kd",
            "-o", str(out), *extra]


def console_script(name):
    """The installed console script next to this interpreter (what a user runs)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return [path] if os.path.exists(path) else [sys.executable, "-m", f"kd_plugin.{name.replace('-', '_')}"]


def child_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def restore_threads():
    """In-process runs of kd_argv set torch's thread count (--threads 1); give the next test its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_cli(argv, timeout=240):
    return subprocess.run(console_script("compress_classifier") + list(argv), env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


class Child:
    """A training process whose stderr lines are collected by a thread, so the test can wait for one."""

    def __init__(self, command):
        self.proc = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines, self.times = [], []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self.times.append(time.monotonic())
                self._changed.notify_all()
        with self._changed:
            self.lines.append(None)  # end of stream
            self._changed.notify_all()

    def wait_for(self, text, timeout=120):
        """True once a stderr line contains TEXT; False if the process ended without one."""
        return self.seconds_before(text, timeout) is not None

    def seconds_before(self, text, timeout=120):
        """Once a stderr line contains TEXT: the seconds between it and the line before (None if the process
        ended without one)."""
        with self._changed:
            while True:
                found = [i for i, line in enumerate(self.lines) if line is not None and text in line]
                if found:
                    return self.times[found[0]] - self.times[max(found[0] - 1, 0)]
                if self.lines and self.lines[-1] is None:
                    return None
                if not self._changed.wait(timeout):
                    raise TimeoutError(f"no line with {text!r} after {timeout} s")

    def finish(self, timeout=240):
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code, [line for line in self.lines if line is not None]


def run_dir(out):
    (path,) = glob.glob(os.path.join(str(out), "kd___*"))
    return path


def last_checkpoint(out):
    """The run's kd_checkpoint.pth.tar under OUT, or None if it never saved one."""
    found = glob.glob(os.path.join(str(out), "kd___*", "kd_checkpoint.pth.tar"))
    return found[0] if found else None


def reference_checkpoint(tmp_path_factory):
    """The last checkpoint of the shared run done in one go, in its own process."""
    if "reference" not in _CACHE:
        out = tmp_path_factory.mktemp("kd_reference")
        result = run_cli(kd_argv(kd_inputs(tmp_path_factory), out))
        assert result.returncode == 0, result.stderr
        _CACHE["reference"] = last_checkpoint(out)
    return _CACHE["reference"]


def resumable_state(path):
    """Everything that decides the rest of a run: weights, optimizer buffers and LR schedule, as flat tensors."""
    checkpoint = load_checkpoint_file(path)
    state = {f"model.{k}": v for k, v in checkpoint.state_dict.items()}
    for index, buffers in checkpoint.content["optimizer_state_dict"]["state"].items():
        state.update({f"optimizer.{index}.{k}": v for k, v in buffers.items() if isinstance(v, torch.Tensor)})
    groups = checkpoint.content["optimizer_state_dict"]["param_groups"]
    state["optimizer.lr"] = torch.tensor([g["lr"] for g in groups], dtype=torch.float64)
    state["epoch"] = torch.tensor(checkpoint.epoch)
    return state


def max_difference(path_a, path_b):
    """Largest absolute difference between two checkpoints' resumable state (inf if their layout differs)."""
    a, b = resumable_state(path_a), resumable_state(path_b)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def bit_identical(path_a, path_b):
    a, b = resumable_state(path_a), resumable_state(path_b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def descendants(pid):
    """Process ids below PID (torchrun starts its workers in their own sessions: a process group kill misses them)."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found

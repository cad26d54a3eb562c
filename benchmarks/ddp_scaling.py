"""One training epoch on 1 process and on N processes (torchrun, DDP), same global batch, side by side.

    python benchmarks/ddp_scaling.py [--data DIR] [--nproc 2] [--arch vgg7_bn_cifar] [--batch 128] [--epochs 1]

Each configuration is one ``compress_classifier`` run in its own process(es): 1 process with ``-b BATCH`` and
all CPU threads, then ``torchrun --nproc_per_node=N`` with ``-b BATCH/N`` per rank and threads split between the
ranks (gloo on CPU; NCCL with one GPU per rank when GPUs are present and --device cuda). The timed figure is the
training part of the last epoch as the run's training.csv records it (``seconds``; no start-up, no validation).
Data: --data, else ../shared/data/cifar10-subset from the repository root when present, else generated images.
--smoke: 200 generated images, cnn5_cifar, global batch 16, 2 gloo processes on the CPU (a check that it runs).
"""
import argparse
import csv
import glob
import os
import platform
import socket
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def default_data(tmp, smoke=False):
    if smoke:
        from kd_plugin.data import write_synthetic_cifar

        return write_synthetic_cifar(os.path.join(tmp, "data"), train_images=200, test_images=20, seed=0), \
            "generated images (smoke)"
    subset = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "cifar10-subset"))
    if os.path.isdir(subset):
        return subset, "cifar10-subset (real CIFAR-10 images)"
    from kd_plugin.data import write_synthetic_cifar

    return write_synthetic_cifar(os.path.join(tmp, "data"), train_images=4000, test_images=100, seed=0), \
        "generated images"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def epoch_seconds(args, data, nproc, out):
    threads = max(1, (os.cpu_count() or 1) // nproc)
    run = ["-m", "kd_plugin.compress_classifier", data, "-a", args.arch, "--epochs", str(args.epochs),
           "-b", str(args.batch // nproc), "--lr", "0.05", "--seed", "0", "--augment", "y", "--vs", "0.1",
           "--threads", str(threads), "--no-progress", "--teacher-cache", "off", "-n", "scale", "-o", out,
           *(["--cpu"] if args.device == "cpu" else [])]
    launcher = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": REPO}
    result = subprocess.run(launcher + run, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{nproc} process(es) failed:\n{result.stderr[-2000:]}")
    (path,) = glob.glob(os.path.join(out, "scale___*", "training.csv"))
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["seconds"]), float(rows[-1]["images/s"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="CIFAR-10 python batches (default: ../shared/data/cifar10-subset, else generated)")
    p.add_argument("--nproc", type=int, default=2, help="processes of the distributed run")
    p.add_argument("--arch", default="vgg7_bn_cifar")
    p.add_argument("--batch", type=int, default=128, help="global batch (each of N ranks gets BATCH/N)")
    p.add_argument("--epochs", type=int, default=1, help="the last epoch is the timed one")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--smoke", action="store_true", help="generated images, cnn5_cifar, batch 16, 2 CPU processes")
    args = p.parse_args()
    if args.smoke:
        args.data, args.arch, args.batch, args.nproc, args.epochs, args.device = None, "cnn5_cifar", 16, 2, 1, "cpu"
    if args.batch % args.nproc:
        sys.exit(f"--batch {args.batch} must be divisible by --nproc {args.nproc}")
    with tempfile.TemporaryDirectory() as tmp:
        data, what = (args.data, args.data) if args.data else default_data(tmp, args.smoke)
        load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
        print(f"{args.arch}, global batch {args.batch}, {what}; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        single = epoch_seconds(args, data, 1, os.path.join(tmp, "one"))
        multi = epoch_seconds(args, data, args.nproc, os.path.join(tmp, "many"))
        load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
        print(f"| processes | batch per rank | epoch seconds | images/s |\n|---|---|---|---|\n"
              f"| 1 | {args.batch} | {single[0]:.2f} | {single[1]:.1f} |\n"
              f"| {args.nproc} | {args.batch // args.nproc} | {multi[0]:.2f} | {multi[1]:.1f} |")
        print(f"epoch time ratio 1 / {args.nproc} processes: {single[0] / multi[0]:.2f}x "
              f"(load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")


if __name__ == "__main__":
    main()

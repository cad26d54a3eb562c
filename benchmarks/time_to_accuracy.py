"""Time to accuracy: the same KD job trained by kd-plugin and by torchdistill; wall time and final test top-1.

    python benchmarks/time_to_accuracy.py --data DIR [--epochs 5] [--seeds 0 1] [--teacher-ckpt CKPT] [-o OUT]
    python benchmarks/time_to_accuracy.py --data DIR --device cuda --epochs 30 --seeds 0 1 2
    python benchmarks/time_to_accuracy.py --smoke      # generated images, 1 epoch, in this process (seconds)

The job: student cnn5_cifar <- teacher vgg7_bn_cifar, Hinton KD with T 4, distill weight 0.9, CE weight 0.1
(mdistiller's CIFAR recipe), SGD lr 0.05 momentum 0.9 wd 5e-4 with cosine annealing over --epochs, batch 128,
crop + flip, the whole training split (no validation split, no per-epoch evaluation), one run per seed and tool.
* kd-plugin: ``python -m kd_plugin.compress_classifier DATA --compress SCHEDULE --kd-teacher ... --kd-resume ...``,
  each run in its own output directory (its teacher-output cache starts empty: no run profits from another's).
* torchdistill (when importable; ``pip install 'kd-plugin[bench]'``): a process of this script trains the same
  student with torchdistill's DistillationBox, KDLoss and DataLoader over the same images through torchvision
  transforms (benchmarks/peers.py), --workers DataLoader workers.
Both get --threads torch threads. Teacher: --teacher-ckpt, else vgg7_bn_cifar trained here by kd-plugin for
--teacher-epochs (same recipe, no KD, seed 0). Every final-epoch student (and the teacher) is scored here by one
evaluator on the test split. Reported per tool: training seconds per epoch (epoch 0 apart: warm-up), training
seconds in all, process wall seconds (start-up, data loading and checkpoints included), final test top-1;
mean ± sample std over seeds. Writes OUT/time_to_accuracy.md and OUT/time_to_accuracy.json. Rerun with the same
OUT to reuse finished runs (and the teacher). --jobs N runs N runs at once (all on the same device: their
timings then include the contention; the table says so).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import torch  # noqa: E402

import peers  # noqa: E402
from kd_plugin.cli.args import OneLineParser  # noqa: E402
from loss_comparison import cosine_schedule  # noqa: E402

STUDENT, TEACHER, BATCH, LR, WD = "cnn5_cifar", "vgg7_bn_cifar", 128, 0.05, 5e-4
TEMPERATURE, DISTILL, CE = 4.0, 0.9, 0.1
TOOLS = ("kd-plugin", "torchdistill")


# --- the runs ---------------------------------------------------------------------------------------------------
def subprocess_env(args):
    return {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": REPO}


def cli_run(args, argv, log):
    """kd-plugin's command line, in its own process (or in this one with --in-process); returns wall seconds."""
    began = time.perf_counter()
    if args.in_process:
        from kd_plugin.cli.compress_classifier import main as compress_classifier

        code = compress_classifier(argv)
    else:
        with open(log, "w") as fh:
            code = subprocess.run([sys.executable, "-m", "kd_plugin.compress_classifier", *argv],
                                  env=subprocess_env(args), stdout=fh, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"kd-plugin run failed (exit {code}): compress_classifier {' '.join(argv)} (log {log})")
    return time.perf_counter() - began


def device_flags(args):
    return ["--cpu"] if args.device == "cpu" else []


def run_dir_summary(out, name):
    found = sorted(glob.glob(os.path.join(out, f"{name}___*", "summary.json")))
    return (os.path.dirname(found[-1]), json.loads(Path(found[-1]).read_text())) if found else (None, None)


def train_teacher(args, out):
    if args.teacher_ckpt:
        return args.teacher_ckpt
    teacher_dir = os.path.join(out, "teacher")
    run_dir, _ = run_dir_summary(teacher_dir, "teacher")
    if run_dir is None:
        schedule = cosine_schedule(TEACHER, args.teacher_epochs, os.path.join(out, "teacher.yaml"))
        cli_run(args, [args.data, "--compress", schedule, "--vs", "0", "--seed", "0", "--threads", str(args.threads),
                       "--no-progress", "-n", "teacher", "-o", teacher_dir, *device_flags(args)],
                os.path.join(out, "teacher.log"))
        run_dir, _ = run_dir_summary(teacher_dir, "teacher")
    return os.path.join(run_dir, "teacher_checkpoint.pth.tar")


def kd_plugin_run(args, out, teacher, seed):
    """One kd-plugin run: (final checkpoint, training seconds per epoch, process wall seconds)."""
    name, run_out = f"kd_s{seed}", os.path.join(out, "kd-plugin", f"s{seed}")
    run_dir, _ = run_dir_summary(run_out, name)
    record = os.path.join(run_out, "wall.json")
    if run_dir is None or not os.path.isfile(record):
        os.makedirs(os.path.dirname(run_out), exist_ok=True)
        schedule = cosine_schedule(STUDENT, args.epochs, os.path.join(out, "student.yaml"))
        wall = cli_run(args, [args.data, "--compress", schedule, "--kd-teacher", TEACHER, "--kd-resume", teacher,
                              "--kd-temp", str(TEMPERATURE), "--kd-dw", str(DISTILL), "--kd-sw", str(CE), "--vs", "0",
                              "--seed", str(seed), "--threads", str(args.threads), "--no-progress", "-n", name,
                              "-o", run_out, *device_flags(args)], os.path.join(run_out + ".log"))
        with open(record, "w") as fh:
            json.dump({"wall_seconds": wall}, fh)
        run_dir, _ = run_dir_summary(run_out, name)
    _, summary = run_dir_summary(run_out, name)
    epochs = [float(row["seconds"]) for row in summary["rows"]]
    wall = json.loads(Path(record).read_text())["wall_seconds"]
    return os.path.join(run_dir, f"{name}_checkpoint.pth.tar"), epochs, wall


def torchdistill_run(args, out, teacher, seed):
    """One torchdistill run (a process of this script: --worker): (final checkpoint, epoch seconds, wall)."""
    run_out = os.path.join(out, "torchdistill", f"s{seed}")
    record = os.path.join(run_out, "result.json")
    if not os.path.isfile(record):
        os.makedirs(run_out, exist_ok=True)
        began = time.perf_counter()
        if args.in_process:
            torchdistill_train(args.data, teacher, seed, args.epochs, args.workers, args.device, run_out)
        else:
            argv = [sys.executable, os.path.abspath(__file__), "--worker", "--data", args.data, "--teacher-ckpt",
                    teacher, "--seeds", str(seed), "--epochs", str(args.epochs), "--workers", str(args.workers),
                    "--threads", str(args.threads), "--device", args.device, "-o", run_out]
            with open(run_out + ".log", "w") as fh:
                if subprocess.run(argv, env=subprocess_env(args), stdout=fh, stderr=subprocess.STDOUT).returncode:
                    raise RuntimeError(f"torchdistill run failed (log {run_out}.log)")
        result = json.loads(Path(run_out, "epochs.json").read_text())
        result["wall_seconds"] = time.perf_counter() - began
        with open(record, "w") as fh:
            json.dump(result, fh)
    result = json.loads(Path(record).read_text())
    return result["checkpoint"], result["epoch_seconds"], result["wall_seconds"]


def torchdistill_train(data, teacher_ckpt, seed, epochs, workers, device_name, out):
    """The torchdistill side of the job, in this process: writes OUT/student.pth.tar and OUT/epochs.json."""
    from kd_plugin.checkpoint import load_model, save_checkpoint
    from kd_plugin.data import load_split
    from kd_plugin.models import create_model

    device = torch.device(device_name)
    teacher = load_model(teacher_ckpt, TEACHER)[0].to(device)
    torch.manual_seed(seed)
    student = create_model(STUDENT, normalization=teacher.normalization).to(device)
    dataset = peers.PILCifar(load_split(data, "train"), peers.pil_transform("y", student.normalization))
    config = peers.torchdistill_config(
        batch=BATCH, workers=workers, pin_memory=device.type == "cuda", epochs=epochs, lr=LR, weight_decay=WD,
        temperature=TEMPERATURE, distill_weight=DISTILL, student_weight=CE, cosine=True,
        sampler_kwargs={"generator": torch.Generator().manual_seed(seed)})
    box = peers.torchdistill_box(teacher, student, dataset, config, device)
    seconds = []
    for epoch in range(epochs):
        began = time.perf_counter()
        peers.torchdistill_epoch(box, box.train_data_loader, device, epoch=epoch)
        seconds.append(time.perf_counter() - began)
    path = save_checkpoint(epochs - 1, STUDENT, student, name="student", dir=out)
    with open(os.path.join(out, "epochs.json"), "w") as fh:
        json.dump({"epoch_seconds": seconds, "checkpoint": path}, fh)


# --- scoring and the report -------------------------------------------------------------------------------------
@torch.no_grad()
def test_top1(checkpoint, arch, test, device):
    """Top-1 % of a checkpoint on the test split, inputs normalized as the checkpoint's model expects."""
    from kd_plugin.checkpoint import load_model

    model = load_model(checkpoint, arch)[0].to(device).eval()
    mean = torch.tensor(model.normalization.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.normalization.std, device=device).view(1, 3, 1, 1)
    correct = 0
    for images, labels in zip(test.images.split(500), test.labels.split(500), strict=True):
        inputs = (images.to(device).float() / 255 - mean) / std
        correct += int((model(inputs).argmax(1).cpu() == labels).sum())
    return 100.0 * correct / len(test.labels)


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values, digits=2):
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summarize(runs):
    """Per tool: the seeds' figures and their mean ± std."""
    rows = {}
    for tool in TOOLS:
        mine = [r for r in runs if r["tool"] == tool]
        if not mine:
            continue
        later = [statistics.mean(r["epoch_seconds"][1:] or r["epoch_seconds"]) for r in mine]
        rows[tool] = {"seeds": [r["seed"] for r in mine], "top1": [r["top1"] for r in mine],
                      "first_epoch_seconds": [r["epoch_seconds"][0] for r in mine], "epoch_seconds": later,
                      "train_seconds": [sum(r["epoch_seconds"]) for r in mine],
                      "wall_seconds": [r["wall_seconds"] for r in mine]}
    return rows


def markdown(args, machine, teacher, teacher_top1, rows, notes):
    lines = [f"# Time to accuracy: {STUDENT} <- {TEACHER}, {args.epochs} epoch{'s' if args.epochs > 1 else ''}\n",
             f"Data {args.data}; {machine}; threads {args.threads}, torchdistill DataLoader workers {args.workers}; "
             f"runs at once: {args.jobs}{' (timings include the contention)' if args.jobs > 1 else ''}. "
             f"Teacher {teacher}: test top-1 {teacher_top1:.2f} %. KD T {TEMPERATURE:g}, distill {DISTILL:g}, "
             f"CE {CE:g}; SGD lr {LR:g} cosine, wd {WD:g}, batch {BATCH}, crop + flip, whole training split; "
             f"final-epoch weights; mean ± sample std over seeds {' '.join(map(str, args.seeds))}.\n",
             "| tool | s/epoch (after the first) | first epoch s | training s | process wall s | final test top-1 % "
             "| per seed top-1 |", "|---|---|---|---|---|---|---|"]
    for tool, r in rows.items():
        lines.append(f"| {tool} | {pm(r['epoch_seconds'])} | {pm(r['first_epoch_seconds'])} | "
                     f"{pm(r['train_seconds'], 1)} | {pm(r['wall_seconds'], 1)} | {pm(r['top1'])} | "
                     f"{' '.join(f'{v:.2f}' for v in r['top1'])} |")
    if len(rows) == 2:
        (_, a), (_, b) = rows.items()
        speed = mean_std(b["epoch_seconds"])[0] / mean_std(a["epoch_seconds"])[0]
        gap = mean_std(a["top1"])[0] - mean_std(b["top1"])[0]
        spread = max(mean_std(a["top1"])[1], mean_std(b["top1"])[1])
        lines.append(f"\nkd-plugin epochs are {speed:.2f}x as fast as torchdistill's (after the first); final top-1 "
                     f"differs by {gap:+.2f} points, {'within' if abs(gap) <= spread else 'outside'} the larger seed "
                     f"spread ({spread:.2f}).")
    lines += [f"\n{note}" for note in notes]
    return "\n".join(lines) + "\n"


def machine_text(device):
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if os.path.exists("/proc/cpuinfo") else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "CPU")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.2f} at the end, torch {torch.__version__}"


def run_all(args, out):
    from kd_plugin.data import load_split

    teacher = train_teacher(args, out)
    notes = []
    missing = peers.torchdistill_available()
    tools = [t for t in TOOLS if t == "kd-plugin" or not missing]
    if missing:
        notes.append(f"torchdistill skipped: {missing}.")
    jobs = [(tool, seed) for seed in args.seeds for tool in tools]
    runners = {"kd-plugin": kd_plugin_run, "torchdistill": torchdistill_run}
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda job: runners[job[0]](args, out, teacher, job[1]), jobs))
    test = load_split(args.data, "test")
    device = torch.device(args.device)
    runs = [{"tool": tool, "seed": seed, "checkpoint": ckpt, "epoch_seconds": epochs, "wall_seconds": wall,
             "top1": test_top1(ckpt, STUDENT, test, device)}
            for (tool, seed), (ckpt, epochs, wall) in zip(jobs, done, strict=True)]
    teacher_top1 = test_top1(teacher, TEACHER, test, device)
    rows = summarize(runs)
    text = markdown(args, machine_text(args.device), teacher, teacher_top1, rows, notes)
    with open(os.path.join(out, "time_to_accuracy.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "time_to_accuracy.json"), "w") as fh:
        json.dump({"teacher": teacher, "teacher_top1": teacher_top1, "epochs": args.epochs, "runs": runs,
                   "summary": rows, "notes": notes}, fh, indent=1)
    print(text)


def parse_args(argv=None):
    p = OneLineParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="CIFAR-10 python batches (real images; --smoke generates its own)")
    p.add_argument("-o", "--out", default="time_to_accuracy", help="output directory (rerun with it to resume)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of every student run (default 5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--teacher-ckpt", help="a trained vgg7_bn_cifar checkpoint (default: train one here)")
    p.add_argument("--teacher-epochs", type=int, default=15, help="epochs of the teacher trained here (default 15)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per run (default: all)")
    p.add_argument("--workers", type=int, default=2, help="torchdistill DataLoader workers (default 2)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1: clean timings)")
    p.add_argument("--in-process", action="store_true", help="every run in this process (no start-up per run)")
    p.add_argument("--smoke", action="store_true",
                   help="generated images, 1 teacher and 1 student epoch, 2 seeds, in this process (seconds)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.teacher_epochs, args.seeds, args.workers, args.threads = 1, 1, [0, 1], 0, 1
        args.in_process = True
    for flag in ("epochs", "teacher_epochs", "threads", "jobs"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if not args.smoke and not (args.data and os.path.isdir(args.data)):
        p.error(f"--data: no folder {args.data!r} (this benchmark needs CIFAR-10 python batches; --smoke makes some)")
    if args.teacher_ckpt and not os.path.isfile(args.teacher_ckpt):
        p.error(f"--teacher-ckpt: no file {args.teacher_ckpt!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        torchdistill_train(args.data, args.teacher_ckpt, args.seeds[0], args.epochs, args.workers, args.device,
                           args.out)
        return 0
    if args.smoke:
        from kd_plugin.data import write_synthetic_cifar

        with tempfile.TemporaryDirectory(prefix="time_to_accuracy_") as scratch:
            args.data = write_synthetic_cifar(os.path.join(scratch, "data"), train_images=160, test_images=40, seed=0)
            args.out = os.path.join(scratch, "out")
            os.makedirs(args.out)
            run_all(args, args.out)
        return 0
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    try:
        run_all(args, out)
    except RuntimeError as err:  # a run failed: its log has the details
        print(f"time_to_accuracy: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

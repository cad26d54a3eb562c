"""Distillation methods side by side on real images: a student alone, KD, DKD, DIST, KD + logit standardization,
and Deep Mutual Learning, each over several seeds, with the same student schedule for every run.

    python benchmarks/loss_comparison.py [--data DIR] [-o OUT] [--teacher CKPT] [--seeds 0 1 2] [--epochs 50]

1. Teacher: --teacher CHECKPOINT, else TEACHER_ARCH trained here for --teacher-epochs (SGD lr 0.05, cosine,
   wd 5e-4, batch 128, augmentation, seed 0) on the whole training split (--vs 0).
2. Students: one schedule for all (STUDENT, --epochs, SGD lr 0.05 cosine to 0, momentum 0.9, wd 5e-4, batch 128,
   --vs 0: every run trains on the whole training split and "best" ranks epochs by training top-1, never by the
   test split; no augmentation unless --student-augment y). Why no augmentation by default: on the 4,068-image
   subset a cnn5 with crop + flip matches the teachers we could train in about an hour of a 2-core CPU
   (measured, seed 0: cnn5 71.68 % after 50 epochs, the VGG7 teacher 71.19 % after 150), so KD has nothing to teach;
   without augmentation the student alone reaches ~65 % and the teacher leads by several points. It also makes
   the teacher-output cache complete after one epoch (one view per image). Two `kd-plugin sweep`s run side by
   side, one thread per run:
   - `--kd-loss kd dkd dist kd+ls`, no --alpha/-T, so each loss runs with its own recipe (kd: Distiller's);
   - `--kd-loss kd --alpha 0.9 -T 4 --train-baseline` (Hinton's KD as mdistiller runs it on CIFAR: CE 0.1,
     KD 0.9, T 4) and the student alone,
   then `compress_classifier --mutual STUDENT STUDENT` per seed (DML, T 1; both peers are compared with the
   student trained alone).
3. OUT/loss_comparison.md and .json: test top-1 mean ± std (sample std over seeds) per method, the gain over
   the baseline, and whether mean - std of the method clears mean + std of the baseline.
Everything is resumable: rerun the same command and finished runs are kept.
Data: --data, else ../shared/data/cifar10-subset beside the repository (this script needs real images).
--smoke checks that the whole comparison runs: generated images, 1 teacher and 1 student epoch, seed 0, output
in a temporary folder (about a minute: a dozen short runs, each its own process).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "cifar10-subset"))
RECIPE_LOSSES = ("kd", "dkd", "dist", "kd+ls")
KD_RECIPE = ("0.9", "4")  # alpha, T


def cosine_schedule(arch, epochs, path, augment="y"):
    text = (f"# written by benchmarks/loss_comparison.py\ntraining:\n  arch: {arch}\n  epochs: {epochs}\n"
            f"  batch_size: 128\n  optimizer: sgd\n  lr: 0.05\n  momentum: 0.9\n  weight_decay: 5.0e-4\n"
            f"  augment: {augment}\nlr_schedulers:\n  cosine:\n    class: CosineAnnealingLR\n    T_max: {epochs}\n"
            f"policies:\n  - lr_scheduler:\n      instance_name: cosine\n    starting_epoch: 0\n"
            f"    ending_epoch: {epochs}\n    frequency: 1\n")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def run(argv, log):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    with open(log, "a") as fh:
        failed = subprocess.run([sys.executable, *argv], env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if failed:
        with open(log) as fh:
            tail = "".join(fh.readlines()[-5:])
        sys.exit(f"failed: {' '.join(argv)} (see {log}); its last lines:\n{tail}")


def finished_summary(out, name):
    found = sorted(glob.glob(os.path.join(out, f"{name}___*", "summary.json")))
    return json.loads(Path(found[-1]).read_text()) if found else None


def train_teacher(args, out):
    teacher_dir = os.path.join(out, "teacher")
    summary = finished_summary(teacher_dir, "teacher")
    if summary is None:
        schedule = cosine_schedule(args.teacher_arch, args.teacher_epochs, os.path.join(out, "teacher.yaml"))
        run(["-m", "kd_plugin.compress_classifier", args.data, "--compress", schedule, "--vs", "0", "--seed", "0",
             "--threads", str(os.cpu_count() or 1), "--no-progress", "-n", "teacher", "-o", teacher_dir],
            os.path.join(out, "teacher.log"))
        summary = finished_summary(teacher_dir, "teacher")
    return summary["checkpoint"]


def sweep(args, out, name, schedule, teacher, *grid):
    run(["-m", "kd_plugin", "sweep", "--data", args.data, "--schedule", schedule, "--teacher",
         f"{args.teacher_arch}={teacher}", "--student", args.student, "--seeds", *map(str, args.seeds), "-j", "1",
         "--extra-args=--vs 0 --threads 1", "-o", os.path.join(out, name), *grid], os.path.join(out, f"{name}.log"))
    results = [json.loads(Path(p).read_text()) for p in glob.glob(os.path.join(out, name, "runs", "*", "result.json"))]
    return [r for r in results if "test_top1" in r]


def mutual(args, out, schedule):
    mutual_dir = os.path.join(out, "mutual")
    tops = []
    for seed in args.seeds:
        name = f"dml_s{seed}"
        if finished_summary(mutual_dir, name) is None:
            run(["-m", "kd_plugin.compress_classifier", args.data, "--compress", schedule, "--mutual", args.student,
                 args.student, "--vs", "0", "--seed", str(seed), "--threads", "1", "--no-progress", "-n", name,
                 "-o", mutual_dir], os.path.join(out, "mutual.log"))
        tops.append([peer["test_top1"] for peer in finished_summary(mutual_dir, name)["peers"]])
    return tops


def stats(values):
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows, baseline):
    """Markdown and JSON of ROWS [(method, recipe, test top-1 per seed, the teacher's test top-1 or None)]
    against BASELINE (the student alone, per seed)."""
    base_mean, base_std = stats(baseline)
    lines = ["| method | recipe | teacher top-1 % | seeds | test top-1 % (mean ± std) | per seed | Δ vs alone | "
             "clears the spread |", "|---|---|---|---|---|---|---|---|"]
    record = []
    for method, recipe, values, teacher_top1 in rows:
        mean, std = stats(values)
        alone = method == "student alone"
        clears = mean - std > base_mean + base_std
        lines.append(f"| {method} | {recipe} | {'—' if teacher_top1 is None else f'{teacher_top1:.2f}'} | "
                     f"{len(values)} | {mean:.2f} ± {std:.2f} | "
                     f"{' '.join(f'{v:.2f}' for v in values)} | {'—' if alone else f'{mean - base_mean:+.2f}'} | "
                     f"{'—' if alone else ('yes' if clears else 'no')} |")
        record.append({"method": method, "recipe": recipe, "teacher_top1": teacher_top1, "values": values,
                       "mean": mean, "std": std,
                       "delta": None if alone else mean - base_mean, "clears_spread": None if alone else clears})
    return "\n".join(lines) + "\n", record


def recipe_text(result):
    return f"distill {result['alpha']:g}, CE {result['student_weight']:g}, T {result['temperature']:g}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=SUBSET, help="CIFAR-10 python batches (default: ../shared/data/cifar10-subset)")
    p.add_argument("-o", "--out", default="loss_comparison", help="output directory (rerun with it to resume)")
    p.add_argument("--teacher", help="a trained teacher checkpoint (default: train TEACHER_ARCH here)")
    p.add_argument("--teacher-arch", default="vgg7_bn_cifar")
    p.add_argument("--teacher-epochs", type=int, default=150)
    p.add_argument("--student", default="cnn5_cifar")
    p.add_argument("--epochs", type=int, default=50, help="epochs of every student run")
    p.add_argument("--student-augment", choices=("y", "n"), default="n",
                   help="crop + flip for the students (default n: see the module's docstring)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--smoke", action="store_true", help="generated images, 1 epoch each, seed 0, in a temporary "
                                                        "folder: a check that the comparison runs")
    args = p.parse_args()
    if args.smoke:
        sys.path.insert(0, REPO)
        from kd_plugin.data import write_synthetic_cifar

        with tempfile.TemporaryDirectory(prefix="loss_comparison_") as scratch:
            args.data = write_synthetic_cifar(os.path.join(scratch, "data"), train_images=160, test_images=40, seed=0)
            args.out, args.teacher, args.teacher_epochs, args.epochs, args.seeds = scratch, None, 1, 1, [0]
            return compare(args)
    return compare(args)


def compare(args):
    if not os.path.isdir(args.data):
        sys.exit(f"no data at {args.data}: pass --data (this comparison needs real CIFAR-10 images)")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    teacher = os.path.abspath(args.teacher) if args.teacher else train_teacher(args, out)
    schedule = cosine_schedule(args.student, args.epochs, os.path.join(out, "student.yaml"), args.student_augment)
    with ThreadPoolExecutor(2) as pool:  # two lanes of one-thread runs, about equally long
        recipes = pool.submit(sweep, args, out, "sweep_recipes", schedule, teacher, "--kd-loss", *RECIPE_LOSSES)
        kd = pool.submit(sweep, args, out, "sweep_kd", schedule, teacher, "--kd-loss", "kd", "--alpha",
                         KD_RECIPE[0], "-T", KD_RECIPE[1], "--train-baseline")
        kd_results = kd.result()
        peers = pool.submit(mutual, args, out, schedule).result()
        recipe_results = recipes.result()
    by_seed = lambda cells: sorted(cells, key=lambda r: r["seed"])  # noqa: E731
    baseline = [r["test_top1"] for r in by_seed(r for r in kd_results if not r["teacher"])]
    rows = [("student alone", "—", baseline, None)]
    for label, results, loss in (("KD (Distiller's defaults)", recipe_results, "kd"),
                                 ("KD (Hinton/mdistiller recipe)", kd_results, "kd"), ("DKD", recipe_results, "dkd"),
                                 ("DIST", recipe_results, "dist"),
                                 ("KD + logit standardization", recipe_results, "kd+ls")):
        cells = by_seed(r for r in results if r["teacher"] and r.get("loss") == loss)
        rows.append((label, recipe_text(cells[0]), [r["test_top1"] for r in cells], cells[0].get("teacher_top1")))
    for i in range(2):
        rows.append((f"DML peer {i + 1} ({args.student} + {args.student})", "T 1", [p[i] for p in peers], None))
    text, record = table(rows, baseline)
    # as the KD runs recorded it (summary.json's distillation record), on the split of the students' numbers
    teacher_top1 = next((r.get("teacher_top1") for r in kd_results if r["teacher"]), None)
    head = (f"# Distillation methods on {args.data}\n\nTeacher {args.teacher_arch} ({teacher}): test top-1 "
            f"{'not recorded' if teacher_top1 is None else f'{teacher_top1:.2f} %'}. Student {args.student}, "
            f"{args.epochs} epochs, SGD lr 0.05 cosine, wd 5e-4, batch 128, "
            f"{'crop + flip' if args.student_augment == 'y' else 'no augmentation'}, whole training split (--vs 0), "
            f"seeds {' '.join(map(str, args.seeds))}.\n"
            f"'clears the spread': mean - std of the method > mean + std of the student alone.\n\n")
    with open(os.path.join(out, "loss_comparison.md"), "w") as fh:
        fh.write(head + text)
    with open(os.path.join(out, "loss_comparison.json"), "w") as fh:
        json.dump({"teacher": teacher, "teacher_test_top1": teacher_top1, "rows": record}, fh, indent=2)
    print(head + text)


if __name__ == "__main__":
    main()

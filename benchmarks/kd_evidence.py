"""Does KD help on real images? The student with its best solo recipe against distillation from an ensemble
teacher clearly stronger than it, 3 seeds per row, every checkpoint chosen without looking at the test split.

    python benchmarks/kd_evidence.py [--data DIR] [-o OUT] [--device cpu|cuda] [-j JOBS] [--smoke] [--print]

1. Teacher: --members networks of --member-arch (default 3 x VGG7), each trained here with its own seed, crop +
   flip, SGD lr 0.05 cosine, wd 5e-4, batch 128, --member-epochs, on the training split less a seeded 10 %
   validation split (best epoch by validation top-1), then joined by ``kd-plugin create-ensemble ensemble``
   (equal weights, average of logits). Its test top-1 and each member's are in the table.
2. Students (--student, default cnn5_cifar), all with the same recipe: crop + flip (the student's best solo
   recipe on this data: DESIGN §13), --epochs, SGD lr 0.05 cosine, wd 5e-4, batch 128, --vs 0.1 (every run's best
   epoch chosen on its validation split), seeds --seeds. Two `kd-plugin sweep` plans run as one queue of jobs:
   - KD over the declared grid --alphas x --temperatures, and the student alone (--train-baseline);
     the KD row is the grid cell with the highest mean *validation* top-1 (never the test split);
   - DKD, DIST and KD + logit standardization, each with its own published recipe (kd_plugin.distill.losses).
3. OUT/kd_evidence.md and .json: test top-1 mean ± std (sample std over seeds), Δ against the student alone,
   and whether mean - std clears the student alone's mean + std; the grid's validation means beside it.
Everything is resumable: rerun the same command and finished runs are kept (a killed run resumes from its last
checkpoint). --device cuda runs every job on the GPU; -j sets how many run at once (default: 2 on the CPU,
one per two cores on a GPU machine). --smoke runs every stage in seconds on generated data (CI).
Data: --data, else ../shared/data/cifar10-subset beside the repository.
"""
import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loss_comparison import cosine_schedule, recipe_text, stats, table  # noqa: E402

from kd_plugin.cli.training_args import RunArgs  # noqa: E402
from kd_plugin.data import write_synthetic_cifar  # noqa: E402
from kd_plugin.engine.settings import check_device  # noqa: E402
from kd_plugin.experiments.jobs import Job, JobRunner, exclusive_directory  # noqa: E402
from kd_plugin.experiments.naming import display_name  # noqa: E402
from kd_plugin.experiments.sweep import (  # noqa: E402
    add_sweep_args,
    baselines_from_results,
    plan_from_args,
    sweep_jobs,
    table_rows,
    write_tables,
)
from kd_plugin.util.errors import KDPluginError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "cifar10-subset"))
RECIPE_LOSSES = ("dkd", "dist", "kd+ls")
VALIDATION_SPLIT = "0.1"
SMOKE = {"members": 2, "member_epochs": 1, "epochs": 1, "seeds": [0, 1], "alphas": [0.5, 0.9],
         "temperatures": [4.0], "batch_size": 16}


def device_args(args):
    return ["--cpu"] if args.device == "cpu" else ["--gpus", args.device.partition(":")[2] or "0"]


def member_jobs(args, out, data):
    # the epochs are in the file name, so a rerun with other epochs is another command (refused, never mixed)
    schedule = cosine_schedule(args.member_arch, args.member_epochs,
                               os.path.join(out, f"member_{args.member_arch}_e{args.member_epochs}.yaml"))
    jobs = []
    for i in range(args.members):
        name = f"member{i + 1}"
        argv = [data, "--compress", schedule, "--vs", VALIDATION_SPLIT, "--seed", str(100 + i), "-b",
                str(args.batch_size), *device_args(args)]
        jobs.append(Job.training_run(name, os.path.join(out, "members", name), argv, meta={"member": i + 1}))
    return jobs


def ensemble_job(args, out, data, members):
    directory = os.path.join(out, "ensemble")
    path = os.path.join(directory, "ensemble.pth.tar")
    report = os.path.join(directory, "ensemble_branches.json")
    argv = ["create-ensemble", "ensemble", "-o", path, "--data", data, "--report", report, "--device", args.device,
            "--combine", args.member_combine,
            *(f for m in members for f in ("--member", f"{args.member_arch}={m['checkpoint']}"))]

    def collect(job):
        with open(report) as fh:
            branches = json.load(fh)["test_top1"]
        return {"checkpoint": path, "test_top1": branches["mix"], "branches": branches}

    return Job("ensemble", directory, argv, entry="kd-plugin", collect=collect, leftovers=[path, report], root=out,
               result_keys=())


def student_plans(args, out, data, teacher):
    schedule = cosine_schedule(args.student, args.epochs,
                               os.path.join(out, f"student_{args.student}_e{args.epochs}.yaml"))
    common = ["--data", data, "--schedule", schedule, "--teacher", f"ensemble_cifar={teacher}", "--seeds",
              *map(str, args.seeds), "-b", str(args.batch_size),
              f"--extra-args=--vs {VALIDATION_SPLIT} --teacher-cache off {' '.join(device_args(args))}"]
    parser = argparse.ArgumentParser()
    add_sweep_args(parser)
    grid = parser.parse_args([*common, "-o", os.path.join(out, "grid"), "--kd-loss", "kd", "--alpha",
                              *map(str, args.alphas), "-T", *map(str, args.temperatures), "--train-baseline"])
    recipes = parser.parse_args([*common, "-o", os.path.join(out, "recipes"), "--kd-loss", *RECIPE_LOSSES])
    return plan_from_args(grid, RunArgs), plan_from_args(recipes, RunArgs)


def run_jobs(runner, jobs, what):
    bar = tqdm(total=len(jobs), desc=what, unit="run")

    def say(message):
        tqdm.write(message)
        if ": done in " in message or ": failed (" in message:
            bar.update(1)
        elif message.endswith("already done, skipped"):
            bar.update(int(message.split()[0]))

    runner.say = say
    try:
        return runner.run(jobs)
    finally:
        bar.close()


def by_seed(results):
    return [r["test_top1"] for r in sorted(results, key=lambda r: r["seed"])]


def choose_kd_cell(results):
    """{(alpha, T): (mean validation top-1, [results])} of the KD grid and the key with the best mean (the
    validation split only: the test split never chooses)."""
    cells = {}
    for r in results:
        if r["teacher"]:
            cells.setdefault((r["alpha"], r["temperature"]), []).append(r)
    means = {key: (statistics.mean(r["best_valid_top1"] for r in runs), runs) for key, runs in cells.items()}
    return means, max(sorted(means), key=lambda key: means[key][0])  # a tie: the smallest (alpha, T)


def evidence_table(args, members, ensemble, grid_results, recipe_results):
    baseline_runs = [r for r in grid_results if not r["teacher"]]
    baseline = by_seed(baseline_runs)
    cells, chosen = choose_kd_cell(grid_results)
    rows = [("student alone", "—", baseline, None),
            (f"KD (α {chosen[0]:g}, T {chosen[1]:g}: best validation mean of the grid)",
             recipe_text(cells[chosen][1][0]), by_seed(cells[chosen][1]), ensemble["test_top1"])]
    for loss, label in (("dkd", "DKD"), ("dist", "DIST"), ("kd+ls", "KD + logit standardization")):
        runs = [r for r in recipe_results if r.get("loss") == loss]
        rows.append((label, recipe_text(runs[0]), by_seed(runs), ensemble["test_top1"]))
    text, record = table(rows, baseline)
    member_tops = [m["test_top1"] for m in members]
    m_mean, m_std = stats(member_tops)
    teacher = (f"Teacher: ensemble of {len(members)} x {display_name(args.member_arch)} (equal weights, average of "
               f"{'logits' if args.member_combine == 'logits' else 'probabilities'}), test top-1 "
               f"**{ensemble['test_top1']:.2f} %**; its members {m_mean:.2f} ± {m_std:.2f} "
               f"({' '.join(f'{v:.2f}' for v in member_tops)}), each {args.member_epochs} epochs with crop + flip, "
               f"best epoch by validation top-1.\n")
    base_mean, base_std = stats(baseline)
    grid_lines = ["| α | T | validation top-1 (mean over seeds) | test top-1 (mean ± std) |", "|---|---|---|---|"]
    for (alpha, temperature), (valid, runs) in sorted(cells.items()):
        t_mean, t_std = stats(by_seed(runs))
        mark = " (chosen)" if (alpha, temperature) == chosen else ""
        grid_lines.append(f"| {alpha:g} | {temperature:g} | {valid:.2f}{mark} | {t_mean:.2f} ± {t_std:.2f} |")
    head = (f"# Does KD help? {display_name(args.student)} on {args.data}\n\n{teacher}"
            f"Student {display_name(args.student)} alone: {base_mean:.2f} ± {base_std:.2f}. Every student run: "
            f"{args.epochs} epochs, SGD lr 0.05 cosine, wd 5e-4, batch {args.batch_size}, crop + flip, "
            f"{float(VALIDATION_SPLIT):.0%} validation split (best epoch by validation top-1), seeds "
            f"{' '.join(map(str, args.seeds))}. The test split chooses nothing (no epoch, no cell).\n"
            f"'clears the spread': mean - std of the method > mean + std of the student alone.\n\n")
    teacher_lines = ["| teacher | test top-1 % | validation top-1 % |", "|---|---|---|",
                     *(f"| member {i + 1}: {display_name(args.member_arch)}, seed {m['seed']} | {m['test_top1']:.2f} | "
                       f"{m['best_valid_top1']:.2f} |" for i, m in enumerate(members)),
                     f"| ensemble of the {len(members)} (equal weights, {args.member_combine}) | "
                     f"{ensemble['test_top1']:.2f} | — |"]
    text = (head + "\n".join(teacher_lines) + "\n\n" + text + "\nKD grid (the KD row is the cell with the best "
            "validation mean):\n\n" + "\n".join(grid_lines) + "\n")
    record = {"data": args.data, "student": args.student, "epochs": args.epochs, "seeds": args.seeds,
              "teacher": {"arch": "ensemble_cifar", "members": [m["checkpoint"] for m in members],
                          "member_arch": args.member_arch, "member_epochs": args.member_epochs,
                          "combine": args.member_combine,
                          "test_top1": ensemble["test_top1"], "member_test_top1": member_tops,
                          "branches": ensemble.get("branches")},
              "rows": record, "kd_grid": [{"alpha": a, "temperature": t, "valid_top1_mean": v,
                                           "test_top1": by_seed(runs), "chosen": (a, t) == chosen}
                                          for (a, t), (v, runs) in sorted(cells.items())]}
    return text, record


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--data", default=SUBSET, help="CIFAR-10 python batches (default: ../shared/data/cifar10-subset)")
    p.add_argument("-o", "--out", default="kd_evidence", help="output directory (rerun with it to resume)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (every run)")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="runs at once (default: 2 on the CPU, cores/2 with cuda; 0: one at a time in this process)")
    p.add_argument("--workers", type=int, default=None, help="alias of --jobs")
    p.add_argument("--student", default="cnn5_cifar")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every student run")
    p.add_argument("--member-arch", default="vgg7_bn_cifar", help="architecture of the teacher's members")
    p.add_argument("--members", type=int, default=3, help="how many members the ensemble teacher has")
    p.add_argument("--member-epochs", type=int, default=50)
    p.add_argument("--member-combine", choices=("logits", "probs"), default="logits",
                   help="the ensemble averages its members' logits (default) or probabilities")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.9], help="KD grid: distillation weights")
    p.add_argument("--temperatures", type=float, nargs="+", default=[2.0, 4.0], help="KD grid: temperatures")
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("--smoke", action="store_true", help="every stage in seconds on generated data (for CI)")
    p.add_argument("--print", dest="print_only", action="store_true", help="print OUT's table and exit")
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if len(args.seeds) < 2 or args.members < 1 or args.epochs < 1 or args.member_epochs < 1:
        p.error("needs two or more --seeds, --members >= 1 and epochs >= 1")
    jobs = args.workers if args.jobs is None else args.jobs
    if jobs is None:
        jobs = 0 if args.smoke else 2 if args.device == "cpu" else max(1, (os.cpu_count() or 2) // 2)
    args.jobs = jobs
    return args


def main(argv=None):
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    md_path, json_path = os.path.join(out, "kd_evidence.md"), os.path.join(out, "kd_evidence.json")
    if args.print_only:
        if not os.path.isfile(md_path):
            sys.exit(f"no {md_path} yet: run the benchmark first")
        print(Path(md_path).read_text())
        return 0
    os.makedirs(out, exist_ok=True)
    if not (args.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", args.device)):
        sys.exit(f"kd_evidence: --device must be cpu, cuda or cuda:N, got {args.device!r}")
    if args.smoke:
        args.data = write_synthetic_cifar(os.path.join(out, "data"), train_images=80, test_images=20, seed=3)
    if not os.path.isdir(args.data):
        sys.exit(f"no data at {args.data}: pass --data (this benchmark needs real CIFAR-10 images)")
    data = os.path.abspath(args.data)
    check_device(args.device)
    # the runs are child processes: they import this checkout's kd_plugin, wherever they are started from
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    runner = JobRunner(parallel=args.jobs)
    with exclusive_directory(out, "kd_evidence") as lock_fd:
        runner.keep_fds = (lock_fd,)
        members = list(run_jobs(runner, member_jobs(args, out, data), "teacher members").values())
        ensemble = run_jobs(runner, [ensemble_job(args, out, data, members)], "ensemble")["ensemble"]
        grid, recipes = student_plans(args, out, data, ensemble["checkpoint"])
        grid_jobs, recipe_jobs = sweep_jobs(grid, RunArgs), sweep_jobs(recipes, RunArgs)
        results = run_jobs(runner, recipe_jobs + grid_jobs, "students")  # the long KD runs first, baselines last
    grid_results = [results[job.name] for job in grid_jobs]
    recipe_results = [results[job.name] for job in recipe_jobs]
    for plan, plan_results in ((grid, grid_results), (recipes, recipe_results)):
        # each sweep's own sweep.md and sweep.csv, as `kd-plugin sweep` writes them
        write_tables(table_rows(plan_results, baselines_from_results(plan_results)), plan.out)
    text, record = evidence_table(args, members, ensemble, grid_results, recipe_results)
    with open(md_path, "w") as fh:
        fh.write(text)
    with open(json_path, "w") as fh:
        json.dump(record, fh, indent=2)
    print(text)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KDPluginError as err:
        sys.exit(f"kd_evidence: {err}")

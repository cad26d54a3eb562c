"""``kd-plugin sweep``: a grid of KD runs (teacher x student x loss x alpha x T x seed) from one base schedule.

Each cell is a run spec (``compress_classifier DATA [--compress BASE] -a STUDENT`` with the sweep's options and
--extra-args, then the cell's teacher, alpha, T, loss and seed set as spec fields), written to OUT/runs/NAME/spec.json
and run as ``compress_classifier --spec`` in its own process (up to --jobs at once), resumable through jobs.Job's
done markers. --extra-args may set any field but those the sweep sets; the tables show what each run recorded.
The results become the
original's table (teacher -> student, loss, alpha, CE weight, T, accuracy; mean ± std over seeds) as Markdown and
CSV, plus one PNG per teacher/student pair of accuracy against T per alpha with the student's baseline as a
horizontal line.
"""
import csv
import io
import json
import os
import re
import shlex
import statistics
from dataclasses import asdict, dataclass, field

from ..checkpoint import load_model
from ..data import TensorLoader, add_dataset_arg, load_split
from ..distill.extension import loss_name
from ..distill.losses import parse_loss_spec
from ..distill.losses.base import TEMPERATURE
from ..distill.teacher import as_list
from ..engine.loop import evaluate_loader
from ..models import resolve_arch
from ..protocol.config import read_schedule
from ..reporting.plots import accuracy_vs_temperature, plot_or_warn
from ..reporting.tables import markdown_table
from ..util.errors import KDPluginError
from ..util.fileio import ensure_writable_dir, require_file, write_json, write_text
from .ensembles.members import parse_members
from .grid import cell_result, check_unique_cells, exact, refuse_owned_fields, unique
from .jobs import Job, exclusive_directory
from .launchers import add_launcher_args, make_runner
from .naming import display_name, short
from .schedule_scaling import distillation_extension, scale_schedule, strip_distillation, write_schedule


@dataclass(frozen=True)
class Teacher:
    """One value of the teacher axis: a network (ARCH, CHECKPOINT) or an ensemble of MEMBERS, each
    (arch, checkpoint, weight or None); an ensemble's ARCH is ``ensemble_cifar`` and its CHECKPOINT None."""
    label: str
    arch: str
    checkpoint: str
    members: tuple = ()

    def fields(self) -> dict[str, object]:
        """The spec's teacher fields (by flag destination) for this value."""
        if not self.members:
            return {"kd_teacher": self.arch, "kd_resume": self.checkpoint, "kd_teacher_weights": None}
        weights = [w for _, _, w in self.members]
        return {"kd_teacher": [a for a, _, _ in self.members], "kd_resume": [c for _, c, _ in self.members],
                "kd_teacher_weights": weights if weights[0] is not None else None}

    def display(self) -> str:
        if not self.members:
            return display_name(self.arch)
        return "ensemble(" + " + ".join(display_name(a) for a, _, _ in self.members) + ")"


@dataclass
class SweepPlan:
    data: str
    out: str
    students: list
    teachers: list
    alphas: list
    temperatures: list
    seeds: list
    kd_schedule: str = None
    baseline_schedule: str = None
    train_baseline: bool = False
    run_args: list = field(default_factory=list)  # the sweep's own --epochs, --dataset, -b, for every cell
    losses: list = field(default_factory=lambda: [None])  # --kd-loss specs; None: the schedule's loss (or kd)
    default_loss: str = "kd"  # what None means, for the tables
    extra_args: list = field(default_factory=list)  # --extra-args, for every cell (never a field the sweep sets)


# The fields every cell sets (its student, teacher, seed, output), by flag destination.
CELL_FIELDS = ("data", "arch", "compress", "seed", "kd_teacher", "kd_resume", "kd_teacher_weights", "name",
               "out_dir", "resume_from", "mutual", "mutual_temperature")
AXIS_FIELDS = {"alphas": ("--alpha", ("kd_distill_wt", "kd_student_wt")),
               "temperatures": ("--temperature", ("kd_temperature",)),
               "losses": ("--kd-loss", ("kd_loss", "kd_loss_args", "kd_logit_standardize"))}


def loss_fields(spec):
    """The spec's loss fields for a --kd-loss value ``NAME[+ls][:ARG=VALUE,...]`` (None: the schedule's)."""
    if spec is None:
        return {}
    name, args, standardize = parse_loss_spec(spec)
    return {"kd_loss": name, "kd_loss_args": args or None, "kd_logit_standardize": True if standardize else None}


def owned_fields(axes, own_args, run_args):
    """{flag destination: who sets it} of the fields the sweep sets itself: every cell's, those of the AXES it
    sweeps ({'alphas': [...], ...}), and those its own options OWN_ARGS set."""
    owned = {dest: "each sweep cell" for dest in CELL_FIELDS}
    for axis, (option, dests) in AXIS_FIELDS.items():
        if axes[axis] != [None]:
            owned.update({dest: f"the sweep's {option} axis" for dest in dests})
    owned.update({dest: f"the sweep's own {flag}" for dest, flag in run_args.fields_set(own_args).items()})
    return owned


def base_spec(plan, run_args, student, schedule):
    """The spec every cell of STUDENT under SCHEDULE starts from: the sweep's options, the sweep's shared teacher
    cache, then --extra-args (which may choose another cache)."""
    return run_args.spec([plan.data, *(["--compress", schedule] if schedule else []), "-a", student,
                          *plan.run_args, "--teacher-cache", os.path.join(plan.out, "teacher_cache"),
                          *plan.extra_args])


def kd_job(plan, base, teacher, student, alpha, temperature, seed, loss=None):
    """One KD cell: BASE (base_spec) with the cell's fields set on top. ALPHA or TEMPERATURE None: not set here, so
    the run uses the schedule's value, else the loss's own recipe (its distill/CE weights, its T); the tables show
    what the run used either way."""
    tag = "" if loss is None else "_" + re.sub(r"[^A-Za-z0-9+=.-]", "-", loss)
    grid = "".join(f"_{key}{exact(value)}" for key, value in (("a", alpha), ("T", temperature)) if value is not None)
    name = f"{teacher.label}-to-{short(student)}{tag}{grid}_s{seed}"
    fields = {**teacher.fields(), "seed": seed, **loss_fields(loss),
              **({} if alpha is None else {"kd_distill_wt": alpha, "kd_student_wt": 1 - alpha}),
              **({} if temperature is None else {"kd_temperature": temperature})}
    meta = {"teacher": teacher.arch, "teacher_label": teacher.label, "teacher_name": teacher.display(),
            "teacher_checkpoint": teacher.checkpoint or [c for _, c, _ in teacher.members],
            "student": student, "alpha": alpha, "student_weight": None if alpha is None else 1 - alpha,
            "temperature": temperature, "seed": seed, "loss": plan.default_loss if loss is None else loss}
    return Job.spec_run(name, os.path.join(plan.out, "runs", name), base.changed(**fields), meta=meta,
                        collect=cell_result)


def baseline_job(plan, base, student, seed):
    name = f"baseline-{short(student)}_s{seed}"
    spec = base.changed(seed=seed).without_distillation()
    meta = {"teacher": None, "student": student, "alpha": None, "student_weight": None, "temperature": None,
            "seed": seed}
    return Job.spec_run(name, os.path.join(plan.out, "runs", name), spec, meta=meta, collect=cell_result)


def sweep_jobs(plan, run_args):
    """Every cell's job; RUN_ARGS reads compress_classifier's flags (cli.training_args.RunArgs). Each student's
    base spec is read once per schedule, not once per cell."""
    kd_bases = {s: base_spec(plan, run_args, s, plan.kd_schedule) for s in plan.students}
    jobs = [kd_job(plan, kd_bases[s], t, s, a, temp, seed, loss) for t in plan.teachers for s in plan.students
            for loss in plan.losses for a in plan.alphas for temp in plan.temperatures for seed in plan.seeds]
    if plan.train_baseline:
        bases = {s: base_spec(plan, run_args, s, plan.baseline_schedule) for s in plan.students}
        jobs += [baseline_job(plan, bases[s], s, seed) for s in plan.students for seed in plan.seeds]
    return check_unique_cells(jobs)


# --- tables ------------------------------------------------------------------------------------------------

def _stats(values):
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def baselines_from_results(results):
    by_student = {}
    for r in results:
        if r["teacher"] is None:
            by_student.setdefault(r["student"], []).append(r["test_top1"])
    return {student: _stats(values)[0] for student, values in by_student.items()}


def table_rows(results, baselines):
    """Rows of the original-style table: one per (teacher, student, loss, alpha, T), seeds aggregated."""
    groups, teachers = {}, {}  # teachers: label -> (name, test top-1 as the runs' summaries record it)
    for r in results:
        loss = (r.get("loss") or "kd") if r["teacher"] else ""
        key = (r.get("teacher_label") or "", r["teacher"] or "", r["student"], loss, r["alpha"],
               r.get("student_weight"), r["temperature"])
        groups.setdefault(key, []).append(r["test_top1"])
        if r["teacher"]:
            teachers[key[0]] = (r.get("teacher_name") or display_name(r["teacher"]), r.get("teacher_top1"))
    rows = []
    def order(key):
        label, _, student, loss, *numbers = key
        return label, student, loss, *(-1 if number is None else number for number in numbers)

    for (label, teacher, student, loss, alpha, student_weight, temperature), values in sorted(
            groups.items(), key=lambda kv: order(kv[0])):
        mean, std = _stats(values)
        baseline = baselines.get(student)
        name, teacher_top1 = teachers.get(label, (None, None)) if teacher else (None, None)
        rows.append({"teacher": label or "", "teacher_arch": teacher or "", "teacher_name": name or "",
                     "teacher_top1": teacher_top1, "student": student, "loss": loss,
                     "alpha": alpha, "student_weight": student_weight, "temperature": temperature,
                     "seeds": len(values), "mean": mean, "std": std,
                     "values": values, "baseline": baseline,
                     "delta": mean - baseline if baseline is not None and teacher else None})
    return rows


def _accuracy_text(row):
    return f"{row['mean']:.2f} ± {row['std']:.2f}" if row["seeds"] > 1 else f"{row['mean']:.2f}"


def markdown_rows(rows):
    shown = []
    for row in rows:
        pair = f"{row.get('teacher_name') or display_name(row['teacher_arch'])} → {display_name(row['student'])}" \
            if row["teacher_arch"] else f"(baseline) {display_name(row['student'])}"
        teacher_top1 = row.get("teacher_top1")
        shown.append({"teacher → student": pair,
                      "teacher top-1 (%)": "—" if teacher_top1 is None else f"{teacher_top1:.2f}",
                      "loss": row["loss"] or "—",
                      "alpha": "—" if row["alpha"] is None else f"{row['alpha']:g}",
                      "CE wt": "—" if row.get("student_weight") is None else f"{row['student_weight']:g}",
                      "T": "—" if row["temperature"] is None else f"{row['temperature']:g}", "seeds": row["seeds"],
                      "test top-1 (%)": _accuracy_text(row),
                      "Δ vs baseline": "—" if row["delta"] is None else f"{row['delta']:+.2f}"})
    return shown


def write_tables(rows, out_dir):
    md = write_text(os.path.join(out_dir, "sweep.md"), "# KD sweep\n\n" + markdown_table(markdown_rows(rows)))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["teacher", "teacher_arch", "teacher_name", "teacher_top1",
                                                "student", "loss", "alpha",
                                                "student_weight", "temperature", "seeds", "mean", "std", "values",
                                                "baseline", "delta"])
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "values": " ".join(f"{v:.2f}" for v in row["values"])})
    return md, write_text(os.path.join(out_dir, "sweep.csv"), buffer.getvalue())


def write_plots(rows, out_dir, warn=print):
    """One PNG per teacher -> student pair: accuracy against T, a line per alpha, the baseline dashed.
    Returns [(title, path)]."""
    pngs = []
    pairs = sorted({(r["teacher"], r["teacher_arch"], r["student"], r["loss"]) for r in rows if r["teacher_arch"]})
    several_losses = len({pair[3] for pair in pairs}) > 1
    for label, teacher, student, loss in pairs:
        points = [{"alpha": r["alpha"], "temperature": r["temperature"], "mean": r["mean"], "std": r["std"]}
                  for r in rows if r["teacher"] == label and r["student"] == student and r["loss"] == loss]
        baseline = next((r["baseline"] for r in rows if r["student"] == student), None)
        title = f"{display_name(teacher)} → {display_name(student)}" + (f", {loss}" if several_losses else "")
        suffix = "_" + re.sub(r"[^A-Za-z0-9+=.-]", "-", loss) if several_losses else ""
        png = plot_or_warn(accuracy_vs_temperature, points,
                           os.path.join(out_dir, f"accuracy_vs_T_{label}_to_{short(student)}{suffix}.png"),
                           baseline=baseline, warn=warn, title=title)
        if png:
            pngs.append((title, png))
    return pngs


# --- inputs ------------------------------------------------------------------------------------------------

def baseline_accuracy(path, test_set):
    """(arch, test top-1) from a summary.json/result.json, or by evaluating a checkpoint on the test split."""
    require_file(path, "--baseline file")
    if path.endswith(".json"):
        try:
            with open(path) as fh:
                summary = json.load(fh)
            return resolve_arch(summary["arch"] if "arch" in summary else summary["student"]), \
                float(summary["test_top1"])
        except (ValueError, KeyError, TypeError):
            raise KDPluginError(f"--baseline {path}: not a run summary (needs arch and test_top1)") from None
    model, checkpoint = load_model(path)
    if not checkpoint.arch:
        raise KDPluginError(f"--baseline {path}: the checkpoint does not name its architecture; "
                            f"give the run's summary.json instead")
    return checkpoint.arch, evaluate_loader(model, TensorLoader(test_set, 1024, "n"))["top1"]


def schedule_teacher(schedule: dict | None) -> list[tuple[str, str, float | None]]:
    """The schedule's KD teacher as [(arch, checkpoint, weight or None)], or []."""
    kd = distillation_extension(schedule) if schedule is not None else None
    if kd is None:
        return []
    archs, checkpoints = as_list(kd["teacher_arch"]), as_list(kd.get("teacher_checkpoint"))
    weights = as_list(kd.get("teacher_weights")) or [None] * len(archs)
    if len(checkpoints) != len(archs) or len(weights) != len(archs):
        raise KDPluginError("the schedule's KD extension needs one teacher_checkpoint (and weight) per teacher_arch")
    return [(resolve_arch(a), c, w) for a, c, w in zip(archs, checkpoints, weights, strict=True)]


def teacher_value(members: list[tuple[str, str, float | None]], taken: list[str]) -> Teacher:
    """The Teacher of MEMBERS, labelled uniquely among the labels TAKEN."""
    members = tuple((arch, os.path.abspath(checkpoint), weight) for arch, checkpoint, weight in members)
    if len(members) == 1 and members[0][2] is None:
        label, teacher = short(members[0][0]), dict(arch=members[0][0], checkpoint=members[0][1])
    else:
        label = f"ens{len(members)}-" + "-".join(sorted({short(a) for a, _, _ in members}))
        teacher = dict(arch="ensemble_cifar", checkpoint=None, members=members)
    if label in taken:
        label = f"{label}-{len(taken) + 1}"
    return Teacher(label, **teacher)


def parse_teachers(specs: list[str] | None, schedule: dict | None) -> list[Teacher]:
    values = [parse_members(spec, "--teacher") for spec in specs or []]
    if not values and schedule_teacher(schedule):
        values.append(schedule_teacher(schedule))
    if not values:
        raise KDPluginError("no teacher: pass --teacher ARCH=CHECKPOINT or a --schedule with a "
                            "KnowledgeDistillationExtension")
    teachers = []
    for members in values:
        for arch, checkpoint, _ in members:
            if not checkpoint or not os.path.isfile(checkpoint):
                raise KDPluginError(f"teacher {arch}: checkpoint {checkpoint!r} not found")
        teacher = teacher_value(members, [t.label for t in teachers])
        if any((t.arch, t.checkpoint, t.members) == (teacher.arch, teacher.checkpoint, teacher.members)
               for t in teachers):
            print(f"note: --teacher {teacher.display()} given more than once; it runs once")
            continue
        teachers.append(teacher)
    return teachers


def _check_grid(args):
    if not all(0 <= a <= 1 for a in args.alpha or []):
        raise KDPluginError(f"--alpha values must be in [0, 1], got {args.alpha}")
    for spec in args.kd_loss or []:
        parse_loss_spec(spec)
    if not all(TEMPERATURE[0](t) for t in args.temperature or []):
        raise KDPluginError(f"--temperature values must be > 0, got {args.temperature}")
    if not all(s >= 0 for s in args.seeds):
        raise KDPluginError(f"--seeds must be >= 0, got {args.seeds}")
    for flag, value in (("--jobs", args.jobs), ("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise KDPluginError(f"{flag} must be >= 1, got {value}")
    if args.train_baseline and args.baseline:
        raise KDPluginError("give either --baseline or --train-baseline, not both")


def plan_from_args(args, run_args):
    """The sweep's plan; --extra-args that set a field the sweep sets are refused before anything is written
    (RUN_ARGS, cli.training_args.RunArgs, tells which fields they set)."""
    _check_grid(args)
    schedule = read_schedule(args.schedule) if args.schedule else None
    students = unique([resolve_arch(s) for s in args.student or []], "--student")
    if not students and schedule and (schedule.get("training") or {}).get("arch"):
        students = [resolve_arch(schedule["training"]["arch"])]
    if not students:
        raise KDPluginError("no student: pass --student ARCH or a --schedule with training.arch")
    teachers = parse_teachers(args.teacher, schedule)
    try:
        extra = shlex.split(args.extra_args or "")
    except ValueError as err:
        raise KDPluginError(f"--extra-args: {err}") from None
    own_args = [*(["--epochs", str(args.epochs)] if args.epochs else []),
                *(["--dataset", args.dataset] if args.dataset else []),
                *(["-b", str(args.batch_size)] if args.batch_size else [])]
    axes = {"alphas": unique(args.alpha or [None], "--alpha"),
            "temperatures": unique(args.temperature or [None], "--temperature"),
            "losses": unique(args.kd_loss, "--kd-loss") if args.kd_loss else [None]}
    refuse_owned_fields(extra, owned_fields(axes, own_args, run_args), run_args)
    out = os.path.abspath(ensure_writable_dir(args.out_dir))
    kd_schedule = baseline_schedule = None
    if schedule is not None:
        base = scale_schedule(schedule, args.epochs) if args.epochs else schedule
        note = f"derived by kd-plugin sweep from {args.schedule}" + (f", scaled to {args.epochs} epochs"
                                                                     if args.epochs else "")
        kd_schedule = write_schedule(base, os.path.join(out, "schedule.yaml"), note)
        baseline_schedule = write_schedule(strip_distillation(base), os.path.join(out, "baseline_schedule.yaml"),
                                           note + ", without distillation")
    return SweepPlan(os.path.abspath(args.data), out, students, teachers, axes["alphas"], axes["temperatures"],
                     unique(args.seeds, "--seeds"), kd_schedule, baseline_schedule, args.train_baseline, own_args,
                     axes["losses"], schedule_loss(schedule), extra)


def schedule_loss(schedule):
    """The loss a base schedule's KD extension names (``kd`` when none), as the tables show it."""
    kd = distillation_extension(schedule) if schedule is not None else None
    return (loss_name((kd or {}).get("loss")) or "kd") + ("+ls" if (kd or {}).get("logit_standardize") else "")


def add_sweep_args(p):
    p.add_argument("--data", required=True, help="the dataset's folder (CIFAR-10/100 python files, an image folder)")
    add_dataset_arg(p)
    p.add_argument("--schedule", help="base YAML schedule (with a KnowledgeDistillationExtension, or without "
                                      "and --teacher)")
    p.add_argument("--teacher", action="append", metavar="ARCH=CHECKPOINT",
                   help="a teacher (repeatable); an ensemble teacher: members joined by commas, "
                        "ARCH=CHECKPOINT[@WEIGHT],ARCH=CHECKPOINT[@WEIGHT],...")
    p.add_argument("--student", action="append", metavar="ARCH", help="a student (repeatable)")
    p.add_argument("--alpha", type=float, nargs="+", help="distillation weights (student CE gets 1-alpha); "
                                                          "default: the schedule's, else each loss's own recipe")
    p.add_argument("--temperature", "-T", type=float, nargs="+", help="temperatures; default: the schedule's, else "
                                                                      "each loss's own")
    p.add_argument("--kd-loss", nargs="+", metavar="LOSS",
                   help="distillation losses, each NAME[+NAME][+ls][:ARG=VALUE,...] (e.g. kd dkd kd+ls dkd:beta=4 "
                        "kd+at fitnet:hint=layer2; default: the schedule's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds per cell (several: mean ± std)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="runs at once (CPU threads are split between them)")
    p.add_argument("-o", "--out-dir", default="sweep", help="sweep directory (rerun with the same one to resume)")
    p.add_argument("--epochs", type=int, help="epochs per run (the schedule's LR steps are scaled to fit)")
    p.add_argument("-b", "--batch-size", type=int, help="batch size per run")
    p.add_argument("--baseline", action="append", metavar="PATH",
                   help="student baseline: a run's summary.json or a checkpoint (repeatable, one per student)")
    p.add_argument("--train-baseline", action="store_true", help="also train each student without a teacher")
    p.add_argument("--extra-args", help="more compress_classifier options for every run, as one string")
    add_launcher_args(p)


def cmd_sweep(args, run_args):
    """``kd-plugin sweep``; RUN_ARGS reads compress_classifier's flags (cli.training_args.RunArgs)."""
    runner = make_runner(args, parallel=args.jobs)
    plan = plan_from_args(args, run_args)
    test_set = load_split(plan.data, "test", args.dataset)  # fails early, with one line, on a bad --data
    given = dict(baseline_accuracy(path, test_set) for path in args.baseline or [])
    jobs = sweep_jobs(plan, run_args)
    with exclusive_directory(plan.out, "sweep") as lock_fd:
        record = os.path.join(plan.out, "sweep.json")
        if not os.path.exists(record):  # a rerun keeps the last table's record until it has a new table
            write_json(record, asdict(plan))
        print(f"sweep: {len(jobs)} runs ({len(plan.teachers)} teacher(s) x {len(plan.students)} student(s) x "
              f"{len(plan.losses)} loss(es) x {len(plan.alphas)} alpha x {len(plan.temperatures)} T x "
              f"{len(plan.seeds)} seed(s)"
              f"{' + baselines' if plan.train_baseline else ''}), {args.jobs} at a time, in {plan.out}")
        try:
            runner.keep_fds = (lock_fd,)
            runner.run(jobs)
        finally:
            results = [r for r in (job.result() for job in jobs) if r is not None]
            if results:
                rows = table_rows(results, {**given, **baselines_from_results(results)})
                md, csv_path = write_tables(rows, plan.out)
                write_json(os.path.join(plan.out, "sweep.json"), {**asdict(plan), "rows": rows})  # plan + table
                write_plots(rows, plan.out)
                print(f"wrote {md} and {csv_path} ({len(results)} of {len(jobs)} runs)")
    return 0

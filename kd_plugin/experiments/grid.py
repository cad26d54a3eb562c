"""Grid integrity for sweeps and reproduce (issue 12): exact cell names, one cell per value, no --extra-args
that silently override what the grid sets, and each cell's values as its run actually used them."""
from ..util.errors import KDPluginError
from .jobs import run_summary

# What a sweep cell sets for every run; --extra-args may not set them again (the last one would win silently
# while the table still showed the planned value). Long options also match their argparse abbreviations.
SWEEP_GRID_FLAGS = ("--kd-distill-wt", "--kd-dw", "--kd-student-wt", "--kd-sw", "--kd-teacher-wt", "--kd-tw",
                    "--kd-temperature", "--kd-temp", "--seed", "-a", "--arch", "--kd-teacher", "--kd-resume",
                    "--kd-teacher-weights",
                    "--kd-random-teacher", "--kd-start-epoch", "-n", "--name", "-o", "--out-dir", "--compress",
                    "--resume-from", "--epochs", "-b", "--batch-size")
# What reproduce sets per stage.
REPRODUCE_FLAGS = ("--seed", "-a", "--arch", "--kd-teacher", "--kd-resume", "--kd-random-teacher", "-n", "--name",
                   "-o", "--out-dir", "--compress", "--resume-from")


def exact(value):
    """A number as written in a cell name: ``%g`` when that reads back as the same float (``0.5``, ``2``),
    otherwise repr's shortest round-trip form (``2.0000001``), so two different values never share a name."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def unique(values, flag, say=print):
    """VALUES without repeats (by value, first kept); a repeat is dropped with a note naming FLAG."""
    kept = []
    for value in values:
        if value in kept:
            say(f"note: {flag} {value!r} given more than once; it runs once")
        else:
            kept.append(value)
    return kept


def refuse_grid_flags(extra, flags, what="--extra-args"):
    """Refuse any token of EXTRA that is (or abbreviates, or attaches a value to) one of FLAGS."""
    for token in extra:
        if not token.startswith("-") or token == "-" or token[1:2].isdigit() or token[1:2] == ".":
            continue
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            hits = [f for f in flags if f.startswith("--") and (f == name or (len(name) > 3 and f.startswith(name)))]
        else:
            hits = [f for f in flags if not f.startswith("--") and token[:2] == f]
        if hits:
            hits.sort(key=lambda flag: flag != token.split("=", 1)[0])  # the flag itself before longer ones
            raise KDPluginError(f"{what} may not set {token.split('=', 1)[0]}: {hits[0]} is set by the "
                                f"{'sweep grid' if flags is SWEEP_GRID_FLAGS else 'pipeline'} for every run "
                                f"(use the command's own option instead)")
    return list(extra)


def used_values(summary):
    """The cell values a finished run used, from its summary.json: student, seed, and (for a KD run) the
    teacher, alpha (the distillation weight), the student's CE weight, T and the teacher's test top-1 (on the
    student's test split); a run without distillation has them None."""
    kd = (summary.get("distillation") or [None])[0] or {}
    return {"student": summary.get("arch"), "seed": summary.get("seed"), "teacher": kd.get("teacher_arch"),
            "alpha": kd.get("distill_weight"), "student_weight": kd.get("student_weight"),
            "temperature": kd.get("temperature"), "teacher_top1": kd.get("teacher_test_top1")}


def cell_result(job):
    """jobs.Job collect function: the run's summary with the cell's values taken from it, not from the plan.
    A value that differs from the plan is kept as the run used it and reported as planned_* too (a value the plan
    left unset, None, is the run's to choose)."""
    summary = run_summary(job)
    if summary is None or "distillation" not in summary:
        return summary
    used = used_values(summary)
    planned = {k: job.meta[k] for k in used if job.meta.get(k) is not None and job.meta[k] != used[k]}
    return {**summary, **used, **{f"planned_{k}": v for k, v in planned.items()}}


def check_unique_cells(jobs):
    """Two cells never share a directory (a run would be deleted, rows would merge)."""
    seen = {}
    for job in jobs:
        if job.directory in seen:
            raise KDPluginError(f"cells {seen[job.directory]} and {job.name} would share {job.directory}")
        seen[job.directory] = job.name
    return jobs

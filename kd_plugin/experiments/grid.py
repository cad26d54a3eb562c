"""Grid integrity for sweeps and reproduce: exact cell names, one cell per value, no --extra-args that set a spec
field the grid sets, and each cell's values as its run actually used them."""
from ..util.errors import KDPluginError
from .jobs import run_summary

# What reproduce sets per stage (flag destinations); --extra-args may not set them.
REPRODUCE_FIELDS = ("seed", "arch", "kd_teacher", "kd_resume", "kd_random_teacher", "name", "out_dir", "compress",
                    "resume_from")


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


def refuse_owned_fields(extra, owned, run_args):
    """Refuse --extra-args EXTRA that set a spec field in OWNED ({flag destination: who sets it})."""
    for dest, flag in run_args.fields_set(extra).items():
        if dest in owned:
            raise KDPluginError(f"--extra-args may not set {flag}: {owned[dest]} sets it (use that option instead)")
    return list(extra)


def used_values(summary):
    """The cell values a finished run used, from its summary.json: student, seed, and (for a KD run) the
    teacher, alpha (the distillation weight), the student's CE weight, T and the teacher's test top-1 (on the
    student's test split); a run without distillation has them None."""
    kd = (summary.get("distillation") or [None])[0] or {}
    return {"student": summary.get("arch"), "seed": summary.get("seed"), "teacher": kd.get("teacher_arch"),
            "alpha": kd.get("distill_weight"), "student_weight": kd.get("student_weight"),
            "temperature": kd.get("temperature"), "teacher_top1": kd.get("teacher_test_top1"),
            **({"loss": kd["loss"]} if "loss" in kd else {})}


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

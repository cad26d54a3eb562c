"""``reproduce --profile cifar100``: the CIFAR-100 benchmark table (mdistiller's recipe, DESIGN.md §12) — the two
teachers and two students trained alone, then KD, DKD, FitNets, AT and CRD for ResNet32x4 -> ResNet8x4 and
WRN-40-2 -> WRN-16-2, from the shipped ``c100_*`` schedules; CIFAR100_REPORT.md puts the published numbers
beside ours. ``cifar100-smoke`` runs every stage on generated CIFAR-100-format data for a quick look."""
import os

from ...reporting.tables import markdown_lines
from ...util.errors import KDPluginError
from ...util.fileio import write_text
from ..naming import display_name, short
from .stages import Pipeline

PAIRS = (("resnet32x4_cifar100", "resnet8x4_cifar100"), ("wrn_40_2_cifar100", "wrn_16_2_cifar100"))
METHODS = ("kd", "dkd", "fitnet", "at", "crd")
ALONE = "alone"
# Published CIFAR-100 top-1 (%) (DESIGN.md §12: KD and DKD from mdistiller's README, the rest from the DKD
# paper's table); a method without a number there is left blank.
REFERENCE = {
    PAIRS[0]: {ALONE: 72.50, "kd": 73.33, "fitnet": 73.50, "at": 73.44, "crd": 75.51, "dkd": 76.32},
    PAIRS[1]: {"kd": 74.92, "dkd": 76.23},
}
REPORT = "CIFAR100_REPORT.md"


class Cifar100Pipeline(Pipeline):
    """The table's runs as resumable jobs: the networks alone, then every (pair, method) distillation."""

    def plain_jobs(self):
        archs = [arch for pair in PAIRS for arch in pair]
        return [self._training(short(arch), arch, [self.data, "--compress",
                                                   self.schedule(f"c100_baseline_{short(arch)}", arch),
                                                   *self._run_args()]) for arch in archs]

    def ensemble_jobs(self, checkpoints):
        return []

    def kd_schedule_stems(self):
        return [f"c100_{method}_{short(t)}_to_{short(s)}" for t, s in PAIRS for method in METHODS]

    def kd_jobs(self, checkpoints):
        jobs = []
        for teacher, student in PAIRS:
            if teacher not in checkpoints:
                raise KDPluginError(f"teacher {teacher} has no checkpoint yet")
            for method in METHODS:
                stem = f"c100_{method}_{short(teacher)}_to_{short(student)}"
                extra = ["--kd-loss-arg", f"nce_k={self.profile.crd_negatives}"] \
                    if method == "crd" and self.profile.crd_negatives else []
                jobs.append(self._training(stem, student, [self.data, "--compress", self.schedule(stem, student),
                                                           "--kd-resume", checkpoints[teacher], *extra,
                                                           *self._run_args()],
                                           teacher=teacher, student=student, method=method))
        return jobs


def table_rows(results):
    """[pair, method, ours, published, difference] for every cell of the table (ours blank until it ran)."""
    alone = {r["arch"]: r.get("test_top1") for r in results.values() if not r.get("teacher")}
    kd = {(r["teacher"], r["student"], r["method"]): r.get("test_top1") for r in results.values() if r.get("teacher")}
    rows = []
    for pair in PAIRS:
        label = f"{display_name(short(pair[0]))} → {display_name(short(pair[1]))}"
        rows.append([label, "teacher alone", alone.get(pair[0]), None])
        rows.append([label, "student alone", alone.get(pair[1]), REFERENCE[pair].get(ALONE)])
        for method in METHODS:
            rows.append([label, method.upper() if method != "fitnet" else "FitNet", kd.get((*pair, method)),
                         REFERENCE[pair].get(method)])
    return rows


def _cell(value):
    return "—" if value is None else f"{value:.2f}"


def write_cifar100_report(out_dir, profile, data, results):
    """CIFAR100_REPORT.md from the finished runs (a table with blanks while some are missing)."""
    rows = table_rows(results)
    body = [[pair, method, _cell(ours), _cell(ref), "—" if ours is None or ref is None else f"{ours - ref:+.2f}"]
            for pair, method, ours, ref in rows]
    done = sum(1 for row in rows if row[2] is not None)
    lines = [f"# CIFAR-100 distillation table — profile `{profile.name}`", "",
             f"- **Profile**: `{profile.name}` — {profile.description}.",
             f"- **Data**: `{data}`; {done} of {len(rows)} cells measured.",
             "- **Ours**: test top-1 (%) of each run's best checkpoint (chosen on training top-1: the schedules hold "
             "no validation split, as mdistiller trains on all 50,000 images; mdistiller reports its best test "
             "epoch, so its numbers are if anything optimistic).",
             "- **Published**: DESIGN.md §12 (mdistiller's README for KD and DKD, the DKD paper's table for the "
             "rest); blank where it gives none.", "",
             *markdown_lines(["pair", "method", "ours top-1 (%)", "published top-1 (%)", "difference"], body)]
    return write_text(os.path.join(out_dir, REPORT), "\n".join(lines) + "\n")

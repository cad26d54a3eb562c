"""The original experiment as resumable jobs: teachers and students, AvNet, JointNet, every KD row.

Each stage reuses a schedule of ``schedules/`` (scaled to the profile's epochs) and runs through the
project's own commands: ``compress_classifier`` for training and KD, ``kd-plugin create-ensemble`` for AvNet
and ``kd-plugin train-jointnet`` for JointNet. Stages come in three groups, each needing the previous
one's checkpoints: plain networks, then the ensembles, then the KD rows.
"""
import glob
import json
import os

from ...protocol.config import read_schedule
from ...protocol.shipped import require_schedules_dir
from ...util.errors import KDPluginError
from ...util.fileio import require_file
from ..grid import cell_result
from ..jobs import Job, run_summary
from ..naming import short
from ..schedule_scaling import distillation_extension, scale_schedule, schedule_epochs, write_schedule

PLAIN_NETWORKS = ("resnet18_cifar", "vgg16_bn_cifar", "vgg7_bn_cifar", "cnn5_cifar")
ENSEMBLES = {"avnet_cifar": "avg", "jointnet_cifar": "jn"}
MODEL_ORDER = ("resnet18_cifar", "vgg16_bn_cifar", "avnet_cifar", "jointnet_cifar", "vgg7_bn_cifar", "cnn5_cifar")
JOINTNET_SCHEDULE = "jointnet_cifar"


class Pipeline:
    def __init__(self, out_dir, data, profile, seed=0, schedules_dir=None, extra_args=(), run_args=None):
        self.out = out_dir
        self.run_args = run_args  # reads compress_classifier's flags (cli.training_args.RunArgs): stages as specs
        self.data = data
        self.profile = profile
        self.seed = seed
        self.schedules_dir = require_schedules_dir(schedules_dir)
        self.extra_args = list(extra_args)

    # --- schedules ------------------------------------------------------------------------------------------
    def _source(self, stem):
        path = os.path.join(self.schedules_dir, f"{stem}.yaml")
        return require_file(path, "schedule file")

    def schedule(self, stem, arch):
        """The schedule scaled to the profile's epochs for ``arch``, written under OUT/schedules."""
        source = self._source(stem)
        sched = read_schedule(source)
        epochs = self.profile.epochs[arch]
        if schedule_epochs(sched) != epochs:
            sched = scale_schedule(sched, epochs)
        os.makedirs(os.path.join(self.out, "schedules"), exist_ok=True)
        return write_schedule(sched, os.path.join(self.out, "schedules", f"{stem}.yaml"),
                              f"{stem}.yaml for reproduce profile {self.profile.name}: {epochs} epochs")

    def kd_schedule_stems(self):
        stems = sorted(os.path.basename(p)[:-len(".yaml")]
                       for p in glob.glob(os.path.join(glob.escape(self.schedules_dir), "kd_*.yaml")))
        if not stems:
            raise KDPluginError(f"{self.schedules_dir}: no kd_*.yaml schedules")
        return stems

    # --- jobs -----------------------------------------------------------------------------------------------
    def _run_args(self):
        p = self.profile
        return ["--seed", str(self.seed), *(["-b", str(p.batch_size)] if p.batch_size else []),
                *(["--lr", f"{p.lr:g}"] if p.lr else []), *self.extra_args]

    def _training(self, name, arch, argv, entry="compress_classifier", prefix=(), **meta):
        """A training stage: the compress_classifier command line ARGV, run by ENTRY after PREFIX (kd-plugin
        train-jointnet with its member flags); a spec job when the pipeline reads flags into specs."""
        directory, meta = os.path.join(self.out, "runs", name), {"stage": name, "arch": arch,
                                                                 "epochs": self.profile.epochs.get(arch), **meta}
        if self.run_args is None:
            return Job.training_run(name, directory, [*prefix, *argv], entry, meta=meta)
        return Job.spec_run(name, directory, self.run_args.spec(argv), entry, prefix=prefix, meta=meta)

    def plain_jobs(self):
        return [self._training(short(arch), arch, [self.data, "--compress", self.schedule(f"baseline_{arch}", arch),
                                                   *self._run_args()])
                for arch in PLAIN_NETWORKS]

    def ensemble_jobs(self, checkpoints):
        members = ["--resnet18-ckpt", checkpoints["resnet18_cifar"], "--vgg16-ckpt", checkpoints["vgg16_bn_cifar"]]
        directory = os.path.join(self.out, "runs", "avnet")
        output = os.path.join(directory, "avnet_cifar.pth.tar")
        branches = os.path.join(directory, "avnet_cifar_branches.json")
        avnet = Job("avnet", directory, ["create-ensemble", "avg", "-o", output, *members, "--data", self.data],
                    "kd-plugin", meta={"stage": "avnet", "arch": "avnet_cifar", "epochs": None},
                    collect=lambda job: _ensemble_result(output, branches), leftovers=[output, branches],
                    result_keys=())
        jointnet = self._training("jointnet", "jointnet_cifar",
                                  [self.data, "-a", "jointnet_cifar", "--compress",
                                   self.schedule(JOINTNET_SCHEDULE, "jointnet_cifar"), *self._run_args()],
                                  entry="kd-plugin", prefix=("train-jointnet", *members))
        jointnet.collect = _with_branch_accuracy
        return [avnet, jointnet]

    def kd_jobs(self, checkpoints):
        jobs = []
        for stem in self.kd_schedule_stems():
            sched = read_schedule(self._source(stem))
            student = sched["training"]["arch"]
            kd = distillation_extension(sched)
            teacher = kd["teacher_arch"]
            if teacher not in checkpoints:
                raise KDPluginError(f"{stem}.yaml: teacher {teacher} is not one this pipeline trains")
            alpha, temperature = float(kd.get("distill_weight", 0.5)), float(kd.get("temperature", 1.0))
            jobs.append(self._training(stem, student, [self.data, "--compress", self.schedule(stem, student),
                                                       "--kd-resume", checkpoints[teacher], "--teacher-cache",
                                                       os.path.join(self.out, "teacher_cache"), *self._run_args()],
                                       teacher=teacher, teacher_label=short(teacher), student=student, alpha=alpha,
                                       temperature=temperature, seed=self.seed))
            jobs[-1].collect = cell_result  # the table shows what the run used (--extra-args included)
        return jobs


def _ensemble_result(output, branches):
    if not os.path.isfile(output):
        return None
    result = {"arch": "avnet_cifar", "checkpoint": output}
    if os.path.isfile(branches):
        with open(branches) as fh:
            result["branches"] = json.load(fh)
    return result


def _with_branch_accuracy(job):
    summary = run_summary(job)
    if summary is not None:
        path = os.path.join(summary["run_dir"], "branch_accuracy.json")
        if os.path.isfile(path):
            with open(path) as fh:
                summary["branches"] = json.load(fh)
    return summary

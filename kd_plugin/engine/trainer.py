"""A whole training run: data, model, optimizer, schedule, epochs, checkpoints, logs, resume and signals.

The optimizer is built once and kept for the run; the best checkpoint is chosen on the validation split
(never the test set); each epoch's order and augmentation derive from (seed, epoch), so resuming from a
checkpoint, even mid-epoch, replays exactly what an uninterrupted run would have done.
"""
import contextlib
import os
import random
import shlex
import signal
import sys

from collections.abc import Callable
from typing import Any

import torch

from .. import bridge, distill  # noqa: F401  (register the backends select_runtime picks from)
from ..checkpoint import check_arch, check_classes, load_checkpoint_file, load_weights, save_checkpoint
from ..checkpoint.normalization import resolve_normalization
from ..data import TensorLoader
from ..distill.extension import with_loss_flags
from ..distill.policy import DEFAULT_LOSS, DistillationLossWeights, DistillationMixin
from ..distill.teacher import build_teacher
from ..distill.teacher_cache import install_teacher_caches, resumed_cache_directory
from ..models import create_model, resolve_arch
from ..protocol.runtime import select_runtime
from ..spec import RunSpec
from ..util.errors import KDPluginError, NonFiniteLoss, TrainingInterrupted
from ..util.fileio import ensure_writable_dir, write_json
from ..util.normalization import Normalization
from .acceleration import accelerate_model, accelerate_teachers, grad_scaler, set_cpu_threads
from .best_checkpoint import best_chosen_on, carry_best_forward, tested_checkpoint
from .distributed import MainOnlyCsv, from_environment, main_only_logger, relaunch_command
from .guards import (
    check_distillation_window,
    check_optimizer_type,
    check_teacher_cache_dir,
    distillation_epochs,
    distillation_record,
    load_optimizer_state,
    move_distillation_start,
)
from .identity import check_resume, experiment_identity, uncompared_note
from .loop import evaluate_loader, per_class_accuracy, train_epoch
from .loss_parts import prepare_loss_parts
from .meters import EpochMeter
from .rng import capture_rng, restore_rng, seed_everything
from .run_data import load_run_data, run_loaders
from .rundir import close_logger, copy_configs, create_run_dir, make_logger

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
# The distillation fields a schedule's KD extension takes as arguments of the same name (the flags win);
# loss and loss_args go through with_loss_flags, start_epoch moves the policy.
EXTENSION_OVERRIDES = ("teacher_arch", "teacher_checkpoint", "teacher_weights", "teacher_combine", "temperature",
                       "distill_weight", "student_weight", "teacher_weight", "logit_standardize")


def build_optimizer(model: torch.nn.Module, spec: RunSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = spec.optimizer
    assert opt.lr is not None  # a RunSpec fills in the optimizer's default
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)


def distillation_policies(scheduler):
    return [p for p in scheduler.sched_metadata if isinstance(p, DistillationMixin)]


def build_schedule(model: torch.nn.Module, optimizer: torch.optim.Optimizer, spec: RunSpec,
                   sched_dict: dict | None = None, runtime: Any = None) -> Any:
    """The CompressionScheduler: YAML policies (the spec's distillation fields overriding their KD arguments) plus
    flag-declared KD, built from RUNTIME's classes (kd-plugin's own by default, or Distiller's:
    ``kd_plugin.protocol.runtime``)."""
    runtime = runtime or select_runtime("builtin")
    scheduler = runtime.CompressionScheduler(model)
    kd = spec.distillation
    overrides = {"extensions": {arg: getattr(kd, arg) for arg in EXTENSION_OVERRIDES}}
    overrides["extensions"]["random_teacher"] = True if kd.random_teacher else None
    if sched_dict:
        sched_dict = with_loss_flags(sched_dict, kd.loss, kd.loss_args)
        runtime.dict_config(model, optimizer, sched_dict, scheduler, overrides=overrides, source=spec.schedule.file)
        if kd.start_epoch is not None:
            move_distillation_start(scheduler, distillation_policies(scheduler), kd.start_epoch)
    if kd.teacher_arch and not distillation_policies(scheduler):
        teacher = build_teacher(model, kd.teacher_arch, kd.teacher_checkpoint, kd.random_teacher,
                                weights=kd.teacher_weights, combine=kd.teacher_combine)
        weights = DistillationLossWeights(kd.distill_weight, kd.student_weight, kd.teacher_weight)
        policy = runtime.KnowledgeDistillationPolicy(model, teacher, kd.temperature, weights, kd.loss or DEFAULT_LOSS,
                                                     kd.loss_args, bool(kd.logit_standardize))
        policy.teacher_checkpoint = kd.teacher_checkpoint
        scheduler.add_policy(policy, starting_epoch=kd.start_epoch or 0, ending_epoch=spec.schedule.epochs,
                             frequency=1)
    elif not distillation_policies(scheduler) and (given := kd.declared()):
        raise KDPluginError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --kd-teacher (or a KD "
                            f"extension in the schedule): without a teacher the run would train a plain student")
    return scheduler


@contextlib.contextmanager
def stop_on_signals(stop):
    def handler(signum, _frame):
        stop.signum = signum

    previous = {}
    for signum in SIGNAL_EXIT:
        with contextlib.suppress(ValueError):  # not the main thread
            previous[signum] = signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def resume_command(command, path):
    """COMMAND (the argv that started the run, program first) with --resume-from PATH in place of any earlier one."""
    command = command or [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    cleaned, skip = [], False
    for arg in command:
        if skip:
            skip = False
            continue
        if arg == "--resume-from":
            skip = True
            continue
        if not arg.startswith("--resume-from="):
            cleaned.append(arg)
    return " ".join(shlex.quote(a) for a in cleaned + ["--resume-from", path])


def interruption(stop, where, path, command):
    """The TrainingInterrupted to raise once the resumable checkpoint at PATH is saved after a signal."""
    name = signal.Signals(stop.signum).name
    return TrainingInterrupted(f"{name} at {where}: resumable checkpoint saved to {path}; resume with: "
                               f"{resume_command(command, path)}", SIGNAL_EXIT[stop.signum])


class TrainingRun:
    def __init__(self, settings: RunSpec, batch_hook_factory: Callable | None = None):
        self.s = settings
        self.dist = from_environment(settings.runtime.device)  # torchrun: this process's rank (distributed.py)
        self.device = self.dist.device
        self.batch_hook_factory = batch_hook_factory
        self.logger = None

    # --- set-up -------------------------------------------------------------------------------------------
    def setup(self):
        s = self.s
        self.arch = resolve_arch(s.model.arch)
        ensure_writable_dir(s.runtime.out_dir)
        self.runtime = select_runtime(s.runtime.backend)
        self.sched_dict = self.runtime.read_schedule(s.schedule.file) if s.schedule.file else None
        resume = check_arch(load_checkpoint_file(s.resume.checkpoint), self.arch) if s.resume.checkpoint else None
        run_state = resume.plugin_state.get("run", {}) if resume is not None else {}
        seed = s.data.seed if s.data.seed is not None else run_state.get("seed", random.randrange(2**31))
        self.seed = self.dist.on_main(lambda: seed)  # a drawn seed is rank 0's on every rank
        seed_everything(self.seed, s.runtime.deterministic)
        set_cpu_threads(s.runtime.threads)
        data = load_run_data(s, self.seed)
        self.test_set, self.classes, self.train_hash = data.test, data.classes, data.train_hash
        self.dataset = data.dataset
        if resume is not None:
            check_classes(resume, self.classes)
        self.normalization, self.normalization_note = run_normalization(s, self.arch, resume, data)
        train_loader, self.valid_loader = run_loaders(s, data, self.seed, self.device, self.normalization)
        self.train_loader = self.dist.shard(train_loader)
        self.model = create_model(self.arch, dataset=self.dataset, normalization=self.normalization,
                                  classes=self.classes).to(self.device)
        if s.model.load_weights_from:
            load_model_into(self.model, s.model.load_weights_from, self.arch, self.classes)
        accelerate_model(self.model, self.device, s.runtime.channels_last, s.runtime.amp, s.runtime.compile)
        self.optimizer = build_optimizer(self.model, s)
        self.scheduler = build_schedule(self.model, self.optimizer, s, self.sched_dict, self.runtime)
        check_distillation_window(self.scheduler, distillation_policies(self.scheduler), s.schedule.epochs,
                                  s.schedule.file or "--kd-teacher")
        self.loss_notes = prepare_loss_parts(distillation_policies(self.scheduler), self.scheduler, self.optimizer,
                                             data.train, self.device, self.dist.distributed)
        accelerate_teachers(distillation_policies(self.scheduler), s.runtime.channels_last, s.runtime.amp)
        self.grad_scaler = grad_scaler(s.runtime.amp, self.device)
        self.teacher_cache_dir, self.teacher_cache_note = teacher_cache_dir(s, resume)
        check_teacher_cache_dir(self.teacher_cache_dir, distillation_policies(self.scheduler))
        self.teacher_caches = install_teacher_caches(distillation_policies(self.scheduler), self.train_loader,
                                                     self.teacher_cache_dir or "off", s.runtime.out_dir)
        # A model may define its own training loss (JointNet's multi-branch CE); evaluation always uses plain CE.
        self.criterion = self.model.training_criterion() if hasattr(self.model, "training_criterion") \
            else torch.nn.CrossEntropyLoss()
        self.start_epoch, self.start_batch, self.meter = 0, 0, EpochMeter()
        self.best = {"top1": float("-inf"), "epoch": -1}
        self.identity, self.accepted_changes, self.resume_note = self.experiment_identity(), [], None
        self.train_model = self.dist.wrap(self.model, s.runtime.sync_bn)
        if resume is not None:
            self._resume(resume, run_state)
        self.run_dir = self.dist.on_main(create_run_dir, s.runtime.out_dir, s.runtime.name or self.arch)
        self.name = s.runtime.name or self.arch
        self.logger = make_logger(self.run_dir, self.name, s.runtime.verbose) if self.dist.is_main \
            else main_only_logger(self.run_dir, self.dist.rank)
        if self.dist.is_main:
            if resume is not None:  # until an epoch beats it, the resumed run's best checkpoint is this run's too
                carry_best_forward(resume, self.best, self.run_dir, self.name)
            copy_configs(self.run_dir, [s.schedule.file])
        self.csv = MainOnlyCsv(os.path.join(self.run_dir, "training.csv"), self.dist.is_main)
        self.tensorboard = tensorboard_writer(self.run_dir) if self.dist.is_main else None
        return self

    def _resume(self, resume, run_state):
        s = self.s
        load_weights(self.model, resume)
        if s.resume.reset_optimizer:
            return
        recorded_world = run_state.get("world_size", 1)
        if recorded_world != self.dist.world_size:  # each rank's RNG and data position: never acceptable
            raise KDPluginError(f"{s.resume.checkpoint}: checkpoint was trained with world_size={recorded_world}, "
                                f"this run "
                                f"has world_size={self.dist.world_size}; resume with the same number of processes "
                                f"or pass --reset-optimizer")
        self.resume_note = uncompared_note(resume.plugin_state)
        self.accepted_changes = check_resume(s.resume.checkpoint, resume.plugin_state, self.identity,
                                             self.run_identity(),
                                             s.resume.accept_changes)
        check_optimizer_type(resume, self.optimizer)
        if "optimizer_state_dict" in resume.content:
            load_optimizer_state(self.optimizer, resume.content["optimizer_state_dict"], s.resume.checkpoint)
        if "compression_sched" in resume.content and "policy_states" in resume.content["compression_sched"]:
            self.scheduler.load_state_dict(resume.content["compression_sched"])
        state = resume.plugin_state
        state = {**state, **state["ranks"][self.dist.rank]} if "ranks" in state else state  # every rank's RNG, meter
        if "rng" in state:
            restore_rng(state["rng"])
        resume_batch = state.get("resume_batch")
        if resume_batch is not None:
            self.start_epoch, self.start_batch = resume.epoch, int(resume_batch)
            self.meter.load_state_dict(state["meter"])
        else:
            self.start_epoch = (resume.epoch or 0) + 1
        best = resume.extras
        if "best_top1" in best:
            self.best = {"top1": float(best["best_top1"]), "epoch": int(best.get("best_epoch", -1))}

    # --- checkpoints --------------------------------------------------------------------------------------
    def run_identity(self):
        """What a resumed run must share with the checkpoint's to continue it exactly (data order included)."""
        identity = {"seed": self.seed, "batch_size": self.s.data.batch_size, "augment": self.s.data.augment,
                    "num_train": len(self.train_loader.image_set), "train_data_hash": self.train_hash,
                    "normalization": self.normalization.describe(), "dataset": self.dataset}
        identity["world_size"] = self.dist.world_size  # each rank's share of a global batch is part of the order
        return identity

    def experiment_identity(self):
        policies = [(p, self.scheduler.sched_metadata[p]["starting_epoch"])
                    for p in distillation_policies(self.scheduler)]
        return experiment_identity(self.run_identity(), self.optimizer, policies, self.sched_dict, self.s)

    def plugin_state(self, resume_batch=None):
        state = {"run": {**self.run_identity(), "arch": self.arch, "data": self.test_set.source,
                         "epochs": self.s.schedule.epochs}, "identity": self.identity,
                 "spec": self.s.record(self.run_dir), "rng": capture_rng(), "resume_batch": resume_batch,
                 "teacher_cache_dir": self.teacher_cache_dir}
        if resume_batch is not None:
            state["meter"] = self.meter.state_dict()
        if self.dist.distributed:
            state["ranks"] = self.dist.gather({k: state[k] for k in ("rng", "meter") if k in state})
        return state

    def save(self, epoch, top1=None, is_best=False, resume_batch=None):
        bad = next((n for n, t in self.model.state_dict().items() if t.is_floating_point() and
                    not bool(torch.isfinite(t).all())), None)
        if bad is not None:  # never replace the last good checkpoint with one that cannot be loaded
            raise NonFiniteLoss(f"weights of {bad} became NaN or Inf in epoch {epoch}; stopped without saving "
                                f"(the last good and best checkpoints are untouched)")
        extras = {"current_top1": top1 if top1 is not None else float("nan"),
                  "best_top1": self.best["top1"], "best_epoch": self.best["epoch"]}
        extras = {k: v for k, v in extras.items() if not (isinstance(v, float) and (v != v or v == float("-inf")))}
        # with every checkpoint, so a resumed run sees the cache as it was
        self.dist.save_teacher_caches(self.teacher_caches)
        plugin_state = self.plugin_state(resume_batch)
        return self.dist.on_main(save_checkpoint, epoch, self.arch, self.model, self.optimizer, self.scheduler,
                                 extras, is_best, self.name, self.run_dir, plugin_state, self.dataset)

    # --- the loop -----------------------------------------------------------------------------------------
    def fit(self):
        s, log = self.s, self.logger
        log.info("Training %s on %d images (validation %d, test %d), epochs %d..%d, batch %d, %s lr %g, seed %d",
                 self.arch, self.train_loader.num_images,
                 self.valid_loader.num_images if self.valid_loader else 0, len(self.test_set), self.start_epoch,
                 s.schedule.epochs - 1, s.data.batch_size, s.optimizer.name, self.optimizer.param_groups[0]["lr"],
                 self.seed)
        log.info("Input normalization: %s, %s", self.normalization.describe(), self.normalization_note)
        for policy in distillation_policies(self.scheduler):
            describe = getattr(policy.teacher, "describe", None)  # an ensemble names its members and weights
            log.info("Distillation: teacher %s, T=%g, weights distill=%g student=%g, epochs %s..%s, loss %s",
                     describe() if describe else getattr(policy.teacher, "arch", type(policy.teacher).__name__),
                     policy.temperature,
                     policy.loss_wts.distill, policy.loss_wts.student,
                     self.scheduler.sched_metadata[policy]["starting_epoch"],
                     self.scheduler.sched_metadata[policy]["ending_epoch"] - 1, policy.distillation_loss.describe())
            inside, beyond = distillation_epochs(self.scheduler, policy, s.schedule.epochs)
            if beyond:
                log.warning("Distillation: the policy is also scheduled for epochs %d..%d, beyond this run's last "
                            "epoch %d: it distills in %d of the run's %d epochs", beyond[0], beyond[-1],
                            s.schedule.epochs - 1,
                            len(inside), s.schedule.epochs)
            if not policy.used_settings()["teacher_checkpoint"]:
                log.warning("Distillation: the teacher %s has random weights (--kd-random-teacher)",
                            policy.used_settings()["teacher_arch"])
        if self.resume_note:
            log.info("Resumed: %s", self.resume_note)
        if self.accepted_changes:
            log.info("Resumed with changes accepted by --resume-accept-changes: %s", ", ".join(self.accepted_changes))
        if self.teacher_cache_note:
            log.info("%s", self.teacher_cache_note)
        for note in self.loss_notes:
            log.info("Distillation: %s", note)
        for cache in self.teacher_caches:
            set_aside = cache.cache_file.set_aside_as if cache.cache_file else []
            log.info("Teacher-output cache %s: %d of %d (image, view) rows filled%s",
                     cache.cache_file.path if cache.cache_file else "(in memory)", cache.cache.num_filled,
                     cache.cache.size, f" (a file that failed its checks was set aside: {', '.join(set_aside)})"
                     if set_aside else "")
        hooks = [cache.set_batch for cache in self.teacher_caches]
        hooks += [policy.set_batch for policy in distillation_policies(self.scheduler)]  # labels for the loss
        hooks += [self.batch_hook_factory(self)] if self.batch_hook_factory else []
        batch_hook = (lambda batch: [hook(batch) for hook in hooks]) if hooks else None
        stop = self.dist.stop_request()
        with stop_on_signals(stop):
            for epoch in range(self.start_epoch, s.schedule.epochs):
                path = self._run_epoch(epoch, stop, batch_hook)
                if stop.settle():  # the signal came after the epoch's last step: its checkpoint is the resumable one
                    raise self._interrupted(stop, f"the end of epoch {epoch}", path)
        return self.finish()

    def _interrupted(self, stop, where, path):
        return interruption(stop, where, path, relaunch_command(self.s.command, self.dist.world_size))

    def _run_epoch(self, epoch, stop, batch_hook):
        s, log = self.s, self.logger
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.on_epoch_begin(epoch, self.optimizer)
        meter, next_batch, seconds = train_epoch(
            self.train_model, self.train_loader, self.criterion, self.optimizer, self.scheduler, epoch,
            start_batch=self.start_batch, meter=self.meter, stop=stop, batch_hook=batch_hook,
            progress=s.runtime.progress, check_every=1 if self.device.type == "cpu" else 50,
            grad_scaler=self.grad_scaler)
        images = (next_batch - self.start_batch) * s.data.batch_size * self.dist.world_size
        self.dist.sync_buffers(self.model)
        self.start_batch, self.meter = 0, EpochMeter()
        if next_batch < len(self.train_loader):
            self.meter = meter  # this rank's partial sums go into the checkpoint
            path = self.save(epoch, resume_batch=next_batch)
            raise self._interrupted(stop, f"epoch {epoch}, batch {next_batch}", path)
        train_stats = self.dist.reduce_meter(meter).results()
        valid = evaluate_loader(self.model, self.valid_loader) if self.valid_loader else None
        score = valid["top1"] if valid else train_stats["top1"]
        self.scheduler.on_epoch_end(epoch, self.optimizer,
                                    metrics={"min": valid["Loss"] if valid else train_stats["Objective Loss"],
                                             "max": score})
        is_best = score > self.best["top1"]
        if is_best:
            self.best = {"top1": score, "epoch": epoch}
        path = self.save(epoch, score, is_best)
        row = {"epoch": epoch, "lr": lr, **{f"train {k}": v for k, v in train_stats.items()}}
        if valid:
            row.update({"valid Loss": valid["Loss"], "valid top1": valid["top1"], "valid top5": valid["top5"]})
        row.update({"images/s": min(images, self.train_loader.num_images) / max(seconds, 1e-9), "seconds": seconds})
        for policy in self.scheduler.sched_metadata:
            if hasattr(policy, "epoch_counters"):
                row.update(policy.epoch_counters())
        self.csv.append(row)
        write_scalars(self.tensorboard, row, epoch)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        log.info("Epoch %d: %s%s", epoch, shown, " (best)" if is_best else "")
        return path

    def _distillation_record(self, test_loader):
        """summary.json's ``distillation`` with each teacher's top-1 on the split the student's test_top1 is on."""
        policies = distillation_policies(self.scheduler)
        record = distillation_record(self.scheduler, policies)
        for entry, policy in zip(record, policies, strict=True):
            entry["teacher_test_top1"] = evaluate_loader(policy.teacher, test_loader)["top1"]
        return record

    def finish(self):
        """Evaluate the best checkpoint on the test split and write summary.json (rank 0; the others get its
        summary)."""
        summary = self.dist.on_main(self._final_test)
        close_logger(self.logger)
        return summary

    def _final_test(self):
        chosen, tested = tested_checkpoint(self.run_dir, self.name, self.arch, self.best, self.logger)
        if tested is not None:
            load_weights(self.model, tested)
        test_loader = TensorLoader(self.test_set, 1024, "n", device=self.device, normalization=self.normalization)
        test = evaluate_loader(self.model, test_loader)
        summary = {"arch": self.arch, "run_dir": self.run_dir, "checkpoint": chosen,
                   "checkpoint_epoch": tested.epoch if tested is not None else None,
                   "checkpoint_valid_top1": tested.extras.get("current_top1") if tested is not None else None,
                   "best_epoch": self.best["epoch"], "best_valid_top1": self.best["top1"],
                   "best_chosen_on": best_chosen_on(self.valid_loader),
                   "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["Loss"],
                   "test_images": len(self.test_set), "dataset": self.dataset,
                   "test_per_class": per_class_accuracy(test["confusion"], self.classes),
                   "rows": self.csv.rows, "seed": self.seed,
                   "distillation": self._distillation_record(test_loader), "spec": self.s.record(self.run_dir)}
        write_json(os.path.join(self.run_dir, "summary.json"), summary)
        self.logger.info("Test (%s): top1 %.2f top5 %.2f loss %.4f on %d images", os.path.basename(chosen),
                         test["top1"], test["top5"], test["Loss"], len(self.test_set))
        return summary


def run_normalization(spec: RunSpec, arch: str, resume: Any = None, data: Any = None) -> tuple[Normalization, str]:
    """(Normalization, why) of the student: resolve_normalization with the resumed or weight-source checkpoint and
    the DATA's dataset."""
    source = resume
    if source is None and spec.model.load_weights_from:
        source = load_checkpoint_file(spec.model.load_weights_from)
    return resolve_normalization(spec.data.normalization, source, arch, data.dataset if data is not None else None)


def teacher_cache_dir(settings, resume=None):
    """(teacher-output cache directory or None, note for the run log or None): see resumed_cache_directory."""
    recorded = resume.plugin_state.get("teacher_cache_dir") if resume is not None else None
    return resumed_cache_directory(settings.distillation.cache, settings.runtime.out_dir,
                                   recorded if isinstance(recorded, str)
                                   else None)


def load_model_into(model, path, arch, classes=None):
    return load_weights(model, check_classes(check_arch(load_checkpoint_file(path), arch), classes))


def run_training(settings: RunSpec, batch_hook_factory: Callable | None = None) -> dict:
    run = TrainingRun(settings, batch_hook_factory)
    try:
        return run.setup().fit()
    finally:
        if run.logger is not None:
            close_logger(run.logger)
        run.dist.close()


def tensorboard_writer(run_dir):
    """TensorBoard event files beside training.csv, only when tensorboard is installed (never a dependency)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(run_dir)


def write_scalars(writer, row, epoch):
    if writer is None:
        return
    for name, value in row.items():
        if isinstance(value, (int, float)) and name != "epoch":
            writer.add_scalar(name.replace(" ", "/", 1), value, epoch)
    writer.flush()

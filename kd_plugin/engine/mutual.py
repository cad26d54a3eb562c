"""A Deep Mutual Learning run: two or more peers trained together on the same batches (``distill.mutual``).

Each peer has its own optimizer and its own LR schedulers, built from the one schedule as a single-model run
builds them. Every step all peers see the same augmented batch; all forward passes come first, then each peer
takes its own step on CE + the mean KL from the other (detached) peers. One checkpoint holds the whole group
(every peer's weights, optimizer, schedule state and best weights so far, the RNG and the data position), so a
resume, mid-epoch too, continues exactly. Each peer's best epoch (by its own validation top-1) is also written
as an ordinary single-model checkpoint, ``{name}_{peer}_best.pth.tar``, which ``kd-plugin evaluate``,
``report``, ``--kd-resume`` and Distiller load like any other.
"""
import os
import random
import time
from collections.abc import Callable

import torch

from ..checkpoint import (
    Checkpoint,
    checkpoint_content,
    checkpoint_paths,
    load_checkpoint_file,
    load_weights,
    write_checkpoint,
)
from ..data import TensorLoader
from ..distill.mutual import (
    DEFAULT_MUTUAL_TEMPERATURE,
    check_peers,
    mutual_losses,
    mutual_spec,
    peer_labels,
)
from ..models import create_model, default_cfg
from ..protocol.runtime import select_runtime
from ..spec import RunSpec
from ..util.errors import KDPluginError, NonFiniteLoss
from ..util.fileio import ensure_writable_dir, write_json
from ..util.normalization import set_normalization
from .acceleration import accelerate_model, grad_scaler, set_cpu_threads
from .best_checkpoint import best_chosen_on
from .loop import (
    StopRequest,
    check_finite,
    epoch_batches,
    evaluate_loader,
    optimizer_step,
    per_class_accuracy,
)
from .meters import EpochMeter, topk_correct
from .rng import capture_rng, restore_rng, seed_everything
from .run_data import load_run_data, run_loaders
from .rundir import CsvLog, close_logger, copy_configs, create_run_dir, make_logger
from .guards import load_optimizer_state
from .identity import check_resume, experiment_identity, uncompared_note
from .trainer import (
    build_optimizer,
    build_schedule,
    distillation_policies,
    interruption,
    run_normalization,
    stop_on_signals,
    tensorboard_writer,
    write_scalars,
)

NOT_YET = float("-inf")


class Peer:
    """One network of the group: its model, optimizer, schedule, this epoch's meter and its best epoch."""

    def __init__(self, index, label, arch, model, optimizer, scheduler, scaler):
        self.index, self.label, self.arch = index, label, arch
        self.model, self.optimizer, self.scheduler, self.grad_scaler = model, optimizer, scheduler, scaler
        self.meter = EpochMeter()
        self.best = {"top1": NOT_YET, "epoch": -1}
        self.best_state = None  # a copy of the weights of its best epoch

    def remember_best(self, top1, epoch):
        self.best = {"top1": top1, "epoch": epoch}
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def state(self):
        return {"arch": self.arch, "optimizer_state_dict": self.optimizer.state_dict(),
                "compression_sched": self.scheduler.state_dict(), "meter": self.meter.state_dict(),
                "best_top1": None if self.best["top1"] == NOT_YET else self.best["top1"],
                "best_epoch": self.best["epoch"], "best_state_dict": self.best_state}


def train_mutual_epoch(peers, loader, epoch, temperature, start_batch=0, stop=None, batch_hook=None, progress=True,
                       check_every=1):
    """Train every peer one epoch on the same batches. Returns (next_batch, seconds); next_batch < len(loader)
    if stopped early. The peers' meters collect their losses and top-k counts."""
    for peer in peers:
        peer.model.train()
    steps = len(loader)
    began = time.perf_counter()
    next_batch = start_batch
    for batch_id, batch in epoch_batches(loader, epoch, start_batch, batch_hook, progress):
        for peer in peers:
            peer.scheduler.on_minibatch_begin(epoch, batch_id, steps, peer.optimizer)
        logits = [peer.model(batch.inputs) for peer in peers]  # every peer sees the others before any step
        losses = mutual_losses(logits, batch.labels, temperature)
        aggregates = [peer.scheduler.before_backward_pass(epoch, batch_id, steps, loss.overall,
                                                          optimizer=peer.optimizer, return_loss_components=True)
                      for peer, loss in zip(peers, losses, strict=True)]
        if (batch_id + 1) % check_every == 0 or batch_id + 1 == steps:
            for agg in aggregates:
                check_finite(agg.overall_loss, epoch, batch_id)
        for peer, output, loss, agg in zip(peers, logits, losses, aggregates, strict=True):
            optimizer_step(agg.overall_loss, peer.optimizer, peer.scheduler, epoch, batch_id, steps, peer.grad_scaler)
            top1, top5 = topk_correct(output.detach(), batch.labels)
            components = {c.name: c.value for c in agg.loss_components}
            peer.meter.add(len(batch.labels), **{"Overall Loss": agg.overall_loss, "Objective Loss": loss.objective,
                                                 "Mutual Loss": loss.mutual}, **components,
                           top1_correct=top1, top5_correct=top5)
        next_batch = batch_id + 1
        if stop:
            break
    return next_batch, time.perf_counter() - began


class MutualRun:
    def __init__(self, settings: RunSpec, batch_hook_factory: Callable | None = None):
        self.s = settings
        self.device = torch.device(settings.runtime.device)
        self.batch_hook_factory = batch_hook_factory
        self.logger = None

    # --- set-up -------------------------------------------------------------------------------------------
    def setup(self):
        s = self.s
        temperature = DEFAULT_MUTUAL_TEMPERATURE if s.mutual.temperature is None else s.mutual.temperature
        self.archs, self.temperature = check_peers(s.mutual.peers, temperature)
        ensure_writable_dir(s.runtime.out_dir)
        runtime = select_runtime(s.runtime.backend)
        _, sched_dict = mutual_spec(runtime.read_schedule(s.schedule.file) if s.schedule.file else None)
        self.sched_dict = sched_dict
        resume = self._check_resume(load_checkpoint_file(s.resume.checkpoint)) if s.resume.checkpoint else None
        run_state = resume.plugin_state.get("run", {}) if resume is not None else {}
        self.seed = s.data.seed if s.data.seed is not None else run_state.get("seed", random.randrange(2**31))
        seed_everything(self.seed, s.runtime.deterministic)
        set_cpu_threads(s.runtime.threads)
        data = load_run_data(s, self.seed)
        self.test_set, self.classes, self.train_hash = data.test, data.classes, data.train_hash
        self.dataset = data.dataset
        self.normalization, self.normalization_note = group_normalization(s, self.archs, resume, data)
        self.train_loader, self.valid_loader = run_loaders(s, data, self.seed, self.device, self.normalization)
        models = [create_model(arch, dataset=data.dataset, classes=data.classes, normalization=self.normalization)
                  .to(self.device) for arch in self.archs]  # in order: seeded initial weights
        self.peers = []
        for index, (arch, label, model) in enumerate(zip(self.archs, peer_labels(self.archs), models, strict=True)):
            if hasattr(model, "training_criterion"):
                raise KDPluginError(f"{arch} trains with its own multi-branch loss; "
                                    "it cannot be a mutual-learning peer")
            accelerate_model(model, self.device, s.runtime.channels_last, s.runtime.amp, s.runtime.compile)
            optimizer = build_optimizer(model, s)
            scheduler = build_schedule(model, optimizer, s, sched_dict, runtime)
            if distillation_policies(scheduler):
                raise KDPluginError(f"{s.schedule.file}: mutual learning does not combine with a KD teacher extension")
            self.peers.append(Peer(index, label, arch, model, optimizer, scheduler,
                                   grad_scaler(s.runtime.amp, self.device)))
        self.start_epoch, self.start_batch = 0, 0
        self.identity, self.accepted_changes, self.resume_note = self.experiment_identity(), [], None
        if resume is not None:
            self._resume(resume)
        self.name = s.runtime.name or "mutual"
        self.run_dir = create_run_dir(s.runtime.out_dir, self.name)
        self.logger = make_logger(self.run_dir, self.name, s.runtime.verbose)
        copy_configs(self.run_dir, [s.schedule.file])
        self.csv = CsvLog(os.path.join(self.run_dir, "training.csv"))
        self.tensorboard = tensorboard_writer(self.run_dir)
        return self

    def _check_resume(self, resume):
        group = resume.plugin_state.get("mutual")
        if not group:
            raise KDPluginError(f"{resume.path}: a single-model checkpoint ({resume.arch or 'no arch'}), not a "
                                f"mutual-learning one; resume it without --mutual")
        if list(group["peers"]) != self.archs:
            raise KDPluginError(f"{resume.path}: checkpoint holds peers {' '.join(group['peers'])}, this run has "
                                f"{' '.join(self.archs)}")
        states = group.get("states")
        if not isinstance(states, list) or len(states) != len(self.archs):
            raise KDPluginError(f"{resume.path}: the checkpoint's mutual-learning state is damaged (it must hold one "
                                f"state per peer); resume from another checkpoint")
        return resume

    def _resume(self, resume):
        s, states = self.s, resume.plugin_state["mutual"]["states"]
        for peer in self.peers:
            prefix = f"{peer.index}."
            weights = {k[len(prefix):]: v for k, v in resume.state_dict.items() if k.startswith(prefix)}
            load_weights(peer.model, Checkpoint(resume.path, weights, peer.arch))
        if s.resume.reset_optimizer:
            return
        self.resume_note = uncompared_note(resume.plugin_state)
        self.accepted_changes = check_resume(s.resume.checkpoint, resume.plugin_state, self.identity,
                                             {**self.run_identity(), "temperature": self.temperature},
                                             s.resume.accept_changes)
        for peer, state in zip(self.peers, states, strict=True):  # one state per peer: _check_resume
            load_optimizer_state(peer.optimizer, state["optimizer_state_dict"], s.resume.checkpoint,
                                 f" of {peer.label}")
            peer.scheduler.load_state_dict(state["compression_sched"])
            if state["best_top1"] is not None:
                peer.best = {"top1": float(state["best_top1"]), "epoch": int(state["best_epoch"])}
                peer.best_state = state["best_state_dict"]
        restore_rng(resume.plugin_state["rng"])
        resume_batch = resume.plugin_state.get("resume_batch")
        if resume_batch is not None:
            self.start_epoch, self.start_batch = resume.epoch, int(resume_batch)
            for peer, state in zip(self.peers, states, strict=True):
                peer.meter.load_state_dict(state["meter"])
        else:
            self.start_epoch = resume.epoch + 1

    # --- checkpoints --------------------------------------------------------------------------------------
    def run_identity(self):
        """What a resumed run must share with the checkpoint's to continue it exactly (data order included)."""
        return {"seed": self.seed, "batch_size": self.s.data.batch_size, "augment": self.s.data.augment,
                "num_train": len(self.train_loader.image_set), "train_data_hash": self.train_hash,
                "normalization": self.normalization.describe(), "dataset": self.dataset}

    def experiment_identity(self):
        """The group's identity, compared on resume as a single-model run's is: every peer has the same optimizer
        settings and schedule, so the first peer's stand for all."""
        return {**experiment_identity(self.run_identity(), self.peers[0].optimizer, [], self.sched_dict, self.s),
                "peers": " ".join(self.archs), "temperature": self.temperature}

    def save(self, epoch, resume_batch=None):
        """The group checkpoint: every peer's weights (keys ``{peer index}.{name}``) and, under ``kd_plugin``,
        everything else an exact resume needs."""
        for peer in self.peers:
            bad = next((n for n, t in peer.model.state_dict().items() if t.is_floating_point() and
                        not bool(torch.isfinite(t).all())), None)
            if bad is not None:  # never replace the last good checkpoint with one that cannot be loaded
                raise NonFiniteLoss(f"weights of {peer.label} {bad} became NaN or Inf in epoch {epoch}; stopped "
                                    f"without saving (the last good and best checkpoints are untouched)")
        state = {"run": {**self.run_identity(), "temperature": self.temperature, "data": self.test_set.source,
                         "epochs": self.s.schedule.epochs}, "identity": self.identity,
                 "spec": self.s.record(self.run_dir), "rng": capture_rng(), "resume_batch": resume_batch,
                 "mutual": {"peers": self.archs, "temperature": self.temperature,
                            "states": [peer.state() for peer in self.peers]}}
        group = set_normalization(torch.nn.ModuleList([peer.model for peer in self.peers]), self.normalization)
        path, _ = checkpoint_paths(self.run_dir, self.name)
        return write_checkpoint(path, checkpoint_content(epoch, None, group, plugin_state=state))

    def peer_best_path(self, peer):
        return os.path.join(self.run_dir, f"{self.name}_{peer.label}_best.pth.tar")

    def save_peer_best(self, peer):
        """PEER's best epoch as an ordinary single-model checkpoint (weights and arch; no optimizer state)."""
        extras = {"current_top1": peer.best["top1"], "best_top1": peer.best["top1"], "best_epoch": peer.best["epoch"]}
        origin = {"mutual_peer": {"peers": self.archs, "index": peer.index, "temperature": self.temperature}}
        content = checkpoint_content(peer.best["epoch"], peer.arch, peer.model, extras=extras, plugin_state=origin,
                                     state_dict=peer.best_state)
        return write_checkpoint(self.peer_best_path(peer), content)

    # --- the loop -----------------------------------------------------------------------------------------
    def fit(self):
        s, log = self.s, self.logger
        log.info("Mutual learning of %s (T=%g) on %d images (validation %d, test %d), epochs %d..%d, batch %d, "
                 "%s lr %g, seed %d", ", ".join(p.label for p in self.peers), self.temperature,
                 self.train_loader.num_images, self.valid_loader.num_images if self.valid_loader else 0,
                 len(self.test_set), self.start_epoch, s.schedule.epochs - 1, s.data.batch_size, s.optimizer.name,
                 self.peers[0].optimizer.param_groups[0]["lr"], self.seed)
        log.info("Input normalization: %s, %s", self.normalization.describe(), self.normalization_note)
        log.info("Teacher-output cache: off (mutual learning: every peer trains, so its outputs change every step)")
        if self.resume_note:
            log.info("Resumed: %s", self.resume_note)
        if self.accepted_changes:
            log.info("Resumed with changes accepted by --resume-accept-changes: %s", ", ".join(self.accepted_changes))
        batch_hook = self.batch_hook_factory(self) if self.batch_hook_factory else None
        stop = StopRequest()
        with stop_on_signals(stop):
            for epoch in range(self.start_epoch, s.schedule.epochs):
                path = self._run_epoch(epoch, stop, batch_hook)
                if stop:  # the signal came after the epoch's last step: its checkpoint is the resumable one
                    raise interruption(stop, f"the end of epoch {epoch}", path, s.command)
        return self.finish()

    def _run_epoch(self, epoch, stop, batch_hook):
        s = self.s
        lrs = [peer.optimizer.param_groups[0]["lr"] for peer in self.peers]
        for peer in self.peers:
            peer.scheduler.on_epoch_begin(epoch, peer.optimizer)
        next_batch, seconds = train_mutual_epoch(
            self.peers, self.train_loader, epoch, self.temperature, start_batch=self.start_batch, stop=stop,
            batch_hook=batch_hook, progress=s.runtime.progress, check_every=1 if self.device.type == "cpu" else 50)
        images = (next_batch - self.start_batch) * s.data.batch_size
        self.start_batch = 0
        if next_batch < len(self.train_loader):
            path = self.save(epoch, resume_batch=next_batch)
            raise interruption(stop, f"epoch {epoch}, batch {next_batch}", path, s.command)
        row, improved = {"epoch": epoch}, []
        for peer, lr in zip(self.peers, lrs, strict=True):
            train_stats = peer.meter.results()
            peer.meter = EpochMeter()
            valid = evaluate_loader(peer.model, self.valid_loader) if self.valid_loader else None
            score = valid["top1"] if valid else train_stats["top1"]
            peer.scheduler.on_epoch_end(epoch, peer.optimizer,
                                        metrics={"min": valid["Loss"] if valid else train_stats["Objective Loss"],
                                                 "max": score})
            if score > peer.best["top1"]:
                peer.remember_best(score, epoch)
                improved.append(peer)
            row.update({f"{peer.label} lr": lr, **{f"{peer.label} train {k}": v for k, v in train_stats.items()}})
            if valid:
                row.update({f"{peer.label} valid {k}": valid[k] for k in ("Loss", "top1", "top5")})
        path = self.save(epoch)
        for peer in improved:
            self.save_peer_best(peer)
        row.update({"images/s": min(images, self.train_loader.num_images) / max(seconds, 1e-9), "seconds": seconds})
        self.csv.append(row)
        write_scalars(self.tensorboard, row, epoch)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        best = f" (best: {', '.join(p.label for p in improved)})" if improved else ""
        self.logger.info("Epoch %d: %s%s", epoch, shown, best)
        return path

    def finish(self):
        """Write every peer's best checkpoint, evaluate it on the test split, and write summary.json."""
        test_loader = TensorLoader(self.test_set, 1024, "n", device=self.device, normalization=self.normalization)
        results = []
        for peer in self.peers:
            path = self.save_peer_best(peer)  # again: a resumed run's directory gets every peer's best too
            load_weights(peer.model, load_checkpoint_file(path))
            test = evaluate_loader(peer.model, test_loader)
            results.append({"label": peer.label, "arch": peer.arch, "checkpoint": path,
                            "best_epoch": peer.best["epoch"], "best_valid_top1": peer.best["top1"],
                            "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["Loss"],
                            "test_per_class": per_class_accuracy(test["confusion"], self.classes)})
            self.logger.info("Test %s (%s): top1 %.2f top5 %.2f loss %.4f on %d images", peer.label,
                             os.path.basename(path), test["top1"], test["top5"], test["Loss"], len(self.test_set))
        summary = {"mutual": {"peers": self.archs, "temperature": self.temperature}, "run_dir": self.run_dir,
                   "checkpoint": checkpoint_paths(self.run_dir, self.name)[0], "peers": results,
                   "best_chosen_on": best_chosen_on(self.valid_loader), "test_images": len(self.test_set),
                   "rows": self.csv.rows, "seed": self.seed, "spec": self.s.record(self.run_dir)}
        write_json(os.path.join(self.run_dir, "summary.json"), summary)
        close_logger(self.logger)
        return summary


def run_mutual_learning(settings: RunSpec, batch_hook_factory: Callable | None = None) -> dict:
    run = MutualRun(settings, batch_hook_factory).setup()
    try:
        return run.fit()
    finally:
        if run.logger is not None:
            close_logger(run.logger)


def group_normalization(settings, archs, resume=None, data=None):
    """(Normalization, why) every peer is fed: as a single-model run resolves it (``trainer.run_normalization``),
    with the peers' registered defaults required to agree when nothing else decides."""
    defaults = {default_cfg(arch)["normalization"] for arch in archs}
    if settings.data.normalization is None and resume is None and len(defaults) > 1:
        raise KDPluginError(f"the peers {' '.join(archs)} expect different input normalizations; choose one for the "
                            f"group with --normalization")
    return run_normalization(settings, archs[0], resume, data)

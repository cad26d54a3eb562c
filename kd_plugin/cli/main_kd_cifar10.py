"""``main_KD_CIFAR10``: the original experiment's positional command line, run by kd-plugin's engine.

How each form maps onto the engine (a ``RunSpec`` + ``run_training``; no second training loop):

- CHECKPOINT files hold plain state_dicts, like the original's ``.pt``; kd-plugin and Distiller checkpoints are
  read too. Training starts from CHECKPOINT when it exists (else from a fresh network; jn from its members) and
  writes the trained weights (the engine's best-by-validation epoch) back to it as a plain state_dict. The
  engine's run directory (log, CSV, checkpoints, the generated schedule) goes under ``--out-dir``.
- BEGIN_EPOCH >= TOTAL_EPOCHS trains nothing: CHECKPOINT is evaluated if it exists, otherwise the model is
  created (avg/jn from their members, other types freshly initialised), saved there and evaluated. That is
  how AvNet is created.
- 0 < BEGIN_EPOCH < TOTAL_EPOCHS continues from CHECKPOINT (which must exist) for TOTAL-BEGIN epochs with the
  learning-rate schedule positioned at BEGIN_EPOCH: the engine's epoch k is the original's epoch BEGIN+k.
  Momentum starts afresh, as the ``.pt`` file holds weights only.
- sgd: lr 0.1, x0.1 at epochs 150 and 250, momentum 0.9, weight decay 5e-4; adam: lr 1e-3, weight decay 5e-4.
  The optimizer is built once per run (the original re-created it every epoch and lost the momentum).
- ``y ALPHA T``: loss = (1-ALPHA)*CE + ALPHA*T^2*KL, i.e. ``--kd-dw ALPHA --kd-sw 1-ALPHA`` (not the
  original's ALPHA*T^4). The teacher runs in eval mode without gradients.
- The best epoch is chosen on a validation split of the training data (``--vs``), never on the test set.
- jn training uses JointNet's own loss (``--jn-loss-weights``) and reports each branch's test accuracy
  before and after (``branch_accuracy.json`` in the run directory).
"""
import argparse
import dataclasses
import os
import sys
import tempfile

import torch
import yaml

from ..checkpoint import load_checkpoint_file, load_model
from ..data import load_split
from ..distill.losses.base import TEMPERATURE
from ..engine.distributed import is_main_process
from ..engine.settings import pick_device
from ..engine.trainer import run_training
from ..experiments.ensembles.branches import branch_accuracy, branch_table
from ..experiments.ensembles.members import ENSEMBLE_ARCHS, add_member_args, build_ensemble, members_from_args
from ..experiments.ensembles.training import JOINTNET, start_from_members, train_jointnet
from ..models import create_model, resolve_arch
from ..protocol.config import TRAINING_KEYS
from ..reporting.evaluation import evaluate_target
from ..spec import RunSpec
from ..util.errors import KDPluginError
from ..util.fileio import atomic_write, ensure_writable_dir
from ..util.normalization import add_normalization_arg
from .args import cli_entry

PROG = "main_KD_CIFAR10"
USAGE = f"""{PROG} DATA tst TYPE CHECKPOINT
       {PROG} DATA trn AUG SCHEME TOTAL_EPOCHS BEGIN_EPOCH BATCH n TYPE CHECKPOINT
       {PROG} DATA trn AUG SCHEME TOTAL_EPOCHS BEGIN_EPOCH BATCH y ALPHA T STUDENT_TYPE STUDENT_CKPT \
TEACHER_TYPE TEACHER_CKPT
       [options]"""
DESCRIPTION = """\
AUG y|n (RandomCrop(32, pad 4) + flip, or none); SCHEME sgd|adam; TOTAL_EPOCHS, BEGIN_EPOCH integers >= 0
(BEGIN_EPOCH >= TOTAL_EPOCHS trains nothing: create/evaluate); BATCH integer >= 1; ALPHA in [0, 1]; T > 0.
TYPE, any case: Resnet18/34/50/101/152, VGG6AS, VGG6AM, VGG6A, VGG6, VGG7, VGG8, VGG11, VGG13, VGG16, VGG16A,
VGG19, 5-CNN, avg (AvNet), jn (JointNet), or a kd-plugin model name. CHECKPOINT: a plain state_dict .pt
(a kd-plugin/Distiller checkpoint is read too)."""
SGD_MILESTONES = (150, 250)
KD_FLAG = {"n": False, "y": True}


class UsageError(KDPluginError):
    """Wrong argument count or value: reported with the usage text."""


@dataclasses.dataclass
class Job:
    data: str
    mode: str
    arch: str
    checkpoint: str
    augment: str = "n"
    scheme: str = "sgd"
    total: int = 0
    begin: int = 0
    batch: int = 128
    alpha: float = None
    temperature: float = None
    teacher_arch: str = None
    teacher_checkpoint: str = None
    loss_weights: dict = None

    @property
    def trains(self):
        return self.mode == "trn" and self.begin < self.total


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser():
    p = Parser(prog=PROG, usage=USAGE, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    add_member_args(p)
    p.add_argument("--jn-loss-weights", metavar="HEAD,VGG,RESNET,MIX",
                   help="weights of JointNet's CE terms when training jn (default 1,1,1,1)")
    run = p.add_argument_group("run")
    run.add_argument("-o", "--out-dir", default="logs", help="where run directories and reports go (default logs)")
    run.add_argument("-n", "--name", help="run name (default: the model's name)")
    run.add_argument("--seed", type=int, help="seed for weights, data order and augmentation")
    run.add_argument("--resume-from", metavar="PATH", help="continue an interrupted training run from its resumable "
                                                           "checkpoint (the line printed on SIGINT/SIGTERM names it)")
    run.add_argument("--vs", "--validation-split", dest="validation_split", type=float, default=0.1,
                     help="fraction of the training set held out to pick the best epoch (default 0.1)")
    add_normalization_arg(run, "of the checkpoint to evaluate")
    run.add_argument("--repeats", type=int, default=20, help="batch-1 latency repeats when evaluating (default 20)")
    run.add_argument("--cpu", action="store_true", help="use the CPU even when a GPU is present")
    run.add_argument("--gpus", help="comma-separated GPU ids (the first one is used)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


# --- the positional words -------------------------------------------------------------------------------------
def _arch(word, what="TYPE"):
    try:
        return resolve_arch(word)
    except KDPluginError as err:
        raise UsageError(f"{what}: {err}") from None


def _int(word, what, minimum):
    try:
        value = int(word)
    except ValueError:
        raise UsageError(f"{what} must be an integer >= {minimum}, got {word!r}") from None
    if value < minimum:
        raise UsageError(f"{what} must be an integer >= {minimum}, got {word!r}")
    return value


def _float(word, what, check, wanted):
    try:
        value = float(word)
    except ValueError:
        value = None
    if value is None or not check(value):
        raise UsageError(f"{what} must be {wanted}, got {word!r}")
    return value


def _choice(word, what, choices):
    if word.lower() not in choices:
        raise UsageError(f"{what} must be {' or '.join(choices)}, got {word!r}")
    return word.lower()


def parse_job(words):
    """The Job described by the positional words, or UsageError."""
    if len(words) < 2:
        raise UsageError(f"expected DATA and a mode (tst or trn), got {len(words)} argument(s)")
    data, mode = words[0], _choice(words[1], "mode", ("tst", "trn"))
    if mode == "tst":
        if len(words) != 4:
            raise UsageError(f"'tst' takes DATA tst TYPE CHECKPOINT (4 arguments), got {len(words)}")
        return Job(data, mode, _arch(words[2]), words[3])
    if len(words) < 8:
        raise UsageError(f"'trn' takes 10 arguments (n) or 14 (y), got {len(words)}")
    kd = KD_FLAG[_choice(words[7], "the KD flag (8th argument)", tuple(KD_FLAG))]
    expected = 14 if kd else 10
    if len(words) != expected:
        raise UsageError(f"'trn ... {words[7]}' takes {expected} arguments, got {len(words)}")
    job = Job(data, mode, None, None, augment=_choice(words[2], "AUG", ("y", "n")),
              scheme=_choice(words[3], "SCHEME", ("sgd", "adam")), total=_int(words[4], "TOTAL_EPOCHS", 0),
              begin=_int(words[5], "BEGIN_EPOCH", 0), batch=_int(words[6], "BATCH", 1))
    if kd:
        job.alpha = _float(words[8], "ALPHA", lambda v: 0 <= v <= 1, "a number in [0, 1]")
        job.temperature = _float(words[9], "T", *TEMPERATURE)
        job.arch, job.checkpoint = _arch(words[10], "STUDENT_TYPE"), words[11]
        job.teacher_arch, job.teacher_checkpoint = _arch(words[12], "TEACHER_TYPE"), words[13]
    else:
        job.arch, job.checkpoint = _arch(words[8]), words[9]
    if job.trains and job.arch == "avnet_cifar":
        raise UsageError("avg (AvNet) has fixed weights and is never trained; create it with BEGIN_EPOCH >= "
                         "TOTAL_EPOCHS")
    return job


def jn_loss_weights(text, job):
    if text is None:
        return None
    if job.arch != JOINTNET or not job.trains:
        raise UsageError("--jn-loss-weights applies only when training jn")
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise UsageError(f"--jn-loss-weights takes four comma-separated numbers HEAD,VGG,RESNET,MIX, got {text!r}")
    head, vgg, resnet, mix = values
    return {"head_ce_weight": head, "vgg_ce_weight": vgg, "resnet_ce_weight": resnet, "mix_ce_weight": mix}


# --- the learning-rate schedule -------------------------------------------------------------------------------
def original_lr(scheme, begin):
    """(lr at epoch BEGIN, the remaining milestones counted from BEGIN) of the original's scheme."""
    if scheme == "adam":
        return 1e-3, []
    passed = sum(m <= begin for m in SGD_MILESTONES)
    return 10.0 ** -(1 + passed), [m - begin for m in SGD_MILESTONES if m > begin]


def generated_schedule(settings, milestones, loss_weights):
    """A schedule file's content describing this run (a ``training:`` section, LR steps, JointNet loss weights)."""
    flat = settings.flat()
    training = {key: flat[key] for key in TRAINING_KEYS if flat[key] is not None}
    sched, policies = {"training": training}, []
    if milestones:
        sched["lr_schedulers"] = {"original_steps": {"class": "MultiStepLR", "milestones": milestones, "gamma": 0.1}}
        policies.append({"lr_scheduler": {"instance_name": "original_steps"}, "starting_epoch": 0,
                         "ending_epoch": settings.schedule.epochs, "frequency": 1})
    if loss_weights:
        sched["extensions"] = {"joint_loss": {"class": "JointNetLossWeights", **loss_weights}}
    sched["policies"] = policies
    return sched


def write_schedule(path, sched, argv):
    header = f"# Generated by {PROG} for: {' '.join(argv)}\n"
    return atomic_write(path, lambda fh: fh.write(header + yaml.safe_dump(sched, sort_keys=False)), mode="w")


# --- the three things a command line can do ---------------------------------------------------------------------
def save_state_dict(state_dict, path):
    """The original's ``.pt``: a plain state_dict, written atomically."""
    return atomic_write(path, lambda fh: torch.save(state_dict, fh))


def evaluate(job, opts, device):
    """Test-split model card (accuracy, per class, size, latency); for avg/jn also each branch's accuracy."""
    evaluate_target(job.checkpoint, job.data, job.arch, opts.out_dir, device, opts.repeats,
                    normalization=opts.normalization)
    if job.arch in ENSEMBLE_ARCHS:
        model = load_model(job.checkpoint, job.arch, opts.normalization)[0].to(device)
        print("test top-1 (%) per branch:\n" + branch_table({"top1": branch_accuracy(model, load_split(
            job.data, "test"), device)}))
    return 0


def create_or_evaluate(job, opts, device):
    if os.path.exists(job.checkpoint):
        print(f"{job.checkpoint} exists: evaluating it (BEGIN_EPOCH >= TOTAL_EPOCHS, nothing trained or created)")
    else:
        model = build_ensemble(job.arch, members_from_args(opts)) if job.arch in ENSEMBLE_ARCHS \
            else create_model(job.arch)
        save_state_dict(model.state_dict(), job.checkpoint)
        print(f"created {job.arch} and saved its state_dict to {job.checkpoint}")
    return evaluate(job, opts, device)


def train(job, opts, device, argv):
    exists = os.path.exists(job.checkpoint)
    if job.begin > 0 and not exists:
        raise KDPluginError(f"BEGIN_EPOCH {job.begin} continues from {job.checkpoint}, which does not exist")
    if job.teacher_checkpoint and not os.path.isfile(job.teacher_checkpoint):
        raise KDPluginError(f"teacher checkpoint {job.teacher_checkpoint} not found (create an avg teacher with "
                            f"BEGIN_EPOCH >= TOTAL_EPOCHS)")
    ensure_writable_dir(os.path.dirname(os.path.abspath(job.checkpoint)))
    lr, milestones = original_lr(job.scheme, job.begin)
    kd = {} if job.alpha is None else {"kd_teacher": job.teacher_arch, "kd_resume": job.teacher_checkpoint,
                                       "kd_temperature": job.temperature, "kd_distill_wt": job.alpha,
                                       "kd_student_wt": 1.0 - job.alpha}
    with tempfile.TemporaryDirectory(prefix=".main_kd_cifar10-", dir=ensure_writable_dir(opts.out_dir)) as tmp:
        start = job.checkpoint if exists else None
        if start is None and job.arch == JOINTNET:
            start = start_from_members(JOINTNET, members_from_args(opts), tmp)
        settings = RunSpec.from_flags(
            data=job.data, arch=job.arch, epochs=job.total - job.begin, batch_size=job.batch, lr=lr, momentum=0.9,
            weight_decay=5e-4, optimizer=job.scheme, augment=job.augment, seed=opts.seed,
            validation_split=opts.validation_split, out_dir=opts.out_dir, name=opts.name,
            compress=os.path.join(tmp, "main_kd_cifar10_schedule.yaml"), device=device, progress=opts.progress,
            command=argv, **({"resume_from": opts.resume_from} if opts.resume_from else {"load_weights_from": start}),
            **kd)
        write_schedule(settings.schedule.file, generated_schedule(settings, milestones, job.loss_weights), argv)
        summary = train_jointnet(settings) if job.arch == JOINTNET else run_training(settings)
    if is_main_process():  # under torchrun, rank 0 alone writes files
        save_state_dict(load_checkpoint_file(summary["checkpoint"]).state_dict, job.checkpoint)
    print(f"test top-1 {summary['test_top1']:.2f}% on {summary['test_images']} images; weights of "
          f"{os.path.basename(summary['checkpoint'])} saved to {job.checkpoint}; log directory: {summary['run_dir']}")
    return 0


@cli_entry(PROG)
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        opts = parser.parse_intermixed_args(argv)
        job = parse_job(opts.words)
        job.loss_weights = jn_loss_weights(opts.jn_loss_weights, job)
        if opts.repeats < 1:
            raise UsageError(f"--repeats must be >= 1, got {opts.repeats}")
    except UsageError as err:
        # The original's users expect the usage text; it goes to stdout so stderr keeps its one error line.
        print(parser.format_help())
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    device = pick_device(opts.cpu, opts.gpus)
    if job.mode == "tst":
        return evaluate(job, opts, device)
    if not job.trains:
        return create_or_evaluate(job, opts, device)
    return train(job, opts, device, [PROG] + argv)


if __name__ == "__main__":
    sys.exit(main())

"""The training-run flags of Distiller's ``compress_classifier``, shared by every command that starts a run
(``compress_classifier``, ``kd-plugin train-jointnet``), and how they become a RunSpec (kd_plugin.spec).

Flags override a schedule's ``training:`` section, which overrides Distiller's defaults.
"""
from ..data import add_dataset_arg
from ..distill.losses import list_losses, parse_loss_arg
from ..distill.mutual import mutual_spec
from ..engine.settings import pick_device
from ..models import list_aliases, list_models
from ..models.ensembles import COMBINE_MODES
from ..protocol.config import read_schedule
from ..protocol.runtime import BACKENDS, DEFAULT_BACKEND, uses_distiller_components
from ..protocol.shipped import resolve_schedule
from ..spec import FLAG_FIELDS, RunSpec, flag_of
from ..util.errors import KDPluginError
from ..util.normalization import add_normalization_arg
from .args import str2bool_yn

# Flags whose argparse default is None so that "not given" is distinguishable from a schedule's value.
DISTILLER_DEFAULTS = {"epochs": 90, "batch_size": 256, "momentum": 0.9, "weight_decay": 1e-4, "optimizer": "sgd",
                      "augment": "y", "validation_split": 0.1}
TRAINING_FLAG_NAMES = ("arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer", "augment",
                       "validation_split", "dataset")


def add_training_args(p):
    """Distiller's compress_classifier flags that describe a training run (everything but -e/--summary)."""
    p.add_argument("data", metavar="DATASET_DIR", help="the dataset's files: CIFAR-10 python batches, CIFAR-100 "
                                                       "python files, or an image folder (or a dir containing them)")
    p.add_argument("-a", "--arch", default=None, help=f"model name ({', '.join(list_models())}; aliases: "
                                                      f"{', '.join(sorted(list_aliases()))})")
    add_dataset_arg(p)
    p.add_argument("-j", "--workers", type=int, default=4, help="accepted for Distiller compatibility; data is "
                                                                "held in memory as tensors, so no loader workers")
    p.add_argument("--epochs", type=int, default=None, help="number of total epochs (default 90)")
    p.add_argument("-b", "--batch-size", type=int, default=None, help="mini-batch size (default 256)")
    p.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=None,
                   help="initial learning rate (default 0.1 for sgd, 1e-3 for adam)")
    p.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=None,
                   help="weight decay (default 1e-4; the original used 5e-4)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None, help="optimizer (default sgd)")
    p.add_argument("--augment", type=str2bool_yn, default=None,
                   help="y: RandomCrop(32, pad 4) + flip, n: none (default y)")
    p.add_argument("-p", "--print-freq", type=int, default=10, help="print frequency (batches)")
    p.add_argument("--compress", metavar="SCHEDULE", help="YAML compression schedule")
    p.add_argument("--seed", type=int, default=None, help="seed for weights, data order and augmentation")
    p.add_argument("--det", "--deterministic", dest="deterministic", action="store_true",
                   help="deterministic algorithms")
    p.add_argument("--gpus", default=None, help="comma-separated GPU ids (the first one is used)")
    p.add_argument("--cpu", action="store_true", help="use the CPU even when a GPU is present")
    p.add_argument("--vs", "--validation-split", dest="validation_split", type=float, default=None,
                   help="fraction of the training set held out for validation (default 0.1)")
    p.add_argument("--resume-from", dest="resume_from", metavar="PATH", help="checkpoint to resume from")
    p.add_argument("--exp-load-weights-from", dest="load_weights_from", metavar="PATH",
                   help="load weights only, start from epoch 0")
    add_normalization_arg(p)
    p.add_argument("--reset-optimizer", action="store_true",
                   help="with --resume-from: take the weights, restart epochs, optimizer and schedule")
    p.add_argument("--resume-accept-changes", action="store_true",
                   help="with --resume-from: continue even though teacher, T, loss, optimizer, schedule or data "
                        "order differ from the checkpoint's (each change is logged)")
    p.add_argument("-n", "--name", default=None, help="experiment name (log directory prefix; a name, not a path)")
    p.add_argument("-o", "--out-dir", dest="out_dir", default="logs", help="where log directories are created")
    p.add_argument("--download", action="store_true",
                   help="download the dataset (CIFAR-10 or CIFAR-100) into DATASET_DIR first (needs internet)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help="whose scheduler, schedule parser and policy classes drive the run: kd-plugin's own "
                        "(builtin) or IntelLabs Distiller's (distiller); auto: Distiller when importable")
    speed = p.add_argument_group("Speed (kd-plugin additions)")
    speed.add_argument("--amp", choices=("bf16", "fp16"), default=None,
                       help="autocast precision for student and teacher (default: fp32)")
    speed.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    speed.add_argument("--compile", action="store_true", help="torch.compile the student's forward")
    speed.add_argument("--sync-bn", action="store_true",
                       help="under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm; GPUs only)")
    speed.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, one per core)")
    speed.add_argument("--teacher-cache", default="auto", metavar="auto|off|DIR",
                       help="exact per-(image, view) cache of the KD teacher's outputs: auto keeps it in "
                            "OUT_DIR/teacher_cache, DIR elsewhere (share it across a sweep), off disables it")
    speed.add_argument("--no-teacher-cache", dest="teacher_cache", action="store_const", const="off",
                       help="same as --teacher-cache off")
    kd = p.add_argument_group("Knowledge distillation (Distiller's flags)")
    kd.add_argument("--kd-teacher", nargs="+", metavar="ARCH",
                    help="teacher model name; several: an ensemble of them (one --kd-resume checkpoint each, in order)")
    kd.add_argument("--kd-pretrained", action="store_true", help="pretrained teacher (not available offline)")
    kd.add_argument("--kd-resume", nargs="+", metavar="PATH", help="teacher checkpoint(s), one per --kd-teacher")
    kd.add_argument("--kd-teacher-weights", nargs="+", type=float, metavar="W", default=None,
                    help="an ensemble teacher's member weights (default: equal; scaled to sum to 1)")
    kd.add_argument("--kd-teacher-combine", choices=COMBINE_MODES, default=None,
                    help="an ensemble teacher averages its members' logits (default) or their probabilities")
    kd.add_argument("--kd-temperature", "--kd-temp", dest="kd_temperature", type=float, default=None,
                    help="distillation temperature (default 1.0)")
    kd.add_argument("--kd-distill-wt", "--kd-dw", dest="kd_distill_wt", type=float, default=None,
                    help="weight of the distillation loss (default 0.5)")
    kd.add_argument("--kd-student-wt", "--kd-sw", dest="kd_student_wt", type=float, default=None,
                    help="weight of the student's CE loss (default 0.5)")
    kd.add_argument("--kd-teacher-wt", "--kd-tw", dest="kd_teacher_wt", type=float, default=None,
                    help="teacher loss weight; only 0 is supported, as in Distiller")
    kd.add_argument("--kd-start-epoch", type=int, default=None,
                    help="epoch at which distillation starts (default 0; with KD declared in the schedule, moves "
                         "that policy's starting_epoch)")
    kd.add_argument("--kd-random-teacher", action="store_true",
                    help="allow a teacher without weights (no --kd-resume / teacher_checkpoint): it keeps its "
                         "random initialisation; without this flag such a run is refused")
    kd.add_argument("--kd-loss", metavar="NAME", default=None,
                    help=f"distillation loss: {', '.join(list_losses())} (default: the schedule's, else kd)")
    kd.add_argument("--kd-loss-arg", dest="kd_loss_args", action="append", metavar="NAME=VALUE",
                    help="an argument of the loss (repeatable), e.g. beta=8 for dkd")
    kd.add_argument("--kd-logit-standardize", action="store_const", const=True, default=None,
                    help="z-score student and teacher logits before the temperature (composes with kd and dkd)")
    mutual = p.add_argument_group("Online distillation (Deep Mutual Learning)")
    mutual.add_argument("--mutual", nargs="+", metavar="ARCH", default=None,
                        help="train two or more peers together, each distilling from the others (instead of -a)")
    mutual.add_argument("--mutual-temperature", "--mutual-temp", dest="mutual_temperature", type=float, default=None,
                        help="softmax temperature of the peers' KL terms, scaled by T^2 (default 1, as in the paper)")
    return p


def mutual_settings(args, schedule):
    """(peers, temperature) of a mutual-learning run from --mutual or the schedule's MutualLearning extension
    (flags win); (None, None) for a single-model run."""
    spec, _ = mutual_spec(schedule)
    if args.mutual is None and spec is None:
        if args.mutual_temperature is not None:
            raise KDPluginError("--mutual-temperature needs --mutual (or a MutualLearning extension in the schedule)")
        return None, None
    peers = args.mutual if args.mutual is not None else spec.peers
    temperature = args.mutual_temperature if args.mutual_temperature is not None else \
        (spec.temperature if spec is not None else None)
    return peers, temperature
def one_or_list(values: list | None) -> str | list | None:
    """An nargs='+' flag's values as the spec keeps them: None, one name, or a list of several."""
    return values[0] if values is not None and len(values) == 1 else values


def settings_from_args(args) -> RunSpec:
    """The run spec: flags over the schedule's training section over Distiller's defaults."""
    args.compress = resolve_schedule(args.compress)
    schedule = read_schedule(args.compress, uses_distiller_components(args.backend)) if args.compress else {}
    training = schedule.get("training") or {}
    values = {}
    for name in TRAINING_FLAG_NAMES:
        flag = getattr(args, name)
        values[name] = flag if flag is not None else training.get(name, DISTILLER_DEFAULTS.get(name))
    mutual, mutual_temperature = mutual_settings(args, schedule)
    if mutual is not None:  # the peers replace the schedule's training.arch, as flags override the schedule
        if args.arch is not None:
            raise KDPluginError("--mutual names the models to train; drop -a/--arch")
        values["arch"] = None
    elif values["arch"] is None:
        raise KDPluginError("no architecture: pass -a/--arch or set training.arch in the schedule")
    if args.kd_pretrained:
        raise KDPluginError("--kd-pretrained: no pretrained weights ship offline; use --kd-resume CHECKPOINT")
    flags = {dest: getattr(args, dest) for dest in FLAG_FIELDS if hasattr(args, dest)}  # a flag per spec field
    flags.update(values, device=pick_device(args.cpu, args.gpus), mutual=mutual, mutual_temperature=mutual_temperature,
                 kd_teacher=one_or_list(args.kd_teacher), kd_resume=one_or_list(args.kd_resume),
                 kd_loss_args=dict(parse_loss_arg(a, "--kd-loss-arg") for a in args.kd_loss_args)
                 if args.kd_loss_args else None)
    return RunSpec.from_flags(**flags)


class RunArgs:
    """compress_classifier's flags as sweeps and reproduce use them (passed down, so the experiments layer never
    parses a command line itself): which spec fields some flags set, and the spec a whole command line asks for."""

    PLACEHOLDER = "DATASET_DIR"

    @staticmethod
    def _parse(argv):
        from .compress_classifier import build_parser

        return build_parser(prog="--extra-args").parse_args(argv)

    @classmethod
    def fields_set(cls, argv: list[str]) -> dict[str, str]:
        """{spec field's flag destination: the flag} of every field ARGV (options only) sets; KDPluginError for
        anything compress_classifier would not accept, or an option that is not a training setting (-e ...)."""
        given, bare = vars(cls._parse([cls.PLACEHOLDER, *argv])), vars(cls._parse([cls.PLACEHOLDER]))
        changed = {dest for dest in given if given[dest] != bare[dest]}
        if changed & {"cpu", "gpus"}:
            changed = (changed - {"cpu", "gpus"}) | {"device"}
        stray = sorted(changed - set(FLAG_FIELDS) - {"workers"})  # -j/--workers: accepted, means nothing here
        if stray:
            raise KDPluginError(f"--extra-args: {', '.join(cls._flag(dest) for dest in stray)} "
                                f"{'is not a training option' if len(stray) == 1 else 'are not training options'}; "
                                f"every run this command starts trains")
        return {dest: flag_of(*FLAG_FIELDS[dest]) for dest in sorted(changed) if dest in FLAG_FIELDS}

    @classmethod
    def _flag(cls, dest: str) -> str:
        from .compress_classifier import build_parser

        return next((a.option_strings[-1] for a in build_parser()._actions if a.dest == dest and a.option_strings),
                    dest)

    @classmethod
    def spec(cls, argv: list[str]) -> RunSpec:
        """The spec of the compress_classifier command line ARGV (flags over its schedule's training section)."""
        from .compress_classifier import build_parser

        return settings_from_args(build_parser().parse_args(argv))

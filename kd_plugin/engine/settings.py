"""What a training run is asked to do, with the range checks every entry point shares."""
import math
import os
from dataclasses import asdict, dataclass, fields

from ..data import get_dataset
from ..distill.losses import check_temperature, create_loss
from ..distill.teacher import teacher_members
from ..models.ensembles import COMBINE_MODES
from ..protocol.config import MAX_POLICY_EPOCH
from ..protocol.runtime import BACKENDS, DEFAULT_BACKEND
from ..util.errors import KDPluginError
from ..util.normalization import parse_normalization
from .rundir import check_run_name

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3}
AMP_CHOICES = (None, "bf16", "fp16")
MAX_EPOCHS = MAX_POLICY_EPOCH  # far beyond any real schedule; 1e9 epochs is refused instead of exhausting memory


@dataclass
class RunSettings:
    data: str
    arch: str
    epochs: int = 1
    batch_size: int = 256
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    augment: str = "y"
    seed: int | None = None
    deterministic: bool = False
    validation_split: float = 0.1
    out_dir: str = "logs"
    name: str | None = None
    compress: str | None = None
    resume_from: str | None = None
    load_weights_from: str | None = None
    reset_optimizer: bool = False
    resume_accept_changes: bool = False  # resume even where the experiment's identity changed (logged)
    device: str = "cpu"
    print_freq: int = 10
    kd_teacher: str | None = None  # a list of several: an ensemble teacher (distill.teacher.build_teacher)
    kd_resume: str | None = None  # one checkpoint per teacher architecture, in the same order
    kd_teacher_weights: list | None = None  # an ensemble's member weights (None: equal)
    kd_teacher_combine: str | None = None  # an ensemble averages 'logits' (None: the default) or 'probs'
    kd_temperature: float | None = None
    kd_distill_wt: float | None = None
    kd_student_wt: float | None = None
    kd_teacher_wt: float | None = None
    kd_start_epoch: int | None = None  # None: the flag-declared policy starts at 0, a schedule's KD keeps its own start
    kd_loss: str | None = None  # None: the schedule's KD loss, else kd
    kd_loss_args: dict | None = None  # the loss's own arguments (--kd-loss-arg NAME=VALUE), over the schedule's
    kd_logit_standardize: bool | None = None
    mutual: list | None = None  # two or more peer archs trained together by Deep Mutual Learning (engine.mutual)
    mutual_temperature: float | None = None  # None: distill.mutual's default (1)
    kd_random_teacher: bool = False  # a teacher without weights must be asked for (issue 12)
    teacher_cache: str = "auto"  # 'auto' (<out_dir>/teacher_cache), 'off', or a directory
    amp: str | None = None  # None (fp32), 'bf16' or 'fp16' autocast for student and teacher
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None  # CPU intra-op threads; None keeps torch's default
    backend: str = DEFAULT_BACKEND  # whose protocol classes: builtin, distiller or auto (protocol.runtime)
    progress: bool = True
    verbose: bool = True
    download: bool = False
    command: list | None = None  # the command line that started the run (program first), for the resume hint
    sync_bn: bool = False  # torchrun runs: SyncBatchNorm (batch statistics over all ranks; GPUs only)
    normalization: str | None = None  # the student's input normalization (name or mean,std); None: run_normalization
    dataset: str | None = None  # a registered dataset (kd_plugin.data.list_datasets); None: inferred (resolve_dataset)

    def __post_init__(self):
        self.optimizer = (self.optimizer or "sgd").lower()
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, 0.1)
        self.validate()

    def validate(self):
        if self.dataset is not None:
            get_dataset(self.dataset)
        _require(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, "
                                               f"got {self.optimizer!r}")
        _require(self.augment in ("y", "n"), f"augmentation must be 'y' or 'n', got {self.augment!r}")
        _require(_int(self.epochs) and self.epochs >= 1, f"--epochs must be an integer >= 1, got {self.epochs!r}")
        _require(self.epochs <= MAX_EPOCHS, f"--epochs {self.epochs} exceeds the maximum of {MAX_EPOCHS}")
        _require(_int(self.batch_size) and self.batch_size >= 1,
                 f"--batch-size must be an integer >= 1, got {self.batch_size!r}")
        _require(_num(self.lr) and self.lr > 0, f"--lr must be a number > 0, got {self.lr!r}")
        _require(_num(self.momentum) and 0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum!r}")
        _require(_num(self.weight_decay) and self.weight_decay >= 0, f"--wd must be >= 0, got {self.weight_decay!r}")
        _require(_num(self.validation_split) and 0 <= self.validation_split < 1,
                 f"--validation-split must be in [0, 1), got {self.validation_split!r}")
        _require(self.seed is None or (_int(self.seed) and self.seed >= 0), f"--seed must be >= 0, got {self.seed!r}")
        if self.name is not None:
            check_run_name(self.name)
        _require(_int(self.print_freq) and self.print_freq >= 1, f"--print-freq must be >= 1, got {self.print_freq!r}")
        if self.kd_temperature is not None:
            check_temperature(self.kd_temperature, "--kd-temperature")
        _require(self.kd_loss_args is None or isinstance(self.kd_loss_args, dict),
                 f"kd_loss_args must be a mapping of argument names to values, got {self.kd_loss_args!r}")
        if self.kd_loss is not None or not self.compress:  # else the schedule's loss is checked with its file
            create_loss(self.kd_loss or "kd", temperature=self.kd_temperature,
                        logit_standardize=bool(self.kd_logit_standardize), **(self.kd_loss_args or {}))
        for flag, value in (("--kd-distill-wt", self.kd_distill_wt), ("--kd-student-wt", self.kd_student_wt),
                            ("--kd-teacher-wt", self.kd_teacher_wt)):
            _require(value is None or (_num(value) and value >= 0), f"{flag} must be >= 0, got {value!r}")
        if self.kd_teacher:
            teacher_members(self.kd_teacher, self.kd_resume, self.kd_teacher_weights)
        _require(self.kd_teacher_combine in (None, *COMBINE_MODES),
                 f"--kd-teacher-combine must be one of {', '.join(COMBINE_MODES)}, got {self.kd_teacher_combine!r}")
        _require(self.backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        _require(self.kd_start_epoch is None or (_int(self.kd_start_epoch) and 0 <= self.kd_start_epoch < self.epochs),
                 f"--kd-start-epoch must be in 0..{self.epochs - 1}, got {self.kd_start_epoch!r}")
        _require(self.amp in AMP_CHOICES, f"--amp must be one of bf16, fp16, got {self.amp!r}")
        _require(isinstance(self.teacher_cache, str) and self.teacher_cache != "",
                 f"--teacher-cache must be auto, off or a directory, got {self.teacher_cache!r}")
        if self.mutual is not None:
            _require(isinstance(self.mutual, list) and len(self.mutual) >= 2,
                     f"--mutual needs two or more peers, got {self.mutual!r}")
            _require(not self.kd_teacher and not self.kd_resume,
                     "--mutual trains its peers together from scratch; it does not take --kd-teacher/--kd-resume")
            _require(not self.load_weights_from,
                     "--exp-load-weights-from loads one model; it does not go with --mutual")
            given = kd_flags_given(self)
            _require(not given, f"--mutual trains its peers with mutual learning's own loss (--mutual-temperature); "
                                f"it does not take {', '.join(given)}")
        if self.mutual_temperature is not None:
            _require(_num(self.mutual_temperature) and self.mutual_temperature > 0,
                     f"--mutual-temperature must be > 0, got {self.mutual_temperature!r}")
        _require(self.threads is None or (_int(self.threads) and 1 <= self.threads <= max_threads()),
                 f"--threads must be an integer from 1 to {max_threads()} (4 x the {usable_cores()} CPU cores this "
                 f"process may use), got {self.threads!r}")
        if self.normalization is not None:
            parse_normalization(self.normalization)
        return self

    def as_dict(self):
        return asdict(self)

    @classmethod
    def field_names(cls):
        return [f.name for f in fields(cls)]


def check_device(name):
    """NAME ('cpu', 'cuda', 'cuda:N'), refused when it names a GPU this machine does not have."""
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KDPluginError(f"--device {name}: no CUDA device is available")
    return name


def pick_device(cpu=False, gpus=None):
    """Distiller's --cpu/--gpus: the first listed GPU, any GPU, or the CPU."""
    import torch

    if cpu or not torch.cuda.is_available():
        return "cpu"
    if gpus:
        try:
            return f"cuda:{int(gpus.split(',')[0])}"
        except ValueError:
            raise KDPluginError(f"--gpus must be comma-separated integers, got {gpus!r}") from None
    return "cuda"


def _require(condition, message):
    if not condition:
        raise KDPluginError(message)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def max_threads() -> int:
    """More threads than this only slow a run down; far more end in a crash inside OpenMP (segfault)."""
    return 4 * usable_cores()


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _num(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The settings that only mean something to a distillation policy, with the flag that sets each.
KD_ONLY_FLAGS = {"kd_resume": "--kd-resume", "kd_temperature": "--kd-temperature", "kd_distill_wt": "--kd-distill-wt",
                 "kd_student_wt": "--kd-student-wt", "kd_teacher_wt": "--kd-teacher-wt", "kd_loss": "--kd-loss",
                 "kd_loss_args": "--kd-loss-arg", "kd_logit_standardize": "--kd-logit-standardize",
                 "kd_start_epoch": "--kd-start-epoch", "kd_random_teacher": "--kd-random-teacher"}


def kd_flags_given(settings: "RunSettings") -> list[str]:
    """The KD-only flags SETTINGS sets (in KD_ONLY_FLAGS' order)."""
    return [flag for field, flag in KD_ONLY_FLAGS.items() if getattr(settings, field) not in (None, False, {})]

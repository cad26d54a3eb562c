"""The teacher side of distillation: building a teacher from a checkpoint, and running it for logits."""
import hashlib

import torch

from ..checkpoint import load_model
from ..data import to_model_input
from ..models import create_model
from ..models.ensembles import check_member_weights
from ..util.errors import KDPluginError
from ..util.normalization import normalization_of

class TeacherRunner:
    """The teacher's logits for a batch: eval mode, no gradients, optionally under autocast.

    Inputs come normalized for the student (INPUT_NORMALIZATION, the student's own); a teacher that expects
    another normalization gets its own view of the same images (kd_plugin.data.renormalize), a teacher
    that expects the same gets the batch as it is."""

    def __init__(self, teacher, autocast_dtype=None, input_normalization=None):
        self.teacher = teacher
        self.autocast_dtype = autocast_dtype
        self.input_normalization = input_normalization or normalization_of(teacher)
        teacher.eval()
        for param in teacher.parameters():
            param.requires_grad_(False)

    def __call__(self, inputs):
        self.teacher.eval()
        inputs = to_model_input(inputs, self.input_normalization, self.teacher)
        with torch.no_grad():
            if self.autocast_dtype is None:
                return self.teacher(inputs)
            with torch.autocast(inputs.device.type, dtype=self.autocast_dtype):
                return self.teacher(inputs).float()


def as_list(value: object) -> list:
    """None -> [], a name or path -> [it], a list or tuple -> a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def teacher_members(teacher_arch: str | list[str], teacher_checkpoint: str | list[str] | None = None,
                    weights: list | None = None, where: str = "--kd-teacher") -> list[tuple[str, str | None]]:
    """[(arch, checkpoint or None)] of a teacher given as one ARCH/CHECKPOINT or as lists of them (an ensemble),
    checked: one checkpoint per architecture (none at all: random weights), one weight per member."""
    archs, checkpoints = as_list(teacher_arch), as_list(teacher_checkpoint)
    if not archs:
        raise KDPluginError(f"{where}: no teacher architecture")
    if checkpoints and len(checkpoints) != len(archs):
        raise KDPluginError(f"{where}: {len(archs)} teacher architecture(s) but {len(checkpoints)} checkpoint(s) "
                            f"(--kd-resume / teacher_checkpoint); give one checkpoint per teacher, in the same order")
    if weights is not None:
        check_member_weights(as_list(weights), len(archs), where.replace("teacher", "teacher-weights")
                             if where.startswith("--") else f"{where} teacher_weights")
    return list(zip(archs, checkpoints or [None] * len(archs), strict=True))


def load_member(arch: str, checkpoint: str | None, random_teacher: bool, where: str,
                classes: tuple | None = None, dataset: str | None = None) -> torch.nn.Module:
    """One teacher network: from CHECKPOINT (of the student's DATASET, scoring its CLASSES when given), else random
    weights when RANDOM_TEACHER."""
    if checkpoint:
        model, loaded = load_model(checkpoint, arch, classes=classes)
        recorded = loaded.content.get("dataset")
        if recorded is not None and dataset is not None and recorded != dataset:
            raise KDPluginError(f"{checkpoint}: a {recorded} checkpoint cannot teach a {dataset} student")
        return model
    if random_teacher:
        return create_model(arch, classes=classes)
    raise KDPluginError(f"{where} {arch}: no teacher weights; pass --kd-resume CHECKPOINT (or "
                        f"teacher_checkpoint in the schedule), or --kd-random-teacher to distil from a randomly "
                        f"initialised teacher deliberately")


def load_ensemble(members: list[tuple[str, str | None]], weights: list | None = None, combine: str = "logits",
                  random_teacher: bool = False, where: str = "--kd-teacher", classes: tuple | None = None,
                  dataset: str | None = None) -> torch.nn.Module:
    """A WeightedEnsemble (``ensemble_cifar``) of MEMBERS [(arch, checkpoint)], each with its trained weights.
    Every member must expect the same input normalization and give as many classes as the others."""
    networks = [load_member(arch, checkpoint, random_teacher, where, classes, dataset) for arch, checkpoint in members]
    first = normalization_of(networks[0])
    for (arch, checkpoint), network in zip(members, networks, strict=True):
        if not normalization_of(network).same_as(first):
            raise KDPluginError(f"{where}: ensemble members must expect one input normalization; {checkpoint or arch} "
                                f"expects {normalization_of(network).describe()}, the first {first.describe()}")
    counts = [num_classes(network) for network in networks]
    if len(set(counts)) > 1:
        raise KDPluginError(f"{where}: ensemble members give different numbers of classes "
                            f"({', '.join(f'{a}: {c}' for (a, _), c in zip(members, counts, strict=True))})")
    return create_model("ensemble_cifar", member_archs=[a for a, _ in members], member_weights=weights,
                        combine=combine, members=networks, normalization=first)


@torch.no_grad()
def num_classes(network: torch.nn.Module) -> int:
    """How many classes NETWORK scores (one eval-mode forward pass of a blank image)."""
    was_training = network.training
    network.eval()
    try:
        return int(network(torch.zeros(1, 3, 32, 32, device=next(network.parameters()).device)).shape[-1])
    finally:
        network.train(was_training)


def load_teacher(teacher_arch: str | list[str], teacher_checkpoint: str | list[str] | None = None,
                 random_teacher: bool = False, where: str = "--kd-teacher", weights: list | None = None,
                 combine: str | None = None, classes: tuple | None = None,
                 dataset: str | None = None) -> torch.nn.Module:
    """A teacher network (on the CPU) from a checkpoint; freshly initialised only when asked for explicitly
    (RANDOM_TEACHER: --kd-random-teacher, or ``random_teacher: true`` in the schedule). TEACHER_ARCH and
    TEACHER_CHECKPOINT lists of more than one (or WEIGHTS / COMBINE given) make an ensemble (``load_ensemble``)."""
    members = teacher_members(teacher_arch, teacher_checkpoint, weights, where)
    if len(members) == 1 and weights is None and combine is None:
        return load_member(*members[0], random_teacher, where, classes, dataset)
    return load_ensemble(members, as_list(weights) or None, combine or "logits", random_teacher, where, classes,
                         dataset)


def build_teacher(student_model: torch.nn.Module, teacher_arch: str | list[str],
                  teacher_checkpoint: str | list[str] | None = None, random_teacher: bool = False,
                  where: str = "--kd-teacher", weights: list | None = None,
                  combine: str | None = None) -> torch.nn.Module:
    """``load_teacher`` on the student's device, for the student's classes and dataset."""
    student = getattr(student_model, "module", student_model)
    teacher = load_teacher(teacher_arch, teacher_checkpoint, random_teacher, where, weights, combine,
                           getattr(student, "classes", None), getattr(student, "dataset", None))
    return teacher.to(next(student_model.parameters()).device)


def tensor_bytes(tensor):
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def update_with_weights(digest, module):
    """Feed every weight and buffer of MODULE (names, dtypes, shapes, bytes) into a hashlib DIGEST."""
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor_bytes(tensor))
    return digest


def weights_digest(module):
    """A short sha256 of MODULE's weights and buffers: another teacher checkpoint gives another digest."""
    return update_with_weights(hashlib.sha256(), module).hexdigest()[:16]
